// Weight-only quantized Linear on row-interleaved panels: the storage and kernels behind QuantizedWeight.
//
// The block semantics are llama.cpp's Q8_0 / Q4_0 (peft4j_quant.h: the same quantizers, the same values and fp16
// scales); only the byte order differs. The N output rows are cut into P = ⌈N/16⌉ panels of 16 rows (the last one
// padded with zero-scale rows), and each panel stores its K/32 blocks one after the other:
//
//   Q8_0: per (panel, block) 512 bytes = 8 groups k4 of 64 bytes; group k4, lane r (bytes 4r .. 4r+3) holds
//         q[r, 4·k4 + i] + 128 for i = 0..3 (the int8 value offset to unsigned; padding rows hold 128)
//   Q4_0: per (panel, block) 256 bytes = 4 vectors j of 64 bytes; vector j, lane r, byte i holds q[r, 4j + i] in its
//         low nibble and q[r, 4(j+4) + i] in its high nibble (q the unsigned 4-bit value, w = (q − 8)·d; padding 8)
//   scales: per (panel, block) the 16 rows' fp16 scales, contiguous (padding 0)
//
// so one 512-bit load is 16 rows × 4 K-steps, and VPDPBUSD of that unsigned vector against a broadcast group of 4
// int8 activations accumulates one output row per int32 lane: no horizontal sums. The unsigned offset comes back
// as one int32 per (activation row, block), −o·Σx_block with o = 128 (Q8_0) or 8 (Q4_0), which starts the block's
// sum; then y += sumi·d_w·d_x in float32 for the 16 rows at once (VCVTPH2PS of the 16 scales).
//
// The product quantizes each activation row as peft4j_quant.h does (llama.cpp's Q8_0 of x), once per row. The same
// panel serves decode and prefill: a register tile of up to 8 activation rows × 16 output rows reuses each weight
// load 8 times; threads take groups of panels (all rows of x each). Paths: AVX-512 VNNI (VPDPBUSD, 16 rows per
// vector); AVX2 (VPMADDUBSW + VPMADDWD on each 8-row half of the panel; Q8_0 converts its bytes back to signed and
// uses the sign trick, as VPMADDUBSW would saturate on 255·127 pairs); scalar. All paths compute the same exact
// int32 block sums from the same quantized activations, so they differ only in float32 rounding order.
#pragma once

#include "peft4j_qdecode.h"
#include "peft4j_quant.h"

#include <type_traits>

namespace peft4j {

constexpr int64_t kPanelRows = 16;

inline int64_t panel_count(int64_t N) { return (N + kPanelRows - 1) / kPanelRows; }
// bytes of quantized values per (panel, block)
inline int64_t panel_block_bytes(int fmt) { return fmt == QF_Q8_0 ? 512 : 256; }
// bytes of quantized values of the whole panel layout
inline int64_t panel_bytes(int fmt, int64_t N, int64_t K) {
    return panel_count(N) * (K / kQuantBlock) * panel_block_bytes(fmt);
}

// The unsigned 4-bit value of weight k (0..31) of a canonical Q4_0 block (16 bytes: k and k + 16 share byte k % 16).
inline uint8_t q4_nibble(const uint8_t* blk, int k) {
    return k < 16 ? (uint8_t) (blk[k] & 0xf) : (uint8_t) (blk[k - 16] >> 4);
}

// Canonical rows n0 .. n0 + rows − 1 (qs rows of quant_row_bytes, d rows of K/32) -> panel p's bytes and scales.
inline void pack_panel(int fmt, const uint8_t* qs, const uint16_t* d, int rows, int64_t K, uint8_t* pq,
                       uint16_t* pd) {
    const int64_t nb = K / kQuantBlock, rb = quant_row_bytes(fmt, K), bb = panel_block_bytes(fmt);
    for (int64_t b = 0; b < nb; b++) {
        uint8_t* o = pq + b * bb;
        for (int r = 0; r < kPanelRows; r++) {
            pd[b * kPanelRows + r] = r < rows ? d[r * nb + b] : (uint16_t) 0;
            if (fmt == QF_Q8_0) {
                const uint8_t* src = qs + r * rb + b * kQuantBlock;
                for (int k4 = 0; k4 < 8; k4++)
                    for (int i = 0; i < 4; i++)
                        o[k4 * 64 + r * 4 + i] = r < rows ? (uint8_t) (src[4 * k4 + i] ^ 0x80u) : (uint8_t) 0x80;
            } else {
                const uint8_t* blk = qs + r * rb + b * 16;
                for (int j = 0; j < 4; j++)
                    for (int i = 0; i < 4; i++)
                        o[j * 64 + r * 4 + i] = r < rows ? (uint8_t) (q4_nibble(blk, 4 * j + i)
                                                                      | (q4_nibble(blk, 4 * (j + 4) + i) << 4))
                                                         : (uint8_t) 0x88;
            }
        }
    }
}

// Panel p's bytes and scales -> canonical rows (the first `rows` of the panel).
inline void unpack_panel(int fmt, const uint8_t* pq, const uint16_t* pd, int rows, int64_t K, uint8_t* qs,
                         uint16_t* d) {
    const int64_t nb = K / kQuantBlock, rb = quant_row_bytes(fmt, K), bb = panel_block_bytes(fmt);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t* in = pq + b * bb;
        for (int r = 0; r < rows; r++) {
            d[r * nb + b] = pd[b * kPanelRows + r];
            if (fmt == QF_Q8_0) {
                uint8_t* dst = qs + r * rb + b * kQuantBlock;
                for (int k4 = 0; k4 < 8; k4++)
                    for (int i = 0; i < 4; i++) dst[4 * k4 + i] = (uint8_t) (in[k4 * 64 + r * 4 + i] ^ 0x80u);
            } else {
                uint8_t nib[kQuantBlock];
                for (int j = 0; j < 4; j++)
                    for (int i = 0; i < 4; i++) {
                        const uint8_t v = in[j * 64 + r * 4 + i];
                        nib[4 * j + i] = (uint8_t) (v & 0xf);
                        nib[4 * (j + 4) + i] = (uint8_t) (v >> 4);
                    }
                uint8_t* dst = qs + r * rb + b * 16;
                for (int k = 0; k < 16; k++) dst[k] = (uint8_t) (nib[k] | (nib[k + 16] << 4));
            }
        }
    }
}

