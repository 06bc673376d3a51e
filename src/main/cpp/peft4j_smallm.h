// The base product of the decode kernel at 5-16 rows on AVX-512: out[m, n] = x[m, :K] · W[n, :K].
//
// The dot-product kernels (a row of x against a row of W with K in the vector lanes, a horizontal sum per output)
// read each register block of W once per block of 4 rows of x: at 16 rows four passes over W's lines, with x re-read
// from L2 for each, so a 16-row step cost 2.6-2.8x a 1-row one. The quad kernel puts 4 rows of x and 4 steps of K in
// the lanes of one vector instead: lane 4i + q holds row i's column(s) of step q (one float32, or one bf16 pair for
// VDPBF16PS), x packed once per call that way (pack_x_quads). Each 16-byte piece of a row of W (4 float32, 8 bf16)
// is loaded once, broadcast to the four 128-bit lanes, and multiplied against the ceil(M / 4) vectors of x for that
// piece, so every byte of W is read once and applied to all rows; the 4 partial sums of a row's lanes are added
// once at the end. The instruction count follows M (one multiply-add per 16 bytes of W per 4 rows), as the
// dot-product kernels', but without their re-reads; the accumulators (about 16: MB blocks of 4 rows x NB features)
// stay in registers over the whole of K. Below 5 rows (one block of x) the dot-product kernels keep the product:
// there nothing is re-read and their loads are full 64-byte lines.
//
// The NB rows of W a block reads are NB streams K·4 (K·2) bytes apart, each advancing one line per 4 pieces; each
// is prefetched kQuadAhead bytes ahead, into the next block's row once past its own row's end, so a block starts
// on lines already on their way. Few streams (4 at 16 rows) also keep them within L1's ways: rows K·2 bytes apart
// (a power of two at common sizes) fall into one L1 set, and 16 of them would evict each other before their
// lines are used up.
#pragma once

#include "peft4j_cpu.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#if defined(__x86_64__)
#include <immintrin.h>  // x86 SIMD paths only; other architectures use the dot-product kernels' scalar paths
#endif

