// Weight-only quantized Linear: y[M,N] = x[M,K]·Wqᵀ (+ bias), W stored in blocks of 32 weights along K.
//
//   Q8_0 (int8):  qs int8 [N, K], d fp16 [N, K/32]; w = q·d, q = round(w / d), d = max|w| / 127 over the block
//   Q4_0 (int4):  qs uint8 [N, K/2], d fp16 [N, K/32]; per block of 32, byte j holds weight j in its low nibble
//                 and weight j + 16 in its high nibble; w = (q − 8)·d, d = m / −8 where m is the block's weight of
//                 largest magnitude (sign kept), q = min(15, (int)(w / d + 8.5))
//
// Both are llama.cpp's block_q8_0 / block_q4_0 with the scales kept in an array of their own, quantized as
// ggml's reference quantizers (quantize_row_q8_0_ref, quantize_row_q4_0_ref) do, so the values match theirs.
//
// The product follows llama.cpp's CPU backend: each row of x is quantized per block of 32 to int8 with a float
// scale (Q8_0 of the activations, round to nearest), then every block's dot product is an exact int32 sum and
// y = Σ_blocks d_w·d_x·sumi in float32. The integer sums run on AVX-512 VNNI (VPDPBUSD on 256-bit blocks), on
// AVX2 (VPMADDUBSW + VPMADDWD), or on a scalar loop; all paths see the same quantized activations, so they
// differ only in the order of the float32 additions. AVX-512 without VNNI runs the AVX2 loop (its 256-bit
// integer dot is the same instruction count per block). Threads: output rows split into tasks of kRowsPerTask
// on peft4j's thread team (libtorch's OpenMP team or the pool of peft4j_threads.h), after the activations are
// quantized (by rows, on the caller for fewer than 4 rows).
#pragma once

#include "peft4j_cpu.h"
#include "peft4j_lora_delta.h"
#include "peft4j_lora_linear.h"
#include "peft4j_threads.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>
#if defined(__x86_64__)
#include <immintrin.h>  // x86 SIMD paths only; other architectures build the scalar one
#endif