inline int panel_rows(int64_t p, int64_t N) { return (int) std::min<int64_t>(kPanelRows, N - p * kPanelRows); }

// canonical qs, d [N rows] <-> panels; panels in parallel
inline void pack_matrix(int fmt, const void* qs, const uint16_t* d, int64_t N, int64_t K, void* pq, uint16_t* pd,
                        int threads) {
    const int64_t nb = K / kQuantBlock, rb = quant_row_bytes(fmt, K), bb = panel_block_bytes(fmt);
    ThreadPool::instance().parallel_for(panel_count(N), threads, [&](int64_t p) {
        pack_panel(fmt, (const uint8_t*) qs + p * kPanelRows * rb, d + p * kPanelRows * nb, panel_rows(p, N), K,
                   (uint8_t*) pq + p * nb * bb, pd + p * nb * kPanelRows);
    });
}

inline void unpack_matrix(int fmt, const void* pq, const uint16_t* pd, int64_t N, int64_t K, void* qs, uint16_t* d,
                          int threads) {
    const int64_t nb = K / kQuantBlock, rb = quant_row_bytes(fmt, K), bb = panel_block_bytes(fmt);
    ThreadPool::instance().parallel_for(panel_count(N), threads, [&](int64_t p) {
        unpack_panel(fmt, (const uint8_t*) pq + p * nb * bb, pd + p * nb * kPanelRows, panel_rows(p, N), K,
                     (uint8_t*) qs + p * kPanelRows * rb, d + p * kPanelRows * nb);
    });
}

// W [N, K] (float32 / bfloat16) -> panels, quantized row by row as quantize_row_q8_0 / _q4_0 do; one panel's
// canonical rows at a time (no full canonical copy)
template <typename T>
inline void quantize_matrix_panels(int fmt, const T* W, int64_t N, int64_t K, void* pq, uint16_t* pd, int threads) {
    const int64_t nb = K / kQuantBlock, rb = quant_row_bytes(fmt, K), bb = panel_block_bytes(fmt);
    ThreadPool::instance().parallel_for(panel_count(N), threads, [&](int64_t p) {
        const int rows = panel_rows(p, N);
        std::vector<float> row((size_t) K);
        std::vector<uint8_t> qs((size_t) (rows * rb));
        std::vector<uint16_t> d((size_t) (rows * nb));
        for (int r = 0; r < rows; r++) {
            const T* w = W + (p * kPanelRows + r) * K;
            for (int64_t k = 0; k < K; k++) row[(size_t) k] = to_f32(w[k]);
            if (fmt == QF_Q8_0) quantize_row_q8_0(row.data(), K, (int8_t*) qs.data() + r * rb, d.data() + r * nb);
            else quantize_row_q4_0(row.data(), K, qs.data() + r * rb, d.data() + r * nb);
        }
        pack_panel(fmt, qs.data(), d.data(), rows, K, (uint8_t*) pq + p * nb * bb, pd + p * nb * kPanelRows);
    });
}

// panels -> W [N, K] (float32 / bfloat16, rounded once)
template <typename T>
inline void dequantize_matrix_panels(int fmt, const void* pq, const uint16_t* pd, int64_t N, int64_t K, T* W,
                                     int threads) {
    const int64_t nb = K / kQuantBlock, rb = quant_row_bytes(fmt, K), bb = panel_block_bytes(fmt);
    ThreadPool::instance().parallel_for(panel_count(N), threads, [&](int64_t p) {
        const int rows = panel_rows(p, N);
        std::vector<float> row((size_t) K);
        std::vector<uint8_t> qs((size_t) (rows * rb));
        std::vector<uint16_t> d((size_t) (rows * nb));
        unpack_panel(fmt, (const uint8_t*) pq + p * nb * bb, pd + p * nb * kPanelRows, rows, K, qs.data(), d.data());
        for (int r = 0; r < rows; r++) {
            dequantize_row(fmt, qs.data() + r * rb, d.data() + r * nb, K, row.data());
            T* w = W + (p * kPanelRows + r) * K;
            for (int64_t k = 0; k < K; k++) store_f32(w + k, row[(size_t) k]);
        }
    });
}