namespace peft4j {

constexpr int64_t kQuadMinRowsF32 = 5;    // from this many rows on the quad kernel takes a float32 base product
constexpr int64_t kQuadMinRowsBf16 = 5;   // ... and a bfloat16 one (VDPBF16PS)
constexpr int64_t kQuadAhead = 1024;      // prefetch distance in each row of W, bytes

// x[M, K] (M <= 16) -> xq for the quad kernels: per group g of E columns (E = 4 float32, 8 bfloat16) and block b of
// 4 rows, one 64-byte vector whose 32-bit lane 4i + q holds row 4b + i's column(s) of step q: float32
// x[4b + i, 4g + q], bfloat16 the pair x[4b + i, 8g + 2q .. 8g + 2q + 1]. Rows past M and columns past K are zero.
template <typename T>
inline void pack_x_quads(const T* x, int64_t M, int64_t K, T* xq) {
    constexpr int64_t E = sizeof(T) == 4 ? 4 : 8;  // columns per group
    constexpr int64_t C = E / 4;                   // columns per lane
    const int64_t MB = (M + 3) / 4, G = (K + E - 1) / E;
    std::memset(xq, 0, sizeof(T) * (size_t) (G * MB * 16 * C));
    for (int64_t m = 0; m < M; m++) {
        const int64_t b = m / 4, i = m % 4;
        for (int64_t k = 0; k < K; k++) {
            const int64_t g = k / E, q = (k % E) / C, c = k % C;
            xq[((g * MB + b) * 16 + 4 * i + q) * C + c] = x[m * K + k];
        }
    }
}

#if defined(__x86_64__)
// Prefetches the line kQuadAhead bytes past offset `off` of each of a block's NB rows (row j at base + j·row_bytes),
// continuing into the next block's row j (NB rows on) past the row's end, never past row rows_left - 1.
template <int NB>
inline void quad_prefetch(const char* base, int64_t row_bytes, int64_t off, int64_t rows_left) {
    int64_t o = off + kQuadAhead, skip = 0;
    if (o >= row_bytes) {
        o -= row_bytes;
        skip = NB;
    }
    for (int j = 0; j < NB; j++)
        if (skip + j < rows_left) _mm_prefetch(base + (skip + j) * row_bytes + o, _MM_HINT_T0);
}

// the accumulators of features n .. n + nb - 1 (acc[b·NB + j]: lanes 4i .. 4i + 3 summed are row 4b + i) into
// out[m, j], m < M
template <int MB, int NB>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
inline void quad_store(const __m512* acc, int nb, int64_t M, float* out, int64_t ldo) {
    for (int b = 0; b < MB; b++) {
        for (int j = 0; j < nb; j++) {
            alignas(64) float t[16];
            _mm512_store_ps(t, acc[b * NB + j]);
            for (int i = 0; i < 4 && 4 * b + i < M; i++)
                out[(4 * b + i) * ldo + j] = (t[4 * i] + t[4 * i + 1]) + (t[4 * i + 2] + t[4 * i + 3]);
        }
    }
}

// one group: acc[b·NB + j] += xg's vector b · wv[j] (32-bit lanes: 1 float32 or a bf16 pair each)
template <int MB, int NB, typename T>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
inline void quad_step(const T* xg, const __m512i* wv, __m512* acc) {
    for (int b = 0; b < MB; b++) {
        const __m512i xv = _mm512_loadu_si512((const void*) (xg + b * 64 / (int64_t) sizeof(T)));
        for (int j = 0; j < NB; j++) {
            if constexpr (sizeof(T) == 4)
                acc[b * NB + j] = _mm512_fmadd_ps(_mm512_castsi512_ps(xv), _mm512_castsi512_ps(wv[j]), acc[b * NB + j]);
            else acc[b * NB + j] = _mm512_dpbf16_ps(acc[b * NB + j], (__m512bh) xv, (__m512bh) wv[j]);
        }
    }
}

// out[m, n - n0] (row stride ldo) = x[m, :K] · W[n, :K], m < M <= 4·MB, n0 <= n < n1, xq from pack_x_quads; float32
// (FMA) or bfloat16 (VDPBF16PS; the float32 instantiations, run on AVX-512 without BF16 too, hold no BF16
// instruction: quad_step's one is behind `if constexpr`). NB features at a time: each 16-byte piece of their rows is broadcast to the four
// 128-bit lanes once and multiplied against the MB vectors of xq for that group.
// side (optional: lines of other data the caller reads next, peft4j_lora_linear.h's SidePrefetch) is prefetched
// spread evenly over the blocks.
template <int MB, int NB, typename T, typename Side>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
inline void quad_rows(const T* xq, int64_t M, const T* W, int64_t n0, int64_t n1, int64_t K, float* out, int64_t ldo,
                      Side* side) {
    const int64_t blocks = (n1 - n0 + NB - 1) / NB;
    const int64_t side_per_block = side && blocks > 0 ? (side->lines + blocks - 1) / blocks : 0;
    constexpr bool f32 = sizeof(T) == 4;
    constexpr int64_t E = f32 ? 4 : 8;
    const int64_t G = K / E, rest = K % E;
    const int64_t row_bytes = K * (int64_t) sizeof(T);
    for (int64_t n = n0; n < n1; n += NB) {
        const int nb = (int) std::min<int64_t>(NB, n1 - n);
        if (side_per_block) side->next(side_per_block);
        // a partial block repeats its last row in the unused accumulators (read, never stored)
        const T* w[NB];
        for (int j = 0; j < NB; j++) w[j] = W + (n + std::min(j, nb - 1)) * K;
        __m512 acc[MB * NB];
        for (int q = 0; q < MB * NB; q++) acc[q] = _mm512_setzero_ps();
        for (int64_t g = 0; g < G; g++) {
            if ((g & 3) == 0) quad_prefetch<NB>((const char*) (W + n * K), row_bytes, g * 16, n1 - n);
            __m512i wv[NB];
            for (int j = 0; j < NB; j++) wv[j] = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i*) (w[j] + g * E)));
            quad_step<MB, NB, T>(xq + g * MB * 64 / (int64_t) sizeof(T), wv, acc);
        }
        if (rest) {  // the last columns, the rest of the piece zero in W's broadcast as in xq
            const __mmask8 mask = (__mmask8) ((1u << rest) - 1u);
            __m512i wv[NB];
            for (int j = 0; j < NB; j++) {
                const __m128i piece = f32 ? _mm_castps_si128(_mm_maskz_loadu_ps(mask, (const float*) (w[j] + G * E)))
                                          : _mm_maskz_loadu_epi16(mask, w[j] + G * E);
                wv[j] = _mm512_broadcast_i32x4(piece);
            }
            quad_step<MB, NB, T>(xq + G * MB * 64 / (int64_t) sizeof(T), wv, acc);
        }
        quad_store<MB, NB>(acc, nb, M, out + (n - n0), ldo);
    }
}

// dispatch on M: MB blocks of 4 rows, NB features (about 16 accumulators)
template <typename T, typename Side>
inline void quad_rows_any(const T* xq, int64_t M, const T* W, int64_t n0, int64_t n1, int64_t K, float* out,
                          int64_t ldo, Side* side) {
    switch ((M + 3) / 4) {
        case 1: quad_rows<1, 12>(xq, M, W, n0, n1, K, out, ldo, side); break;
        case 2: quad_rows<2, 8>(xq, M, W, n0, n1, K, out, ldo, side); break;
        case 3: quad_rows<3, 5>(xq, M, W, n0, n1, K, out, ldo, side); break;
        default: quad_rows<4, 4>(xq, M, W, n0, n1, K, out, ldo, side); break;
    }
}
#endif

}  // namespace peft4j