namespace peft4j {

constexpr int64_t kQuantBlock = 32;
enum QuantFormat : int { QF_Q8_0 = 0, QF_Q4_0 = 1 };
// The integer-dot paths, chosen at run time from active_isa() and the CPU's VNNI flag.
enum QuantPath : int { QP_SCALAR = 0, QP_AVX2 = 1, QP_AVX512_VNNI = 2 };

inline const char* quant_path_name(int p) {
    return p == QP_AVX512_VNNI ? "avx512_vnni" : p == QP_AVX2 ? "avx2" : "scalar";
}

inline bool cpu_has_vnni() {
#if defined(__x86_64__)
    static const bool v = [] {
        __builtin_cpu_init();
        return (bool) __builtin_cpu_supports("avx512vnni");
    }();
    return v;
#else
    return false;
#endif
}

// The path the kernels take at the active ISA level.
inline int quant_path() {
    const int isa = active_isa();
    if (isa >= ISA_AVX512 && cpu_has_vnni()) return QP_AVX512_VNNI;
    if (isa >= ISA_AVX2) return QP_AVX2;
    return QP_SCALAR;
}

// ---- IEEE half <-> float, round to nearest even (what F16C's VCVTPS2PH with imm 0 and ggml's fallback do) ----
inline float f16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t) (h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    uint32_t u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else {  // subnormal: normalise
            int e = -1;
            do { man <<= 1; e++; } while ((man & 0x400u) == 0);
            u = sign | ((uint32_t) (127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

inline uint16_t f32_to_f16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    const uint16_t sign = (uint16_t) ((u >> 16) & 0x8000u);
    const uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t) (sign | 0x7e00u);   // NaN
    if (a >= 0x477ff000u) return (uint16_t) (sign | 0x7c00u);  // rounds to >= 65536: infinity
    if (a < 0x38800000u) {                                     // below 2^-14: subnormal half (or zero)
        float af;
        std::memcpy(&af, &a, sizeof af);
        // af · 2^24 rounded to nearest even is the subnormal's mantissa (nearbyint: default mode, ties to even)
        return (uint16_t) (sign | (uint16_t) std::nearbyint(af * 16777216.0f));
    }
    const uint32_t round = 0xfffu + ((a >> 13) & 1u);
    return (uint16_t) (sign | (uint16_t) ((a - 0x38000000u + round) >> 13));
}

template <typename T>
inline float to_f32(T v);
template <>
inline float to_f32<float>(float v) { return v; }
template <>
inline float to_f32<uint16_t>(uint16_t v) { return bf16_to_f32(v); }

// ---- weights: quantize / dequantize one row of K (K a multiple of 32) ----
inline void quantize_row_q8_0(const float* x, int64_t K, int8_t* qs, uint16_t* d) {
    for (int64_t b = 0; b < K / kQuantBlock; b++) {
        const float* xb = x + b * kQuantBlock;
        float amax = 0.f;
        for (int j = 0; j < kQuantBlock; j++) amax = std::max(amax, std::fabs(xb[j]));
        const float dd = amax / 127.f;
        const float id = dd != 0.f ? 1.f / dd : 0.f;
        d[b] = f32_to_f16(dd);
        for (int j = 0; j < kQuantBlock; j++) qs[b * kQuantBlock + j] = (int8_t) std::roundf(xb[j] * id);
    }
}

inline void quantize_row_q4_0(const float* x, int64_t K, uint8_t* qs, uint16_t* d) {
    for (int64_t b = 0; b < K / kQuantBlock; b++) {
        const float* xb = x + b * kQuantBlock;
        float amax = 0.f, mx = 0.f;
        for (int j = 0; j < kQuantBlock; j++) {
            if (amax < std::fabs(xb[j])) {
                amax = std::fabs(xb[j]);
                mx = xb[j];
            }
        }
        const float dd = mx / -8.f;
        const float id = dd != 0.f ? 1.f / dd : 0.f;
        d[b] = f32_to_f16(dd);
        for (int j = 0; j < kQuantBlock / 2; j++) {
            const uint8_t lo = (uint8_t) std::min(15, (int) (int8_t) (xb[j] * id + 8.5f));
            const uint8_t hi = (uint8_t) std::min(15, (int) (int8_t) (xb[j + 16] * id + 8.5f));
            qs[b * 16 + j] = (uint8_t) (lo | (hi << 4));
        }
    }
}

// q, d (one row) -> the weight values as float
inline void dequantize_row(int fmt, const void* qs, const uint16_t* d, int64_t K, float* out) {
    for (int64_t b = 0; b < K / kQuantBlock; b++) {
        const float dd = f16_to_f32(d[b]);
        if (fmt == QF_Q8_0) {
            const int8_t* q = (const int8_t*) qs + b * kQuantBlock;
            for (int j = 0; j < kQuantBlock; j++) out[b * kQuantBlock + j] = (float) q[j] * dd;
        } else {
            const uint8_t* q = (const uint8_t*) qs + b * 16;
            for (int j = 0; j < 16; j++) {
                out[b * kQuantBlock + j] = (float) ((q[j] & 0xf) - 8) * dd;
                out[b * kQuantBlock + j + 16] = (float) ((q[j] >> 4) - 8) * dd;
            }
        }
    }
}

inline int64_t quant_row_bytes(int fmt, int64_t K) { return fmt == QF_Q8_0 ? K : K / 2; }

// W [N, K] (float32 or bfloat16) -> qs, d; rows in parallel
template <typename T>
inline void quantize_matrix(int fmt, const T* W, int64_t N, int64_t K, void* qs, uint16_t* d, int threads) {
    const int64_t rb = quant_row_bytes(fmt, K), nb = K / kQuantBlock;
    const int64_t per = 16, tasks = (N + per - 1) / per;
    ThreadPool::instance().parallel_for(tasks, threads, [&](int64_t t) {
        std::vector<float> row((size_t) K);
        for (int64_t n = t * per; n < std::min(N, (t + 1) * per); n++) {
            for (int64_t k = 0; k < K; k++) row[(size_t) k] = to_f32(W[n * K + k]);
            if (fmt == QF_Q8_0) quantize_row_q8_0(row.data(), K, (int8_t*) qs + n * rb, d + n * nb);
            else quantize_row_q4_0(row.data(), K, (uint8_t*) qs + n * rb, d + n * nb);
        }
    });
}

// qs, d -> W [N, K] (float32 or bfloat16, rounded once to nearest even)
template <typename T>
inline void dequantize_matrix(int fmt, const void* qs, const uint16_t* d, int64_t N, int64_t K, T* W, int threads) {
    const int64_t rb = quant_row_bytes(fmt, K), nb = K / kQuantBlock;
    const int64_t per = 16, tasks = (N + per - 1) / per;
    ThreadPool::instance().parallel_for(tasks, threads, [&](int64_t t) {
        std::vector<float> row((size_t) K);
        for (int64_t n = t * per; n < std::min(N, (t + 1) * per); n++) {
            dequantize_row(fmt, (const uint8_t*) qs + n * rb, d + n * nb, K, row.data());
            for (int64_t k = 0; k < K; k++) store_f32(W + n * K + k, row[(size_t) k]);
        }
    });
}

// ---- activations: one row of K -> int8 per block with a float scale (ggml's quantize_row_q8_0_ref, scale
// kept in float32), and each block's −8·Σq: Q4_0's offset term, ready to start a block's int32 sum ----
template <typename T>
inline void quantize_act_row(const T* x, int64_t K, int8_t* q, float* dx, int32_t* sx) {
    for (int64_t b = 0; b < K / kQuantBlock; b++) {
        float v[kQuantBlock];
        float amax = 0.f;
        for (int j = 0; j < kQuantBlock; j++) {
            v[j] = to_f32(x[b * kQuantBlock + j]);
            amax = std::max(amax, std::fabs(v[j]));
        }
        const float dd = amax / 127.f;
        const float id = dd != 0.f ? 1.f / dd : 0.f;
        int32_t s = 0;
        for (int j = 0; j < kQuantBlock; j++) {
            const int8_t qq = (int8_t) std::roundf(v[j] * id);
            q[b * kQuantBlock + j] = qq;
            s += qq;
        }
        dx[b] = dd;
        sx[b] = -8 * s;
    }
}

// ---- one output element per (row group, weight row): the block dot products ----
// Computes out[r] = Σ_b d_w[b]·d_x[r][b]·sumi(r, b) for the mb rows of a group.
struct QuantActs {
    const int8_t* q;   // [M, K]
    const float* d;    // [M, K/32]
    const int32_t* s;  // [M, K/32]: −8·Σq per block
    int64_t K, nb;
};

inline void dot_rows_scalar(int fmt, const void* wq, const uint16_t* wd, const QuantActs& a, int64_t r0, int mb,
                            float* out) {
    for (int r = 0; r < mb; r++) {
        const int8_t* xq = a.q + (r0 + r) * a.K;
        const float* xd = a.d + (r0 + r) * a.nb;
        float acc = 0.f;
        for (int64_t b = 0; b < a.nb; b++) {
            int32_t sumi = 0;
            if (fmt == QF_Q8_0) {
                const int8_t* w = (const int8_t*) wq + b * kQuantBlock;
                for (int j = 0; j < kQuantBlock; j++) sumi += (int32_t) w[j] * xq[b * kQuantBlock + j];
            } else {
                const uint8_t* w = (const uint8_t*) wq + b * 16;
                for (int j = 0; j < 16; j++)
                    sumi += (int32_t) (w[j] & 0xf) * xq[b * kQuantBlock + j]
                            + (int32_t) (w[j] >> 4) * xq[b * kQuantBlock + j + 16];
                sumi += a.s[(r0 + r) * a.nb + b];
            }
            acc += (float) sumi * (f16_to_f32(wd[b]) * xd[b]);
        }
        out[r] = acc;
    }
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma,f16c")))
inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// VNNI: VPDPBUSD (unsigned x signed bytes, 4 at a time into int32); AVX2: VPMADDUBSW into int16 pairs (no
// saturation: |w|, |x| <= 127 so a pair is at most 2·127·127 < 32767; Q4_0's 2·15·127 too) then VPMADDWD.
#define PEFT4J_DOT_VNNI(init, u, s) _mm256_dpbusd_epi32((init), (u), (s))
#define PEFT4J_DOT_AVX2(init, u, s) \
    _mm256_add_epi32((init), _mm256_madd_epi16(_mm256_maddubs_epi16((u), (s)), _mm256_set1_epi16(1)))

// One block bi of the weight row into accumulator h of every row.
#define PEFT4J_QUANT_BLOCK(bi, h, DOT)                                                                         \
    {                                                                                                          \
        const int64_t bb = (bi);                                                                               \
        const float dw = _cvtsh_ss(wd[bb]);                                                                    \
        __m256i u, wv;                                                                                         \
        if (FMT == QF_Q8_0) {                                                                                  \
            wv = _mm256_loadu_si256((const __m256i*) ((const int8_t*) wq + bb * kQuantBlock));                 \
            u = _mm256_sign_epi8(wv, wv);                                                                      \
        } else {                                                                                               \
            const __m128i raw = _mm_loadu_si128((const __m128i*) ((const uint8_t*) wq + bb * 16));             \
            u = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), m4);                          \
            wv = u;                                                                                            \
        }                                                                                                      \
        for (int r = 0; r < MB; r++) {                                                                         \
            const __m256i xv = _mm256_loadu_si256((const __m256i*) (xrow[r] + bb * kQuantBlock));              \
            __m256i sumi;                                                                                      \
            if (FMT == QF_Q8_0) {                                                                              \
                sumi = DOT(_mm256_setzero_si256(), u, _mm256_sign_epi8(xv, wv));                               \
            } else {                                                                                           \
                sumi = DOT(_mm256_zextsi128_si256(_mm_cvtsi32_si128(srow[r][bb])), u, xv);                     \
            }                                                                                                  \
            acc[r][h] = _mm256_fmadd_ps(_mm256_set1_ps(dw * drow[r][bb]), _mm256_cvtepi32_ps(sumi), acc[r][h]); \
        }                                                                                                      \
    }

// MB (<= 4) rows of activations against one weight row; each weight block is loaded and unpacked once for every
// row, two blocks in flight per row (two accumulators) so the float32 FMA chain does not bound a single row.
#define PEFT4J_QUANT_DOT_ROWS(NAME, TARGET, DOT)                                                               \
    template <int FMT, int MB>                                                                                 \
    __attribute__((target(TARGET))) inline void NAME(const void* wq, const uint16_t* wd, const QuantActs& a,   \
                                                     int64_t r0, float* out) {                                 \
        __m256 acc[MB][2];                                                                                     \
        for (int r = 0; r < MB; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();                              \
        const __m256i m4 = _mm256_set1_epi8(0x0f);                                                             \
        const int8_t* xrow[MB];                                                                                \
        const float* drow[MB];                                                                                 \
        const int32_t* srow[MB];                                                                               \
        for (int r = 0; r < MB; r++) {                                                                         \
            xrow[r] = a.q + (r0 + r) * a.K;                                                                    \
            drow[r] = a.d + (r0 + r) * a.nb;                                                                   \
            srow[r] = a.s + (r0 + r) * a.nb;                                                                   \
        }                                                                                                      \
        int64_t b = 0;                                                                                         \
        for (; b + 2 <= a.nb; b += 2) {                                                                        \
            PEFT4J_QUANT_BLOCK(b, 0, DOT)                                                                      \
            PEFT4J_QUANT_BLOCK(b + 1, 1, DOT)                                                                  \
        }                                                                                                      \
        if (b < a.nb) {                                                                                        \
            PEFT4J_QUANT_BLOCK(b, 0, DOT)                                                                      \
        }                                                                                                      \
        for (int r = 0; r < MB; r++) out[r] = hsum8(_mm256_add_ps(acc[r][0], acc[r][1]));                      \
    }

PEFT4J_QUANT_DOT_ROWS(dot_rows_avx2, "avx2,fma,f16c", PEFT4J_DOT_AVX2)
PEFT4J_QUANT_DOT_ROWS(dot_rows_vnni, "avx2,fma,f16c,avx512f,avx512vl,avx512vnni", PEFT4J_DOT_VNNI)
#undef PEFT4J_QUANT_DOT_ROWS
#undef PEFT4J_QUANT_BLOCK
#undef PEFT4J_DOT_VNNI
#undef PEFT4J_DOT_AVX2

template <int FMT, int MB>
inline void dot_rows_path(int path, const void* wq, const uint16_t* wd, const QuantActs& a, int64_t r0, float* out) {
    if (path == QP_AVX512_VNNI) dot_rows_vnni<FMT, MB>(wq, wd, a, r0, out);
    else dot_rows_avx2<FMT, MB>(wq, wd, a, r0, out);
}
#endif

// out[0:mb] for rows r0 .. r0 + mb − 1 (mb <= 4) against one weight row, on the given path
inline void dot_rows(int path, int fmt, const void* wq, const uint16_t* wd, const QuantActs& a, int64_t r0, int mb,
                     float* out) {
#if defined(__x86_64__)
    if (path != QP_SCALAR) {
        const bool q8 = fmt == QF_Q8_0;
        switch (mb) {
            case 4: q8 ? dot_rows_path<QF_Q8_0, 4>(path, wq, wd, a, r0, out) : dot_rows_path<QF_Q4_0, 4>(path, wq, wd, a, r0, out); return;
            case 3: q8 ? dot_rows_path<QF_Q8_0, 3>(path, wq, wd, a, r0, out) : dot_rows_path<QF_Q4_0, 3>(path, wq, wd, a, r0, out); return;
            case 2: q8 ? dot_rows_path<QF_Q8_0, 2>(path, wq, wd, a, r0, out) : dot_rows_path<QF_Q4_0, 2>(path, wq, wd, a, r0, out); return;
            default: q8 ? dot_rows_path<QF_Q8_0, 1>(path, wq, wd, a, r0, out) : dot_rows_path<QF_Q4_0, 1>(path, wq, wd, a, r0, out); return;
        }
    }
#endif
    dot_rows_scalar(fmt, wq, wd, a, r0, mb, out);
}

constexpr int64_t kQuantRowsPerTask = 16;

// Per calling thread: the quantized activations of the last call (grown, never shrunk; the team's helpers read
// them only inside the call).
struct QuantScratch {
    std::vector<int8_t> q;
    std::vector<float> d;
    std::vector<int32_t> s;

    // The quantized activations of M rows of K, in this scratch (grown as needed, never shrunk).
    QuantActs acts(int64_t M, int64_t K) {
        const int64_t nb = K / kQuantBlock;
        if ((int64_t) q.size() < M * K) q.resize((size_t) (M * K));
        if ((int64_t) d.size() < M * nb) {
            d.resize((size_t) (M * nb));
            s.resize((size_t) (M * nb));
        }
        return QuantActs{q.data(), d.data(), s.data(), K, nb};
    }

    // Row r of x [M, K] quantized into the slots acts(M, K) sized.
    template <typename T>
    void quantize_row(const T* x, int64_t r, int64_t K) {
        const int64_t nb = K / kQuantBlock;
        quantize_act_row(x + r * K, K, q.data() + r * K, d.data() + r * nb, s.data() + r * nb);
    }
};

inline QuantScratch& quant_scratch() {
    static thread_local QuantScratch s;
    return s;
}

// y[M, N] = x[M, K]·Wqᵀ + bias (bias: N entries of T, or null); T float or uint16_t (bfloat16) for x, y, bias.
template <typename T>
inline void quant_linear(int path, int fmt, const void* qs, const uint16_t* d, const T* bias, const T* x, T* y,
                         int64_t M, int64_t K, int64_t N, int threads) {
    if (M <= 0 || N <= 0) return;
    const int64_t nb = K / kQuantBlock, rb = quant_row_bytes(fmt, K);
    QuantScratch& sc = quant_scratch();
    const QuantActs acts = sc.acts(M, K);
    const std::function<void(int64_t)> quantize = [&](int64_t r) {
        sc.quantize_row(x, r, K);
    };
    const int64_t tasks = (N + kQuantRowsPerTask - 1) / kQuantRowsPerTask;
    const std::function<void(int64_t)> rows = [&](int64_t t) {
        float out[4];
        for (int64_t n = t * kQuantRowsPerTask; n < std::min(N, (t + 1) * kQuantRowsPerTask); n++) {
            const void* wq = (const uint8_t*) qs + n * rb;
            const uint16_t* wd = d + n * nb;
            const float bn = bias != nullptr ? to_f32(bias[n]) : 0.f;
            for (int64_t r0 = 0; r0 < M; r0 += 4) {
                const int mb = (int) std::min<int64_t>(4, M - r0);
                dot_rows(path, fmt, wq, wd, acts, r0, mb, out);
                for (int r = 0; r < mb; r++) store_f32(y + (r0 + r) * N + n, out[r] + bn);
            }
        }
    };
    // Two plain regions, no spin between them: a phase barrier's spin-wait stalls for a whole time slice when the
    // thread it waits for is preempted (a loaded machine). A few rows are quantized on the caller (microseconds).
    if (M < 4) {
        for (int64_t r = 0; r < M; r++) quantize(r);
    } else {
        ThreadPool::instance().parallel_for(M, threads, quantize);
    }
    ThreadPool::instance().parallel_for(tasks, threads, rows);
}

}  // namespace peft4j

// ---- C entry points (dev.peft4j.kernels.NativeKernels) ----
// fmt: QF_Q8_0 / QF_Q4_0; dtype: DT_F32 / DT_BF16 of the float tensors; K a multiple of 32 (checked by Java)

// The integer-dot path the quantized kernels take now (QuantPath), and its name.
inline int peft4j_quant_path() { return peft4j::quant_path(); }
inline const char* peft4j_quant_path_name(int path) { return peft4j::quant_path_name(path); }

// W [N, K] -> qs (N·K bytes for Q8_0, N·K/2 for Q4_0), d [N, K/32] (fp16 bits)
inline void peft4j_quantize(int fmt, int dtype, const void* W, int64_t N, int64_t K, void* qs, uint16_t* d,
                            int32_t threads) {
    if (dtype == peft4j::DT_BF16) peft4j::quantize_matrix<uint16_t>(fmt, (const uint16_t*) W, N, K, qs, d, threads);
    else peft4j::quantize_matrix<float>(fmt, (const float*) W, N, K, qs, d, threads);
}

// qs, d -> W [N, K]
inline void peft4j_dequantize(int fmt, int dtype, const void* qs, const uint16_t* d, int64_t N, int64_t K, void* W,
                              int32_t threads) {
    if (dtype == peft4j::DT_BF16) peft4j::dequantize_matrix<uint16_t>(fmt, qs, d, N, K, (uint16_t*) W, threads);
    else peft4j::dequantize_matrix<float>(fmt, qs, d, N, K, (float*) W, threads);
}

// y [M, N] = x [M, K]·Wqᵀ + bias (bias N entries or null; x, y, bias of dtype)
inline void peft4j_quant_linear(int fmt, int dtype, const void* qs, const uint16_t* d, const void* bias, const void* x,
                                void* y, int64_t M, int64_t K, int64_t N, int32_t threads) {
    const int path = peft4j::quant_path();
    if (dtype == peft4j::DT_BF16)
        peft4j::quant_linear<uint16_t>(path, fmt, qs, d, (const uint16_t*) bias, (const uint16_t*) x, (uint16_t*) y, M,
                                       K, N, threads);
    else
        peft4j::quant_linear<float>(path, fmt, qs, d, (const float*) bias, (const float*) x, (float*) y, M, K, N,
                                    threads);
}