// ---- the product on one panel: out[r][0:16] = Σ_b Σ_k w·x for the MT activation rows r0 .. r0 + MT − 1 ----
// a.s holds −8·Σq per (row, block); Q8_0's offset 128 is 16 times that.

inline void panel_rows_scalar(int fmt, const uint8_t* pq, const uint16_t* pd, const QuantActs& a, int64_t r0, int mt,
                              float (*out)[kPanelRows]) {
    const int64_t bb = panel_block_bytes(fmt);
    for (int r = 0; r < mt; r++) {
        const int8_t* xq = a.q + (r0 + r) * a.K;
        float acc[kPanelRows] = {};
        for (int64_t b = 0; b < a.nb; b++) {
            const uint8_t* blk = pq + b * bb;
            const int32_t init = a.s[(r0 + r) * a.nb + b] * (fmt == QF_Q8_0 ? 16 : 1);
            const float dx = a.d[(r0 + r) * a.nb + b];
            for (int l = 0; l < kPanelRows; l++) {
                int32_t sumi = init;
                if (fmt == QF_Q8_0) {
                    for (int k4 = 0; k4 < 8; k4++)
                        for (int i = 0; i < 4; i++)
                            sumi += (int32_t) blk[k4 * 64 + l * 4 + i] * xq[b * kQuantBlock + 4 * k4 + i];
                } else {
                    for (int j = 0; j < 4; j++)
                        for (int i = 0; i < 4; i++) {
                            const uint8_t v = blk[j * 64 + l * 4 + i];
                            sumi += (int32_t) (v & 0xf) * xq[b * kQuantBlock + 4 * j + i]
                                    + (int32_t) (v >> 4) * xq[b * kQuantBlock + 4 * (j + 4) + i];
                        }
                }
                acc[l] = std::fma((float) sumi * f16_to_f32(pd[b * kPanelRows + l]), dx, acc[l]);
            }
        }
        for (int l = 0; l < kPanelRows; l++) out[r][l] = acc[l];
    }
}

#if defined(__x86_64__)
inline int32_t load_i32(const int8_t* p) {
    int32_t v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

// Decode (few activation rows) streams each panel from DRAM once: the hardware prefetcher alone leaves the core
// waiting on it (~26 GB/s at M = 1 on Zen 4), so every block also prefetches the lines kPanelPrefetchBytes ahead,
// in this panel or the next one (x86 prefetches never fault, also past the end of the weights), and every other
// block the line of scales as many blocks ahead (the scales are a second stream, 1/8 of Q4_0's bytes: left to the
// hardware prefetcher it cost 1-10 % of an int4 decode pass at 1 row). Prefill re-reads each panel once per row
// tile from cache, where these prefetches would only cost issue slots.
constexpr int kPrefetchRows = 4;
#ifndef PEFT4J_PANEL_PREFETCH_BYTES
#define PEFT4J_PANEL_PREFETCH_BYTES 8192
#endif
constexpr int64_t kPanelPrefetchBytes = PEFT4J_PANEL_PREFETCH_BYTES;

template <int FMT, int MT>
__attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni"))) inline void panel_rows_vnni(
        const uint8_t* pq, const uint16_t* pd, const QuantActs& a, int64_t r0, float (*out)[kPanelRows]) {
    constexpr int64_t bb = FMT == QF_Q8_0 ? 512 : 256;
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    const int8_t* xrow[MT];
    const float* drow[MT];
    const int32_t* srow[MT];
    __m512 acc[MT];
    for (int r = 0; r < MT; r++) {
        xrow[r] = a.q + (r0 + r) * a.K;
        drow[r] = a.d + (r0 + r) * a.nb;
        srow[r] = a.s + (r0 + r) * a.nb;
        acc[r] = _mm512_setzero_ps();
    }
    for (int64_t b = 0; b < a.nb; b++) {
        const uint8_t* blk = pq + b * bb;
        if (MT <= kPrefetchRows) {
            for (int64_t l = 0; l < bb; l += 64) _mm_prefetch((const char*) (blk + kPanelPrefetchBytes + l), _MM_HINT_T0);
            if ((b & 1) == 0)
                _mm_prefetch((const char*) (pd + (b + kPanelPrefetchBytes / bb) * kPanelRows), _MM_HINT_T0);
        }
        __m512i si[MT];
        for (int r = 0; r < MT; r++) {
            const __m512i s = _mm512_set1_epi32(srow[r][b]);
            si[r] = FMT == QF_Q8_0 ? _mm512_slli_epi32(s, 4) : s;
        }
        const int8_t* xb[MT];
        for (int r = 0; r < MT; r++) xb[r] = xrow[r] + b * kQuantBlock;
        if (FMT == QF_Q8_0) {
            for (int k4 = 0; k4 < 8; k4++) {
                const __m512i w = _mm512_loadu_si512((const void*) (blk + k4 * 64));
                for (int r = 0; r < MT; r++)
                    si[r] = _mm512_dpbusd_epi32(si[r], w, _mm512_set1_epi32(load_i32(xb[r] + 4 * k4)));
            }
        } else {
            for (int j = 0; j < 4; j++) {
                const __m512i raw = _mm512_loadu_si512((const void*) (blk + j * 64));
                const __m512i lo = _mm512_and_si512(raw, m4);
                const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(raw, 4), m4);
                for (int r = 0; r < MT; r++) {
                    si[r] = _mm512_dpbusd_epi32(si[r], lo, _mm512_set1_epi32(load_i32(xb[r] + 4 * j)));
                    si[r] = _mm512_dpbusd_epi32(si[r], hi, _mm512_set1_epi32(load_i32(xb[r] + 4 * (j + 4))));
                }
            }
        }
        const __m512 ws = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*) (pd + b * kPanelRows)));
        for (int r = 0; r < MT; r++)
            acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(si[r]), ws), _mm512_set1_ps(drow[r][b]), acc[r]);
    }
    for (int r = 0; r < MT; r++) _mm512_storeu_ps(out[r], acc[r]);
}

// AVX2: each 8-row half h of the panel (bytes 32h .. 32h + 31 of every 64-byte group) in turn.
template <int FMT, int MT>
__attribute__((target("avx2,fma,f16c"))) inline void panel_rows_avx2(const uint8_t* pq, const uint16_t* pd,
                                                                      const QuantActs& a, int64_t r0,
                                                                      float (*out)[kPanelRows]) {
    constexpr int64_t bb = FMT == QF_Q8_0 ? 512 : 256;
    const __m256i m4 = _mm256_set1_epi8(0x0f), flip = _mm256_set1_epi8((char) 0x80), ones = _mm256_set1_epi16(1);
    for (int h = 0; h < 2; h++) {
        __m256 acc[MT];
        for (int r = 0; r < MT; r++) acc[r] = _mm256_setzero_ps();
        for (int64_t b = 0; b < a.nb; b++) {
            const uint8_t* blk = pq + b * bb + 32 * h;
            if (MT <= kPrefetchRows && h == 0) {
                for (int64_t l = 0; l < bb; l += 64)
                    _mm_prefetch((const char*) (blk + kPanelPrefetchBytes + l), _MM_HINT_T0);
                if ((b & 1) == 0)
                    _mm_prefetch((const char*) (pd + (b + kPanelPrefetchBytes / bb) * kPanelRows), _MM_HINT_T0);
            }
            __m256i si[MT];
            const int8_t* xb[MT];
            for (int r = 0; r < MT; r++) {
                xb[r] = a.q + (r0 + r) * a.K + b * kQuantBlock;
                si[r] = FMT == QF_Q8_0 ? _mm256_setzero_si256() : _mm256_set1_epi32(a.s[(r0 + r) * a.nb + b]);
            }
            if (FMT == QF_Q8_0) {
                for (int k4 = 0; k4 < 8; k4++) {
                    const __m256i w = _mm256_xor_si256(_mm256_loadu_si256((const __m256i*) (blk + k4 * 64)), flip);
                    const __m256i aw = _mm256_sign_epi8(w, w);
                    for (int r = 0; r < MT; r++) {
                        const __m256i xs = _mm256_sign_epi8(_mm256_set1_epi32(load_i32(xb[r] + 4 * k4)), w);
                        si[r] = _mm256_add_epi32(si[r], _mm256_madd_epi16(_mm256_maddubs_epi16(aw, xs), ones));
                    }
                }
            } else {
                for (int j = 0; j < 4; j++) {
                    const __m256i raw = _mm256_loadu_si256((const __m256i*) (blk + j * 64));
                    const __m256i lo = _mm256_and_si256(raw, m4);
                    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
                    for (int r = 0; r < MT; r++) {
                        const __m256i p = _mm256_add_epi16(
                                _mm256_maddubs_epi16(lo, _mm256_set1_epi32(load_i32(xb[r] + 4 * j))),
                                _mm256_maddubs_epi16(hi, _mm256_set1_epi32(load_i32(xb[r] + 4 * (j + 4)))));
                        si[r] = _mm256_add_epi32(si[r], _mm256_madd_epi16(p, ones));
                    }
                }
            }
            const __m256 ws = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*) (pd + b * kPanelRows + 8 * h)));
            for (int r = 0; r < MT; r++)
                acc[r] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(si[r]), ws),
                                         _mm256_set1_ps(a.d[(r0 + r) * a.nb + b]), acc[r]);
        }
        for (int r = 0; r < MT; r++) _mm256_storeu_ps(out[r] + 8 * h, acc[r]);
    }
}

// Prefill (many activation rows): a register tile of MT activation rows × NP adjacent panels (16·NP output rows):
// each activation broadcast feeds NP VPDPBUSD and each weight vector MT, with MT·NP independent int32 sums in
// flight (VPDPBUSD's latency is 4 cycles at 2 per cycle on Zen 5: 8 chains keep it busy). The broadcasts stay
// separate VPBROADCASTD loads: the {1to16} memory operand form measured ~20 % slower per VPDPBUSD on Zen 5. Every
// output lane runs the same operations in the same order as panel_rows_vnni (the block's sum from −o·Σx, then
// acc = fma(float(sumi)·d_w, d_x, acc) block after block), so its result equals panel_rows_vnni's bit for bit.
template <int FMT, int MT, int NP>
__attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni"))) inline void panel_tile_vnni(
        const uint8_t* pq, const uint16_t* pd, int64_t panel_stride, int64_t scale_stride, const QuantActs& a,
        int64_t r0, float (*out)[NP * kPanelRows]) {
    constexpr int64_t bb = FMT == QF_Q8_0 ? 512 : 256;
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    const int8_t* xrow = a.q + r0 * a.K;
    const float* drow = a.d + r0 * a.nb;
    const int32_t* srow = a.s + r0 * a.nb;
    __m512 acc[MT][NP];
    for (int r = 0; r < MT; r++)
        for (int p = 0; p < NP; p++) acc[r][p] = _mm512_setzero_ps();
    for (int64_t b = 0; b < a.nb; b++) {
        __m512i si[MT][NP];
        for (int r = 0; r < MT; r++) {
            const __m512i s = _mm512_set1_epi32(srow[r * a.nb + b]);
            for (int p = 0; p < NP; p++) si[r][p] = FMT == QF_Q8_0 ? _mm512_slli_epi32(s, 4) : s;
        }
        const int8_t* xb = xrow + b * kQuantBlock;
        if (FMT == QF_Q8_0) {
            for (int k4 = 0; k4 < 8; k4++) {
                __m512i w[NP];
                for (int p = 0; p < NP; p++)
                    w[p] = _mm512_loadu_si512((const void*) (pq + p * panel_stride + b * bb + k4 * 64));
                for (int r = 0; r < MT; r++) {
                    const __m512i xv = _mm512_set1_epi32(load_i32(xb + r * a.K + 4 * k4));
                    for (int p = 0; p < NP; p++) si[r][p] = _mm512_dpbusd_epi32(si[r][p], w[p], xv);
                }
            }
        } else {
            for (int j = 0; j < 4; j++) {
                __m512i lo[NP], hi[NP];
                for (int p = 0; p < NP; p++) {
                    const __m512i raw = _mm512_loadu_si512((const void*) (pq + p * panel_stride + b * bb + j * 64));
                    lo[p] = _mm512_and_si512(raw, m4);
                    hi[p] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), m4);
                }
                for (int r = 0; r < MT; r++) {
                    const __m512i xl = _mm512_set1_epi32(load_i32(xb + r * a.K + 4 * j));
                    const __m512i xh = _mm512_set1_epi32(load_i32(xb + r * a.K + 4 * (j + 4)));
                    for (int p = 0; p < NP; p++) si[r][p] = _mm512_dpbusd_epi32(si[r][p], lo[p], xl);
                    for (int p = 0; p < NP; p++) si[r][p] = _mm512_dpbusd_epi32(si[r][p], hi[p], xh);
                }
            }
        }
        __m512 ws[NP];
        for (int p = 0; p < NP; p++)
            ws[p] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*) (pd + p * scale_stride + b * kPanelRows)));
        for (int r = 0; r < MT; r++) {
            const __m512 dx = _mm512_set1_ps(drow[r * a.nb + b]);
            for (int p = 0; p < NP; p++)
                acc[r][p] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(si[r][p]), ws[p]), dx, acc[r][p]);
        }
    }
    for (int r = 0; r < MT; r++)
        for (int p = 0; p < NP; p++) _mm512_storeu_ps(out[r] + p * kPanelRows, acc[r][p]);
}

template <int FMT, int MT>
inline void panel_rows_simd(int path, const uint8_t* pq, const uint16_t* pd, const QuantActs& a, int64_t r0,
                            float (*out)[kPanelRows]) {
    if (path == QP_AVX512_VNNI) panel_rows_vnni<FMT, MT>(pq, pd, a, r0, out);
    else panel_rows_avx2<FMT, MT>(pq, pd, a, r0, out);
}

template <int FMT>
inline void panel_rows_fmt(int path, int mt, const uint8_t* pq, const uint16_t* pd, const QuantActs& a, int64_t r0,
                           float (*out)[kPanelRows]) {
    switch (mt) {
        case 8: panel_rows_simd<FMT, 8>(path, pq, pd, a, r0, out); return;
        case 7: panel_rows_simd<FMT, 7>(path, pq, pd, a, r0, out); return;
        case 6: panel_rows_simd<FMT, 6>(path, pq, pd, a, r0, out); return;
        case 5: panel_rows_simd<FMT, 5>(path, pq, pd, a, r0, out); return;
        case 4: panel_rows_simd<FMT, 4>(path, pq, pd, a, r0, out); return;
        case 3: panel_rows_simd<FMT, 3>(path, pq, pd, a, r0, out); return;
        case 2: panel_rows_simd<FMT, 2>(path, pq, pd, a, r0, out); return;
        default: panel_rows_simd<FMT, 1>(path, pq, pd, a, r0, out); return;
    }
}

// quantize_act_row on AVX-512, bit for bit: the same amax, dd = amax / 127, id = 1 / dd and v·id per value, and
// roundf's ties away from zero (trunc, then ±1 where the exact remainder |v·id − trunc| is at least 1/2) instead of
// the vector unit's ties to even.
template <typename T>
__attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512bw"))) inline void quantize_act_row_avx512(
        const T* x, int64_t K, int8_t* q, float* dx, int32_t* sx) {
    const __m512 half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.f);
    const __m512i absmask = _mm512_set1_epi32(0x7fffffff);
    for (int64_t b = 0; b < K / kQuantBlock; b++) {
        __m512 v[2];
        for (int h = 0; h < 2; h++) {
            const T* p = x + b * kQuantBlock + 16 * h;
            if constexpr (std::is_same<T, float>::value) {
                v[h] = _mm512_loadu_ps(p);
            } else {
                v[h] = _mm512_castsi512_ps(
                        _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*) p)), 16));
            }
        }
        const __m512 a0 = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v[0]), absmask));
        const __m512 a1 = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v[1]), absmask));
        const float amax = _mm512_reduce_max_ps(_mm512_max_ps(a0, a1));
        const float dd = amax / 127.f;
        const float id = dd != 0.f ? 1.f / dd : 0.f;
        const __m512 vid = _mm512_set1_ps(id);
        __m512i qi[2];
        for (int h = 0; h < 2; h++) {
            const __m512 t = _mm512_mul_ps(v[h], vid);
            const __m512 tr = _mm512_roundscale_ps(t, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
            const __m512 rem = _mm512_sub_ps(t, tr);
            const __m512 arem = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(rem), absmask));
            const __mmask16 up = _mm512_cmp_ps_mask(arem, half, _CMP_GE_OQ);
            // ±1 with the sign of t (of rem, which has it or is 0)
            const __m512 step = _mm512_castsi512_ps(_mm512_or_si512(
                    _mm512_castps_si512(one), _mm512_andnot_si512(absmask, _mm512_castps_si512(t))));
            qi[h] = _mm512_cvttps_epi32(_mm512_mask_add_ps(tr, up, tr, step));
        }
        _mm_storeu_si128((__m128i*) (q + b * kQuantBlock), _mm512_cvtepi32_epi8(qi[0]));
        _mm_storeu_si128((__m128i*) (q + b * kQuantBlock + 16), _mm512_cvtepi32_epi8(qi[1]));
        dx[b] = dd;
        sx[b] = -8 * _mm512_reduce_add_epi32(_mm512_add_epi32(qi[0], qi[1]));
    }
}

// The prefill tile: 6 rows × 2 panels, 12 int32 and 12 float32 accumulators in 24 of the 32 vector registers
// (7 × 2 and more spill; 4 × 2 and 5 × 2 measured a little slower). The macros are for benchmarking other shapes.
#ifndef PEFT4J_TILE_ROWS
#define PEFT4J_TILE_ROWS 6
#endif
#ifndef PEFT4J_TILE_PANELS
#define PEFT4J_TILE_PANELS 2
#endif
constexpr int kTileRows = PEFT4J_TILE_ROWS, kTilePanels = PEFT4J_TILE_PANELS;

// panel_tile_vnni<FMT, mt, NP> for 1 <= mt <= MT

template <int FMT, int NP, int MT>
inline void panel_tile_rem(int mt, const uint8_t* pq, const uint16_t* pd, int64_t ps, int64_t ss, const QuantActs& a,
                           int64_t r0, float (*out)[NP * kPanelRows]) {
    if constexpr (MT > 1) {
        if (mt < MT) return panel_tile_rem<FMT, NP, MT - 1>(mt, pq, pd, ps, ss, a, r0, out);
    }
    panel_tile_vnni<FMT, MT, NP>(pq, pd, ps, ss, a, r0, out);
}

// y[0:M, panels p0 .. p1 − 1] (+ bias) on the VNNI path in tiles of kTileRows rows × kTilePanels panels (a last
// single panel when p1 − p0 is odd, a last tile of fewer rows when M is not a multiple): one pass over the panels'
// weights per row tile, from L1 / L2 (two Q4_0 panels of K = 2048 are 32 KB)
template <int FMT, typename T>
inline void panel_span_tiles_vnni(const void* pq, const uint16_t* pd, const T* bias, const QuantActs& acts, T* y,
                                  int64_t M, int64_t N, int64_t p0, int64_t p1) {
    const int64_t nb = acts.nb, ps = nb * (FMT == QF_Q8_0 ? 512 : 256), ss = nb * kPanelRows;
    float out[kTileRows][kTilePanels * kPanelRows];
    float out1[kTileRows][kPanelRows];
    for (int64_t p = p0; p < p1; p += kTilePanels) {
        const int np = (int) std::min<int64_t>(kTilePanels, p1 - p);
        const uint8_t* q = (const uint8_t*) pq + p * ps;
        const uint16_t* d = pd + p * ss;
        const int64_t n0 = p * kPanelRows;
        const int cols = (int) std::min<int64_t>(np * kPanelRows, N - n0);
        for (int64_t r0 = 0; r0 < M; r0 += kTileRows) {
            const int mt = (int) std::min<int64_t>(kTileRows, M - r0);
            float* o;
            int ld;
            if (np == kTilePanels) {
                panel_tile_rem<FMT, kTilePanels, kTileRows>(mt, q, d, ps, ss, acts, r0, out);
                o = out[0];
                ld = kTilePanels * kPanelRows;
            } else {
                panel_tile_rem<FMT, 1, kTileRows>(mt, q, d, ps, ss, acts, r0, out1);
                o = out1[0];
                ld = kPanelRows;
            }
            for (int r = 0; r < mt; r++)
                for (int l = 0; l < cols; l++)
                    store_f32(y + (r0 + r) * N + n0 + l, o[r * ld + l] + (bias != nullptr ? to_f32(bias[n0 + l]) : 0.f));
        }
    }
}
#endif

// Panels per task at 8 rows and more: the VNNI tile's panel count, so that every task runs whole tiles.
#if defined(__x86_64__)
constexpr int64_t kPanelsPerTask = kTilePanels;
#else
constexpr int64_t kPanelsPerTask = 1;
#endif

// Register tile height: activation rows per pass over a panel. AVX2 has 16 vector registers: 4 rows keep its
// int32 and float32 accumulators and the weight vectors in registers.
inline int panel_tile_rows(int path) { return path == QP_AVX2 ? 4 : 8; }

// out[0:mt][0:16] for activation rows r0 .. r0 + mt − 1 (mt <= panel_tile_rows(path)) against one panel
inline void panel_rows(int path, int fmt, int mt, const uint8_t* pq, const uint16_t* pd, const QuantActs& a,
                       int64_t r0, float (*out)[kPanelRows]) {
#if defined(__x86_64__)
    if (path != QP_SCALAR) {
        if (fmt == QF_Q8_0) panel_rows_fmt<QF_Q8_0>(path, mt, pq, pd, a, r0, out);
        else panel_rows_fmt<QF_Q4_0>(path, mt, pq, pd, a, r0, out);
        return;
    }
#endif
    panel_rows_scalar(fmt, pq, pd, a, r0, mt, out);
}

// y[0:M, panels p0 .. p1 − 1] (+ bias) from the quantized activations: each output row's sum runs over all K/32
// blocks in one panel_rows call, so it does not depend on how panels are split among threads.
template <typename T>
inline void panel_span_rows(int path, int fmt, const void* pq, const uint16_t* pd, const T* bias,
                            const QuantActs& acts, T* y, int64_t M, int64_t N, int64_t p0, int64_t p1) {
    const int64_t nb = acts.nb, bb = panel_block_bytes(fmt);
    const int tile = panel_tile_rows(path);
    float out[8][kPanelRows];
    for (int64_t p = p0; p < p1; p++) {
        const uint8_t* q = (const uint8_t*) pq + p * nb * bb;
        const uint16_t* d = pd + p * nb * kPanelRows;
        const int rows = panel_rows(p, N);
        const int64_t n0 = p * kPanelRows;
        for (int64_t r0 = 0; r0 < M; r0 += tile) {
            const int mt = (int) std::min<int64_t>(tile, M - r0);
            panel_rows(path, fmt, mt, q, d, acts, r0, out);
            for (int r = 0; r < mt; r++)
                for (int l = 0; l < rows; l++)
                    store_f32(y + (r0 + r) * N + n0 + l, out[r][l] + (bias != nullptr ? to_f32(bias[n0 + l]) : 0.f));
        }
    }
}

template <typename T>
inline void panel_span(int path, int fmt, const void* pq, const uint16_t* pd, const T* bias, const QuantActs& acts,
                       T* y, int64_t M, int64_t N, int64_t p0, int64_t p1) {
#if defined(__x86_64__)
    if (M >= 8 && path == QP_AVX512_VNNI) {
        if (fmt == QF_Q8_0) panel_span_tiles_vnni<QF_Q8_0, T>(pq, pd, bias, acts, y, M, N, p0, p1);
        else panel_span_tiles_vnni<QF_Q4_0, T>(pq, pd, bias, acts, y, M, N, p0, p1);
        return;
    }
#endif
    panel_span_rows(path, fmt, pq, pd, bias, acts, y, M, N, p0, p1);
}

// y[M, N] = x[M, K]·Ŵᵀ + bias over the panel layout; T float or uint16_t (bfloat16) for x, y, bias.
template <typename T>
inline void quant_linear_panels(int path, int fmt, const void* pq, const uint16_t* pd, const T* bias, const T* x, T* y,
                                int64_t M, int64_t K, int64_t N, int threads) {
    if (M <= 0 || N <= 0) return;
    const int64_t P = panel_count(N);
    QuantScratch& sc = quant_scratch();
    const QuantActs acts = sc.acts(M, K);
    const std::function<void(int64_t)> quantize = [&](int64_t r) {
#if defined(__x86_64__)
        if (M >= 8 && path == QP_AVX512_VNNI) {
            const int64_t nb = K / kQuantBlock;
            quantize_act_row_avx512(x + r * K, K, sc.q.data() + r * K, sc.d.data() + r * nb, sc.s.data() + r * nb);
            return;
        }
#endif
        sc.quantize_row(x, r, K);
    };
    // A few rows: several panels per task (less scheduling per byte streamed); many rows: one panel per task.
    const int64_t per = M >= 8 ? kPanelsPerTask : 4, tasks = (P + per - 1) / per;
    const std::function<void(int64_t)> panels = [&](int64_t t) {
        panel_span(path, fmt, pq, pd, bias, acts, y, M, N, t * per, std::min(P, (t + 1) * per));
    };
    // Two plain regions, no spin between them (see quant_linear); below 8 rows the caller quantizes x (a few µs,
    // less than a region's fork and join).
    if (M < 8) {
        for (int64_t r = 0; r < M; r++) quantize(r);
    } else {
        ThreadPool::instance().parallel_for(M, threads, quantize);
    }
    if (M < 8 && decode_split_contiguous()) {
        contiguous_for(P, threads, [&](int64_t p) { panel_span(path, fmt, pq, pd, bias, acts, y, M, N, p, p + 1); });
        return;
    }
    ThreadPool::instance().parallel_for(tasks, threads, panels);
}

}  // namespace peft4j

// ---- C entry points (dev.peft4j.kernels.NativeKernels) over the panel layout ----
// fmt QF_Q8_0 / QF_Q4_0; dtype DT_F32 / DT_BF16; K a multiple of 32 (checked by Java). pq holds
// peft4j_quant_panel_bytes(fmt, N, K) bytes, pd ⌈N/16⌉·16·K/32 fp16 scales.

inline int64_t peft4j_quant_panel_bytes(int fmt, int64_t N, int64_t K) { return peft4j::panel_bytes(fmt, N, K); }

// W [N, K] -> panels
inline void peft4j_quantize_panels(int fmt, int dtype, const void* W, int64_t N, int64_t K, void* pq, uint16_t* pd,
                                   int32_t threads) {
    if (dtype == peft4j::DT_BF16)
        peft4j::quantize_matrix_panels<uint16_t>(fmt, (const uint16_t*) W, N, K, pq, pd, threads);
    else
        peft4j::quantize_matrix_panels<float>(fmt, (const float*) W, N, K, pq, pd, threads);
}

// panels -> W [N, K]
inline void peft4j_dequantize_panels(int fmt, int dtype, const void* pq, const uint16_t* pd, int64_t N, int64_t K,
                                     void* W, int32_t threads) {
    if (dtype == peft4j::DT_BF16)
        peft4j::dequantize_matrix_panels<uint16_t>(fmt, pq, pd, N, K, (uint16_t*) W, threads);
    else
        peft4j::dequantize_matrix_panels<float>(fmt, pq, pd, N, K, (float*) W, threads);
}

// canonical (llama.cpp block order, scales [N, K/32]) -> panels
inline void peft4j_quant_pack(int fmt, const void* qs, const uint16_t* d, int64_t N, int64_t K, void* pq,
                              uint16_t* pd, int32_t threads) {
    peft4j::pack_matrix(fmt, qs, d, N, K, pq, pd, threads);
}

// panels -> canonical
inline void peft4j_quant_unpack(int fmt, const void* pq, const uint16_t* pd, int64_t N, int64_t K, void* qs,
                                uint16_t* d, int32_t threads) {
    peft4j::unpack_matrix(fmt, pq, pd, N, K, qs, d, threads);
}

// y [M, N] = x [M, K]·Ŵᵀ + bias over panels (bias N entries or null; x, y, bias of dtype)
inline void peft4j_quant_linear_panels(int fmt, int dtype, const void* pq, const uint16_t* pd, const void* bias,
                                       const void* x, void* y, int64_t M, int64_t K, int64_t N, int32_t threads) {
    const int path = peft4j::quant_path();
    if (dtype == peft4j::DT_BF16)
        peft4j::quant_linear_panels<uint16_t>(path, fmt, pq, pd, (const uint16_t*) bias, (const uint16_t*) x,
                                              (uint16_t*) y, M, K, N, threads);
    else
        peft4j::quant_linear_panels<float>(path, fmt, pq, pd, (const float*) bias, (const float*) x, (float*) y, M, K,
                                           N, threads);
}
