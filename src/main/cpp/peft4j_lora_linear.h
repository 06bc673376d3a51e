// Fused adapted Linear for decode-sized batches (small M):
//
//   y[M,N] = x[M,K]·W[N,K]ᵀ + bias[N] + Σ_a s_a · (x·A_aᵀ)[M,r_a] · B_a[N,r_a]ᵀ
//
// PEFT's LoRA layout (A: [r, in], B: [out, r]). For small M the base GEMM is a matrix-vector product bound
// by memory bandwidth; libtorch's generic GEMM reaches about a quarter of it there. This kernel streams W
// once, row block by row block, and finishes each output element in the same pass (base dot product,
// bias, and the rank-r LoRA expand), so the adapter costs no extra pass over y.
//
// Every product is "rows of X dot rows of Y" with float32 accumulation: base (X = x, Y = W, length K),
// shrink (X = x, Y = A_a, length K) and expand (X = t_a, Y = B_a, length r). Y may be float32 or bfloat16;
// X is always float32 (bfloat16 activations are widened once into scratch).
#pragma once

#include "peft4j_axpy.h"
#include "peft4j_cpu.h"
#include "peft4j_smallm.h"
#include "peft4j_threads.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#if defined(__x86_64__)
#include <immintrin.h>  // x86 SIMD paths only; other architectures build the scalar ones
#endif
#include <memory>
#include <type_traits>
#include <vector>

namespace peft4j {

enum DType : int { DT_F32 = 0, DT_BF16 = 1 };

// The fused decode path handles up to this many rows per call; larger batches go through libtorch's GEMM.
constexpr int64_t kMaxDecodeRows = 16;

struct LoraSlot {
    const void* A;  // [r, K], the layer's dtype
    const void* B;  // [N, r], the layer's dtype
    int32_t r;
    float scale;
};

// Per-layer state held natively: the base weight and the active adapters, set when activation changes.
struct AdaptedLinear {
    int dtype;
    int64_t K, N;
    const void* W;     // [N, K]
    const void* bias;  // [N] or null
    std::vector<LoraSlot> adapters;
    int64_t total_rank = 0;
    // IA3, folded (product of the active vectors, float32): x scaled on its read (K entries), the output on
    // its write (N entries); empty when not set
    std::vector<float> in_scale, out_scale;
    // DoRA, folded (m / ‖W + s·B·A‖ per output feature, float32): the output before its bias is scaled on its
    // write (N entries), y = ds ⊙ (x·Wᵀ + Σ s·(x·Aᵀ)·Bᵀ) + bias; empty when not set
    std::vector<float> dora_scale;
};

inline float load_scalar(const float* p, int64_t i) { return p[i]; }
inline float load_scalar(const uint16_t* p, int64_t i) { return bf16_to_f32(p[i]); }

// Byte ranges to bring into cache a few lines at a time while a compute-bound loop runs, so that their misses
// overlap its arithmetic: prefetching a range all at once fills the core's miss buffers and stalls the loop. With
// the T0 hint (to every level): T1 and NTA left most of a mixed batch's cost in place (a C++ timing loop of the
// mixed-batch call on this machine).
struct SidePrefetch {
    static constexpr int kMaxRanges = 64;
    const char* ptr[kMaxRanges];
    int64_t len[kMaxRanges];
    int n = 0, cur = 0;
    int64_t off = 0, lines = 0;
    void add(const void* p, int64_t bytes) {
        if (n < kMaxRanges && bytes > 0) {
            ptr[n] = (const char*) p;
            len[n++] = bytes;
            lines += (bytes + 63) / 64;
        }
    }
    void next(int64_t k) {
        for (; k > 0 && cur < n; k--) {
            __builtin_prefetch(ptr[cur] + off, 0, 3);  // prefetcht0
            off += 64;
            if (off >= len[cur]) {
                cur++;
                off = 0;
            }
        }
    }
};

// ---- scalar micro-kernel: out[m][n] = Σ_k X[m,k]·Y[n,k] ----
template <typename TY>
inline void dots_scalar(const float* X, int64_t ldx, int mb, const TY* Y, int64_t ldy, int nb, int64_t L,
                        float* out /* [mb][nb] */) {
    for (int m = 0; m < mb; m++) {
        for (int n = 0; n < nb; n++) {
            const float* xr = X + m * ldx;
            const TY* yr = Y + n * ldy;
            float acc = 0.f;
            for (int64_t k = 0; k < L; k++) acc += xr[k] * load_scalar(yr, k);
            out[m * nb + n] = acc;
        }
    }
}

#if defined(__x86_64__)
// ---- AVX-512 micro-kernel, MB x NB register block ----
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
inline __m512 load16(const uint16_t* p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*) p)), 16));
}
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
inline __m512 load16_masked(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
inline __m512 load16_masked(const uint16_t* p, __mmask16 m) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
inline float hsum16(__m512 v) {
    __m512 t = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(1, 0, 3, 2)));
    t = _mm512_add_ps(t, _mm512_shuffle_f32x4(t, t, _MM_SHUFFLE(2, 3, 0, 1)));
    __m128 s = _mm512_castps512_ps128(t);
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

template <int MB, int NB, typename TY>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
inline void dots_avx512(const float* X, int64_t ldx, const TY* Y, int64_t ldy, int64_t L, float* out) {
    __m512 acc[MB][NB];
    for (int m = 0; m < MB; m++)
        for (int n = 0; n < NB; n++) acc[m][n] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= L; k += 16) {
        __m512 yv[NB];
        for (int n = 0; n < NB; n++) yv[n] = load16(Y + n * ldy + k);
        for (int m = 0; m < MB; m++) {
            __m512 xv = _mm512_loadu_ps(X + m * ldx + k);
            for (int n = 0; n < NB; n++) acc[m][n] = _mm512_fmadd_ps(xv, yv[n], acc[m][n]);
        }
    }
    if (k < L) {
        __mmask16 mask = (__mmask16) ((1u << (L - k)) - 1u);
        __m512 yv[NB];
        for (int n = 0; n < NB; n++) yv[n] = load16_masked(Y + n * ldy + k, mask);
        for (int m = 0; m < MB; m++) {
            __m512 xv = _mm512_maskz_loadu_ps(mask, X + m * ldx + k);
            for (int n = 0; n < NB; n++) acc[m][n] = _mm512_fmadd_ps(xv, yv[n], acc[m][n]);
        }
    }
    for (int m = 0; m < MB; m++)
        for (int n = 0; n < NB; n++) out[m * NB + n] = hsum16(acc[m][n]);
}

// ---- AVX2 micro-kernel ----
__attribute__((target("avx2,fma")))
inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
__attribute__((target("avx2,fma")))
inline __m256 load8(const uint16_t* p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*) p)), 16));
}
__attribute__((target("avx2,fma")))
inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

template <int MB, int NB, typename TY>
__attribute__((target("avx2,fma")))
inline void dots_avx2(const float* X, int64_t ldx, const TY* Y, int64_t ldy, int64_t L, float* out) {
    __m256 acc[MB][NB];
    for (int m = 0; m < MB; m++)
        for (int n = 0; n < NB; n++) acc[m][n] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= L; k += 8) {
        __m256 yv[NB];
        for (int n = 0; n < NB; n++) yv[n] = load8(Y + n * ldy + k);
        for (int m = 0; m < MB; m++) {
            __m256 xv = _mm256_loadu_ps(X + m * ldx + k);
            for (int n = 0; n < NB; n++) acc[m][n] = _mm256_fmadd_ps(xv, yv[n], acc[m][n]);
        }
    }
    for (int m = 0; m < MB; m++) {
        for (int n = 0; n < NB; n++) {
            float s = hsum8(acc[m][n]);
            for (int64_t kk = k; kk < L; kk++) s += X[m * ldx + kk] * load_scalar(Y + n * ldy, kk);
            out[m * NB + n] = s;
        }
    }
}
#endif

#if defined(__x86_64__)
// ---- AVX512_BF16 micro-kernel: both operands bfloat16, VDPBF16PS (pairs of bf16 products summed into float32
// lanes). Products of two bf16 are exact in float32; the accumulation is float32 (VDPBF16PS treats denormal
// inputs as zero and flushes denormal results, which changes nothing at the tolerances bf16 data is held to).
#define PEFT4J_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
PEFT4J_BF16_TARGET
inline __m512bh load32bh(const uint16_t* p) { return (__m512bh) _mm512_loadu_si512((const void*) p); }
PEFT4J_BF16_TARGET
inline __m512bh load32bh_masked(const uint16_t* p, __mmask32 m) { return (__m512bh) _mm512_maskz_loadu_epi16(m, p); }

#endif

#if defined(__x86_64__)
// One MB x NB register block: P[m][n] (16 float32 lanes each, summed at the end) += X[m, 0:L] · Y[n, 0:L], P
// zeroed first when `first`; meanwhile one line of each of pf_rows rows (pf_ld bytes apart) is prefetched per
// 32 columns, up to pf_len bytes of each.
template <int MB, int NB>
PEFT4J_BF16_TARGET
inline void dots_bf16dp_partial(const uint16_t* X, int64_t ldx, const uint16_t* Y, int64_t ldy, int64_t L, __m512* P,
                                bool first, const char* pf, int64_t pf_ld, int pf_rows, int64_t pf_len) {
    __m512 acc[MB][NB];
    for (int m = 0; m < MB; m++)
        for (int n = 0; n < NB; n++) acc[m][n] = first ? _mm512_setzero_ps() : P[m * NB + n];
    int64_t k = 0;
    for (; k + 32 <= L; k += 32) {
        if (k * 2 < pf_len)
            for (int j = 0; j < pf_rows; j++) _mm_prefetch(pf + j * pf_ld + k * 2, _MM_HINT_T0);
        __m512bh yv[NB];
        for (int n = 0; n < NB; n++) yv[n] = load32bh(Y + n * ldy + k);
        for (int m = 0; m < MB; m++) {
            __m512bh xv = load32bh(X + m * ldx + k);
            for (int n = 0; n < NB; n++) acc[m][n] = _mm512_dpbf16_ps(acc[m][n], xv, yv[n]);
        }
    }
    if (k < L) {
        __mmask32 mask = (__mmask32) ((1ull << (L - k)) - 1ull);
        __m512bh yv[NB];
        for (int n = 0; n < NB; n++) yv[n] = load32bh_masked(Y + n * ldy + k, mask);
        for (int m = 0; m < MB; m++) {
            __m512bh xv = load32bh_masked(X + m * ldx + k, mask);
            for (int n = 0; n < NB; n++) acc[m][n] = _mm512_dpbf16_ps(acc[m][n], xv, yv[n]);
        }
    }
    for (int m = 0; m < MB; m++)
        for (int n = 0; n < NB; n++) P[m * NB + n] = acc[m][n];
}

// out[m][n] = X[m, 0:L] · Y[n, 0:L] for an MB x NB register block, both bfloat16 (VDPBF16PS, float32 sums)
template <int MB, int NB>
PEFT4J_BF16_TARGET
inline void dots_bf16dp(const uint16_t* X, int64_t ldx, const uint16_t* Y, int64_t ldy, int64_t L, float* out) {
    __m512 P[MB * NB];
    dots_bf16dp_partial<MB, NB>(X, ldx, Y, ldy, L, P, true, nullptr, 0, 0, 0);
    for (int q = 0; q < MB * NB; q++) out[q] = hsum16(P[q]);
}

// Reads every cache line of [p, p + bytes) once, in address order, with plain loads whose results are folded into
// one register and stored to a volatile (so they are not dropped). The decode kernel at 2-4 rows reads each
// register block's rows of W so (one contiguous run: the block's rows are adjacent) before multiplying them; see
// rows_times_rowsT_bf16 for why.
PEFT4J_BF16_TARGET
inline void touch_lines(const void* p, int64_t bytes) {
    if (bytes < 64) return;
    const char* c = (const char*) p;
    __m512i s = _mm512_setzero_si512();
    int64_t i = 0;
    for (; i + 256 <= bytes; i += 256) {
        s = _mm512_xor_si512(s, _mm512_loadu_si512(c + i));
        s = _mm512_xor_si512(s, _mm512_loadu_si512(c + i + 64));
        s = _mm512_xor_si512(s, _mm512_loadu_si512(c + i + 128));
        s = _mm512_xor_si512(s, _mm512_loadu_si512(c + i + 192));
    }
    for (; i + 64 <= bytes; i += 64) s = _mm512_xor_si512(s, _mm512_loadu_si512(c + i));
    if (i < bytes) s = _mm512_xor_si512(s, _mm512_loadu_si512(c + bytes - 64));  // the last, partial line
    volatile int sink = _mm_cvtsi128_si32(_mm512_castsi512_si128(s));
    (void) sink;
}
#endif

// Scalar reference of the bf16 x bf16 dot products (float32 accumulation).
inline void dots_bf16_scalar(const uint16_t* X, int64_t ldx, int mb, const uint16_t* Y, int64_t ldy, int nb, int64_t L,
                             float* out) {
    for (int m = 0; m < mb; m++) {
        for (int n = 0; n < nb; n++) {
            const uint16_t* xr = X + m * ldx;
            const uint16_t* yr = Y + n * ldy;
            float acc = 0.f;
            for (int64_t k = 0; k < L; k++) acc += bf16_to_f32(xr[k]) * bf16_to_f32(yr[k]);
            out[m * nb + n] = acc;
        }
    }
}

// out[m, n - n0] (row stride ldo) = X[m, :L] · Y[n, :L], both bfloat16, for m < M, n0 <= n < n1. Uses VDPBF16PS
// on ISA_AVX512_BF16; below that the float32 paths after widening (callers on lower ISAs normally widen once
// themselves and call rows_times_rowsT).
inline void rows_times_rowsT_bf16(int isa, const uint16_t* X, int64_t M, const uint16_t* Y, int64_t n0, int64_t n1,
                                  int64_t L, float* out, int64_t ldo, SidePrefetch* side = nullptr) {
    // 3-4 rows of X: 6 rows of Y per register block (4 x 6 = 24 accumulators), so each X vector loaded serves 6
    // products instead of 4. At 1-2 rows the X loads saved are too few to pay for the wider block, so those keep 4
    // (benchmarks/native/ab.sh decode with MS=1,2,3,4 compares another choice with this one).
    const int64_t nstep = M == 3 || M == 4 ? 6 : 4;
    float blk[24];
#if defined(__x86_64__)
    // 2-4 rows (the decode kernel's base product at those sizes, from 5 on the quad kernel; the shrinks' other row counts multiply straight
    // from memory): each register block's rows of Y (nstep rows, one contiguous run) are first read through once in
    // address order (touch_lines), then multiplied from L1 / L2. Streamed straight into the products, the block
    // would be nstep concurrent streams 8 KiB apart whose loads also queue behind the VDPBF16PS waiting on earlier
    // ones, so 4 rows would take about (1-row time) + (time of the products); read first as one run, the lines come
    // at the rate a plain read of W reaches. At one row the products are few and reading first costs more than it
    // hides, so one row streams straight into them (benchmarks/native/ab.sh decode, MS=1,2,3,4, compares variants).
    const bool touch = isa >= ISA_AVX512_BF16 && M >= 2 && M <= 4;
#endif
    const int64_t calls = ((n1 - n0 + nstep - 1) / nstep) * ((M + 3) / 4);
    const int64_t side_per_call = side && calls > 0 ? (side->lines + calls - 1) / calls : 0;
    for (int64_t n = n0; n < n1; n += nstep) {
        int nb = (int) std::min<int64_t>(nstep, n1 - n);
        for (int64_t m = 0; m < M; m += 4) {
            int mb = (int) std::min<int64_t>(4, M - m);
            if (side_per_call) side->next(side_per_call);
            const uint16_t* Xm = X + m * L;
            const uint16_t* Yn = Y + n * L;
#if defined(__x86_64__)
            if (touch && m == 0) touch_lines(Yn, nb * L * (int64_t) sizeof(uint16_t));
            if (isa >= ISA_AVX512_BF16) {
                switch (mb * 8 + nb) {
#define PEFT4J_DP_CASE(MBV, NBV) case (MBV) * 8 + (NBV): dots_bf16dp<MBV, NBV>(Xm, L, Yn, L, L, blk); break;
                    PEFT4J_DP_CASE(1, 1) PEFT4J_DP_CASE(1, 2) PEFT4J_DP_CASE(1, 3) PEFT4J_DP_CASE(1, 4)
                    PEFT4J_DP_CASE(2, 1) PEFT4J_DP_CASE(2, 2) PEFT4J_DP_CASE(2, 3) PEFT4J_DP_CASE(2, 4)
                    PEFT4J_DP_CASE(3, 1) PEFT4J_DP_CASE(3, 2) PEFT4J_DP_CASE(3, 3) PEFT4J_DP_CASE(3, 4)
                    PEFT4J_DP_CASE(4, 1) PEFT4J_DP_CASE(4, 2) PEFT4J_DP_CASE(4, 3) PEFT4J_DP_CASE(4, 4)
                    PEFT4J_DP_CASE(3, 5) PEFT4J_DP_CASE(3, 6) PEFT4J_DP_CASE(4, 5) PEFT4J_DP_CASE(4, 6)
#undef PEFT4J_DP_CASE
                    default: dots_bf16_scalar(Xm, L, mb, Yn, L, nb, L, blk); break;
                }
            } else
#endif
            {
                dots_bf16_scalar(Xm, L, mb, Yn, L, nb, L, blk);
            }
            for (int i = 0; i < mb; i++)
                for (int j = 0; j < nb; j++) out[(m + i) * ldo + (n - n0 + j)] = blk[i * nb + j];
        }
    }
}

// out[mb][nb] = X[0:mb] · Y[0:nb]ᵀ over length L, on the active ISA. mb <= 4, nb <= 4.
template <typename TY>
inline void dots(int isa, const float* X, int64_t ldx, int mb, const TY* Y, int64_t ldy, int nb, int64_t L,
                 float* out) {
#if defined(__x86_64__)
#define PEFT4J_DOTS_CASE(MBV, NBV)                                                   \
    case (MBV) * 8 + (NBV):                                                          \
        if (isa >= ISA_AVX512) dots_avx512<MBV, NBV>(X, ldx, Y, ldy, L, out);        \
        else dots_avx2<MBV, NBV>(X, ldx, Y, ldy, L, out);                            \
        return;
    if (isa >= ISA_AVX2) {
        switch (mb * 8 + nb) {
            PEFT4J_DOTS_CASE(1, 1) PEFT4J_DOTS_CASE(1, 2) PEFT4J_DOTS_CASE(1, 3) PEFT4J_DOTS_CASE(1, 4)
            PEFT4J_DOTS_CASE(2, 1) PEFT4J_DOTS_CASE(2, 2) PEFT4J_DOTS_CASE(2, 3) PEFT4J_DOTS_CASE(2, 4)
            PEFT4J_DOTS_CASE(3, 1) PEFT4J_DOTS_CASE(3, 2) PEFT4J_DOTS_CASE(3, 3) PEFT4J_DOTS_CASE(3, 4)
            PEFT4J_DOTS_CASE(4, 1) PEFT4J_DOTS_CASE(4, 2) PEFT4J_DOTS_CASE(4, 3) PEFT4J_DOTS_CASE(4, 4)
            default: break;
        }
    }
#undef PEFT4J_DOTS_CASE
#endif
    dots_scalar(X, ldx, mb, Y, ldy, nb, L, out);
}

// out[m, n - n0] (row stride ldo) = X[m, :L] · Y[n, :L] for m < M, n0 <= n < n1; blocked 4 x 4.
template <typename TY>
inline void rows_times_rowsT(int isa, const float* X, int64_t M, const TY* Y, int64_t n0, int64_t n1, int64_t L,
                             float* out, int64_t ldo, SidePrefetch* side = nullptr) {
    float blk[16];
    const int64_t calls = ((n1 - n0 + 3) / 4) * ((M + 3) / 4);
    const int64_t side_per_call = side && calls > 0 ? (side->lines + calls - 1) / calls : 0;
    for (int64_t n = n0; n < n1; n += 4) {
        int nb = (int) std::min<int64_t>(4, n1 - n);
        for (int64_t m = 0; m < M; m += 4) {
            int mb = (int) std::min<int64_t>(4, M - m);
            if (side_per_call) side->next(side_per_call);
            dots(isa, X + m * L, L, mb, Y + n * L, L, nb, L, blk);
            for (int i = 0; i < mb; i++)
                for (int j = 0; j < nb; j++) out[(m + i) * ldo + (n - n0 + j)] = blk[i * nb + j];
        }
    }
}

#if defined(__x86_64__)
// a[i] (i < 16, 16 lanes each) -> a[j] holding lane j of every a[i], i.e. a 16 x 16 float32 block transposed in
// registers (unpack ps, unpack pd, two rounds of 128-bit lane shuffles).
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
inline void transpose16x16_avx512(__m512 a[16]) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(a[i], a[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(a[i], a[i + 1]);
    }
    for (int g = 0; g < 16; g += 4) {  // rows g..g+3: a[g + c] holds column 4L + c of those rows in 128-bit lane L
        a[g + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[g]), _mm512_castps_pd(t[g + 2])));
        a[g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[g]), _mm512_castps_pd(t[g + 2])));
        a[g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[g + 1]), _mm512_castps_pd(t[g + 3])));
        a[g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[g + 1]), _mm512_castps_pd(t[g + 3])));
    }
    for (int c = 0; c < 4; c++) {
        const __m512 xlo = _mm512_shuffle_f32x4(a[c], a[4 + c], _MM_SHUFFLE(1, 0, 1, 0));
        const __m512 xhi = _mm512_shuffle_f32x4(a[c], a[4 + c], _MM_SHUFFLE(3, 2, 3, 2));
        const __m512 ylo = _mm512_shuffle_f32x4(a[8 + c], a[12 + c], _MM_SHUFFLE(1, 0, 1, 0));
        const __m512 yhi = _mm512_shuffle_f32x4(a[8 + c], a[12 + c], _MM_SHUFFLE(3, 2, 3, 2));
        t[0 + c] = _mm512_shuffle_f32x4(xlo, ylo, _MM_SHUFFLE(2, 0, 2, 0));
        t[4 + c] = _mm512_shuffle_f32x4(xlo, ylo, _MM_SHUFFLE(3, 1, 3, 1));
        t[8 + c] = _mm512_shuffle_f32x4(xhi, yhi, _MM_SHUFFLE(2, 0, 2, 0));
        t[12 + c] = _mm512_shuffle_f32x4(xhi, yhi, _MM_SHUFFLE(3, 1, 3, 1));
    }
    for (int j = 0; j < 16; j++) a[j] = t[j];
}

// The LoRA expand into a block of output features: acc[row[i]][n - n0] += Σ_j T[i, j]·B[n, j] for i < rows,
// n0 <= n < n1 (at most 64), j < r; T float32 [rows, r] (scaling folded in), B [N, r] in the layer's dtype,
// acc rows nn apart. B's rows are r elements long (16 at r = 16), so a dot product per output (one horizontal
// sum each) spends more on the sum than on the products; instead 16 rows of B are transposed in registers
// into 16 vectors of 16 output features and each row of T adds Σ_j T[i, j]·Bᵀ[j] to its 16 outputs at once.
template <typename TY>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
inline void expand_block_avx512(const float* T, int64_t rows, const int32_t* row, const TY* B, int64_t r,
                                int64_t n0, int64_t n1, float* acc, int64_t nn) {
    for (int64_t n = n0; n < n1; n += 16) {
        const int64_t nb = std::min<int64_t>(16, n1 - n);
        const __mmask16 mn = lanes16(nb);
        for (int64_t j0 = 0; j0 < r; j0 += 16) {
            const int64_t jb = std::min<int64_t>(16, r - j0);
            const __mmask16 mj = lanes16(jb);
            __m512 bt[16];
            for (int i = 0; i < 16; i++) bt[i] = i < nb ? load16_masked(B + (n + i) * r + j0, mj) : _mm512_setzero_ps();
            transpose16x16_avx512(bt);  // bt[j]: B[n .. n + 15, j0 + j]
            for (int64_t i = 0; i < rows; i++) {
                float* dst = acc + (row ? row[i] : i) * nn + (n - n0);
                const float* ti = T + i * r + j0;
                __m512 v = _mm512_maskz_loadu_ps(mn, dst);
                for (int64_t j = 0; j < jb; j++) v = _mm512_fmadd_ps(_mm512_set1_ps(ti[j]), bt[j], v);
                _mm512_mask_storeu_ps(dst, mn, v);
            }
        }
    }
}
#endif

inline void store_row(float* y, int64_t i, float v) { y[i] = v; }
inline void store_row(uint16_t* y, int64_t i, float v) { y[i] = f32_to_bf16(v); }

#if defined(__x86_64__)
// float32 -> bf16, 16 lanes, with VCVTNEPS2BF16: round to nearest even and NaN kept quiet (top half | 0x40), as
// f32_to_bf16. The instruction flushes denormal inputs to zero, so a vector holding one (rare) takes the
// emulation: the result is f32_to_bf16's bit for bit.
PEFT4J_BF16_TARGET
inline __m256i f32x16_to_bf16_ne(__m512 v) {
    if (__builtin_expect(_mm512_fpclass_ps_mask(v, 0x20) != 0, 0)) return f32x16_to_bf16_avx512(v);
    return (__m256i) _mm512_cvtneps_pbh(v);
}

// y[0:n] = (acc * dora_scale + bias) * out_scale (each optional), rounded once into y
template <typename TY>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
inline void finish_row_avx512(TY* y, const float* acc, int64_t n, const TY* bias, const float* os,
                              const float* ds) {
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = lanes16(n - i);
        __m512 v = _mm512_maskz_loadu_ps(m, acc + i);
        if (ds) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, ds + i));
        if (bias) v = _mm512_add_ps(v, load16_masked(bias + i, m));
        if (os) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, os + i));
        if (std::is_same<TY, float>::value) _mm512_mask_storeu_ps((float*) y + i, m, v);
        else _mm256_mask_storeu_epi16((uint16_t*) y + i, m, f32x16_to_bf16_avx512(v));
    }
}

PEFT4J_BF16_TARGET
inline void finish_row_bf16ne(uint16_t* y, const float* acc, int64_t n, const uint16_t* bias, const float* os,
                              const float* ds) {
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = lanes16(n - i);
        __m512 v = _mm512_maskz_loadu_ps(m, acc + i);
        if (ds) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, ds + i));
        if (bias) v = _mm512_add_ps(v, load16_masked(bias + i, m));
        if (os) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, os + i));
        _mm256_mask_storeu_epi16(y + i, m, f32x16_to_bf16_ne(v));
    }
}
#endif

template <typename TY>
inline void finish_row(int isa, TY* y, const float* acc, int64_t n, const TY* bias, const float* os,
                       const float* ds = nullptr) {
#if defined(__x86_64__)
    if (isa >= ISA_AVX512_BF16 && !std::is_same<TY, float>::value) {
        finish_row_bf16ne((uint16_t*) y, acc, n, (const uint16_t*) bias, os, ds);
        return;
    }
    if (isa >= ISA_AVX512) {
        finish_row_avx512<TY>(y, acc, n, bias, os, ds);
        return;
    }
#endif
    for (int64_t j = 0; j < n; j++) {
        float v = acc[j];
        if (ds) v *= ds[j];
        if (bias) v += load_scalar(bias, j);
        if (os) v *= os[j];
        store_row(y, j, v);
    }
}

// Scratch of one adapted Linear's forward: x widened, packed or gathered, and the shrunk activations. Reused across
// calls (the callers hold them thread-local), so a decode step allocates nothing.
struct AdaptedLinearScratch {
    std::vector<float> xbuf, tbuf, gbuf, xqfbuf;
    std::vector<uint16_t> xhbuf, ghbuf, xqhbuf;
    std::vector<int64_t> offv, row_start;
};

// One adapted Linear's forward over x, split into tasks for a parallel region: n_shrink() shrink tasks (x·A_aᵀ),
// then n_blocks() blocks of 64 output features (base products, expand, bias, store). A block waits for every
// shrink of its layer (await) before its expand. The constructor prepares x (widened, IA3-scaled, packed, a mixed
// batch's rows gathered) into `scratch`, which must outlive the run. TY: the layer's storage type (float or uint16_t
// for bf16); x and y have the same type. row_slot: null (every adapter on every row) or M entries, row m getting
// adapter row_slot[m] only (-1: none).
template <typename TY>
struct AdaptedLinearRun {
    static constexpr int64_t kBlock = 64;
    static constexpr int64_t kShrinkRows = 8;
    struct ShrinkTask { int a; int64_t j0; };

    const AdaptedLinear& L;
    TY* y;
    const int64_t M;
    const int isa;
    const int64_t K, N;
    const TY* W;
    const TY* bias;
    const float* out_scale;
    const float* dora_scale;
    const bool dp;
    const float* xf = nullptr;
    const uint16_t* xh = nullptr;
    const uint16_t* xh_g = nullptr;
    const float* xf_g = nullptr;
    const float* xqf = nullptr;
    const uint16_t* xqh = nullptr;
    int n_ad;
    int32_t rows_of[16 * 64];  // used only with row_slot; n_ad checked below
    int32_t n_rows[64];
    bool mixed;
    float* t;
    int64_t offs[64];
    const int64_t* offv;
    const int64_t* row_start;
    ShrinkTask stasks[64 * 4 + 256];
    int64_t n_stasks = 0;
    std::vector<ShrinkTask> more_stasks;  // past the inline array (very high ranks)

    AdaptedLinearRun(const AdaptedLinear& layer, TY* y_, const TY* x, int64_t M_, const int32_t* row_slot,
                     AdaptedLinearScratch& s)
        : L(layer), y(y_), M(M_), isa(active_isa()), K(layer.K), N(layer.N), W((const TY*) layer.W),
          bias((const TY*) layer.bias), out_scale(layer.out_scale.empty() ? nullptr : layer.out_scale.data()),
          dora_scale(layer.dora_scale.empty() ? nullptr : layer.dora_scale.data()),
          dp(!std::is_same<TY, float>::value && isa >= ISA_AVX512_BF16) {
        const float* in_scale = L.in_scale.empty() ? nullptr : L.in_scale.data();
        // float32 copies of x and the shrunk activations t_a = x·A_aᵀ. bfloat16 on ISA_AVX512_BF16: the base and the
        // shrink multiply bf16 x (IA3-scaled and rounded to bf16 when set) by bf16 W and A as stored (VDPBF16PS), so x
        // stays bf16 (xh) and no float32 copy is made.
        if (dp) {
            xh = (const uint16_t*) x;
            if (in_scale) {
                s.xhbuf.resize((size_t) (M * K));
                for (int64_t i = 0; i < M * K; i++)
                    s.xhbuf[(size_t) i] = f32_to_bf16(load_scalar(x, i) * in_scale[i % K]);
                xh = s.xhbuf.data();
            }
        } else if (std::is_same<TY, float>::value && in_scale == nullptr) {
            xf = (const float*) x;
        } else {
            s.xbuf.resize((size_t) (M * K));
            for (int64_t i = 0; i < M * K; i++) {
                float v = load_scalar(x, i);
                // IA3 input scaling rounded to the activation dtype, as the composed x.mul(l).to(x.dtype)
                if (in_scale) {
                    v *= in_scale[i % K];
                    if (!std::is_same<TY, float>::value) v = bf16_to_f32(f32_to_bf16(v));
                }
                s.xbuf[(size_t) i] = v;
            }
            xf = s.xbuf.data();
        }
        // rows of each adapter: all of them, or those row_slot maps to it
        n_ad = (int) L.adapters.size();
        mixed = row_slot != nullptr && n_ad <= 64;
        if (mixed) {
            for (int a = 0; a < n_ad; a++) n_rows[a] = 0;
            for (int64_t m = 0; m < M; m++) {
                int32_t sl = row_slot[m];
                if (sl >= 0 && sl < n_ad) rows_of[sl * 16 + n_rows[sl]++] = (int32_t) m;
            }
        }
        s.tbuf.resize((size_t) std::max<int64_t>(1, M * L.total_rank));
        t = s.tbuf.data();
        // shrink: each adapter's [m_a, r_a] block, laid out one after another; tasks of (adapter, 8 rows of A) on
        // the pool, so a mixed batch's adapters (each A read once) are shrunk in parallel, not on the caller alone
        s.offv.assign((size_t) n_ad + 1, 0);
        for (int a = 0; a < n_ad; a++) {
            const int64_t ma = mixed ? n_rows[a] : M;
            s.offv[(size_t) a + 1] = s.offv[(size_t) a] + ma * L.adapters[(size_t) a].r;
            if (a < 64) offs[a] = s.offv[(size_t) a];
        }
        offv = s.offv.data();
        const int64_t cap = (int64_t) (sizeof(stasks) / sizeof(stasks[0]));
        for (int a = 0; a < n_ad; a++) {
            if ((mixed ? n_rows[a] : M) == 0) continue;
            for (int64_t j0 = 0; j0 < L.adapters[(size_t) a].r; j0 += kShrinkRows) {
                if (n_stasks < cap) stasks[n_stasks] = {a, j0};
                else more_stasks.push_back({a, j0});
                n_stasks++;
            }
        }
        // a mixed batch's rows gathered once, adapter after adapter (row_start[a] rows before adapter a's)
        s.row_start.assign((size_t) n_ad + 1, 0);
        if (mixed) {
            for (int a = 0; a < n_ad; a++) s.row_start[(size_t) a + 1] = s.row_start[(size_t) a] + n_rows[a];
            const int64_t g = s.row_start[(size_t) n_ad];
            if (dp) s.ghbuf.resize((size_t) (g * K)); else s.gbuf.resize((size_t) (g * K));
            for (int a = 0; a < n_ad; a++)
                for (int64_t i = 0; i < n_rows[a]; i++) {
                    const int64_t src = rows_of[a * 16 + i], dst = s.row_start[(size_t) a] + i;
                    if (dp) std::memcpy(s.ghbuf.data() + dst * K, xh + src * K, sizeof(uint16_t) * K);
                    else std::memcpy(s.gbuf.data() + dst * K, xf + src * K, sizeof(float) * K);
                }
        }
        row_start = s.row_start.data();
        xh_g = mixed && dp ? s.ghbuf.data() : xh;
        xf_g = mixed && !dp ? s.gbuf.data() : xf;
#if defined(__x86_64__)
        // 5-16 rows on AVX-512: the quad kernel (peft4j_smallm.h) over x packed once
        if (dp && M >= kQuadMinRowsBf16) {
            s.xqhbuf.resize((size_t) ((M + 3) / 4 * ((K + 7) / 8) * 32));
            pack_x_quads(xh, M, K, s.xqhbuf.data());
            xqh = s.xqhbuf.data();
        } else if (std::is_same<TY, float>::value && isa >= ISA_AVX512 && M >= kQuadMinRowsF32) {
            s.xqfbuf.resize((size_t) ((M + 3) / 4 * ((K + 3) / 4) * 16));
            pack_x_quads((const float*) xf, M, K, s.xqfbuf.data());
            xqf = s.xqfbuf.data();
        }
#endif
    }

    int64_t n_shrink() const { return n_stasks; }
    int64_t n_blocks() const { return (N + kBlock - 1) / kBlock; }

    void shrink(int64_t ti) {
        const ShrinkTask st = ti < (int64_t) (sizeof(stasks) / sizeof(stasks[0]))
                                  ? stasks[ti]
                                  : more_stasks[(size_t) (ti - (int64_t) (sizeof(stasks) / sizeof(stasks[0])))];
        const int a = st.a;
        const LoraSlot& ad = L.adapters[(size_t) a];
        const int64_t j0 = st.j0, j1 = std::min<int64_t>(ad.r, j0 + kShrinkRows);
        const int64_t ma = mixed ? n_rows[a] : M;
        const int64_t r0 = mixed ? row_start[a] : 0;
        float* ta = t + offv[a];
        if (dp) rows_times_rowsT_bf16(isa, xh_g + r0 * K, ma, (const uint16_t*) ad.A, j0, j1, K, ta + j0, ad.r);
        else rows_times_rowsT<TY>(isa, xf_g + r0 * K, ma, (const TY*) ad.A, j0, j1, K, ta + j0, ad.r);
        // fold the scaling into t so the expand is a plain dot product
        for (int64_t i = 0; i < ma; i++)
            for (int64_t j = j0; j < j1; j++) ta[i * ad.r + j] *= ad.scale;
    }

    // main pass over one block of output features: base dot products, bias, LoRA expand, store
    template <typename Await>
    void block(int64_t b, const Await& await_shrink) {
        const int64_t n0 = b * kBlock, n1 = std::min(N, n0 + kBlock);
        const int64_t nn = n1 - n0;
        float acc[16 * 64];  // M <= kMaxDecodeRows rows x up to 64 features
        float part[16 * 64];
        // With several adapters, the rows of B the expand below reads (nn·r elements per adapter, contiguous) are
        // prefetched a few lines per register block while the base products run (SidePrefetch): a mixed batch's
        // 8 adapters' are 8 short streams that otherwise stall the expand, and fetched all at once before the
        // products they would stall those instead (MixedBatchBench, paired mixed / one with weights=4, measures
        // what is left of the gap). One adapter's single stream the hardware prefetcher follows, so it is not
        // prefetched: that costs a few per cent at one row.
        SidePrefetch side;
        for (int a = 0; a < (n_ad > 1 ? n_ad : 0); a++) {
            if (mixed && n_rows[a] == 0) continue;
            const LoraSlot& ad = L.adapters[(size_t) a];
            side.add((const TY*) ad.B + n0 * ad.r, nn * ad.r * (int64_t) sizeof(TY));
        }
#if defined(__x86_64__)
        if (xqh) {
            quad_rows_any(xqh, M, (const uint16_t*) W, n0, n1, K, acc, nn, &side);
        } else if (xqf) {
            quad_rows_any(xqf, M, (const float*) W, n0, n1, K, acc, nn, &side);
        } else if (dp) {
            rows_times_rowsT_bf16(isa, xh, M, (const uint16_t*) W, n0, n1, K, acc, nn, &side);
        } else
#endif
            rows_times_rowsT<TY>(isa, xf, M, W, n0, n1, K, acc, nn, &side);
        await_shrink();
        int64_t off = 0;
#if defined(__x86_64__)
        if (isa >= ISA_AVX512) {
            for (int a = 0; a < n_ad; a++) {
                const LoraSlot& ad = L.adapters[(size_t) a];
                const int64_t ma = mixed ? n_rows[a] : M;
                if (ma == 0) continue;
                expand_block_avx512<TY>(t + (mixed ? offs[a] : off), ma, mixed ? rows_of + a * 16 : nullptr,
                                        (const TY*) ad.B, ad.r, n0, n1, acc, nn);
                off += M * ad.r;
            }
        } else
#endif
        for (int a = 0; a < n_ad; a++) {
            const LoraSlot& ad = L.adapters[(size_t) a];
            const TY* B = (const TY*) ad.B;
            if (mixed) {
                int64_t ma = n_rows[a];
                if (ma == 0) continue;
                rows_times_rowsT<TY>(isa, t + offs[a], ma, B, n0, n1, ad.r, part, nn);
                for (int64_t i = 0; i < ma; i++) {
                    float* dst = acc + rows_of[a * 16 + i] * nn;
                    for (int64_t j = 0; j < nn; j++) dst[j] += part[i * nn + j];
                }
            } else {
                rows_times_rowsT<TY>(isa, t + off, M, B, n0, n1, ad.r, part, nn);
                for (int64_t i = 0; i < M * nn; i++) acc[i] += part[i];
                off += M * ad.r;
            }
        }
        for (int64_t m = 0; m < M; m++)
            finish_row<TY>(isa, y + m * N + n0, acc + m * nn, nn, bias ? bias + n0 : nullptr,
                           out_scale ? out_scale + n0 : nullptr, dora_scale ? dora_scale + n0 : nullptr);
    }
};

// Several adapted Linears over the same x (a layer's q, k, v, or its gate and up) in ONE parallel region: every
// layer's shrink tasks first, then the blocks of all of them, so the team forks and joins once for the group, and a
// thread done with one layer's blocks goes on to the next layer's instead of waiting at a join. Layer g writes
// ys[g] ([M, N_g]); row_slots null, or per layer null / M entries (see AdaptedLinearRun).
// One row: the shrinks (r·K products per adapter, a few µs) run on the caller before the region, which then holds
// the base blocks only: a small layer wakes no helper for them, and no block spins on a shrink task held by a helper
// the scheduler has taken off its core (on a busy machine, a time slice per call).
// Below this many multiply-adds a group runs on the calling thread (see adapted_linear_forward_group).
constexpr int64_t kSmallGroupWork = (int64_t) 1 << 16;

template <typename TY>
inline void adapted_linear_forward_group(const AdaptedLinear* const* layers, TY* const* ys, int n, const TY* x,
                                         int64_t M, int threads, const int32_t* const* row_slots = nullptr) {
    thread_local std::vector<AdaptedLinearScratch> scratch;
    if ((int) scratch.size() < n) scratch.resize((size_t) n);
    std::vector<std::unique_ptr<AdaptedLinearRun<TY>>> runs;
    runs.reserve((size_t) n);
    for (int g = 0; g < n; g++)
        runs.emplace_back(new AdaptedLinearRun<TY>(*layers[g], ys[g], x, M, row_slots ? row_slots[g] : nullptr,
                                                   scratch[(size_t) g]));
    const bool shrink_first = M == 1;
    // task ranges: [shrink0 | shrink1 | ... | blocks0 | blocks1 | ...]
    int64_t shrink_at[64 + 1], block_at[64 + 1];
    std::vector<int64_t> big_s, big_b;
    int64_t* sa = shrink_at;
    int64_t* ba = block_at;
    if (n > 64) {
        big_s.resize((size_t) n + 1);
        big_b.resize((size_t) n + 1);
        sa = big_s.data();
        ba = big_b.data();
    }
    sa[0] = 0;
    for (int g = 0; g < n; g++) {
        if (shrink_first)
            for (int64_t ti = 0; ti < runs[(size_t) g]->n_shrink(); ti++) runs[(size_t) g]->shrink(ti);
        sa[g + 1] = sa[g] + (shrink_first ? 0 : runs[(size_t) g]->n_shrink());
    }
    const int64_t n_shrink = sa[n];
    ba[0] = n_shrink;
    for (int g = 0; g < n; g++) ba[g + 1] = ba[g] + runs[(size_t) g]->n_blocks();
    std::atomic<int64_t> shrink_done{0};
    auto await = [&] {
        while (shrink_done.load(std::memory_order_acquire) < n_shrink) ThreadPool::cpu_relax();
    };
    // a region's fork and join (a wake-up of the team) cost more than a small group's products: under
    // kSmallGroupWork multiply-adds the tasks run on the caller, in the same order and with the same results
    int64_t work = 0;
    for (int g = 0; g < n; g++) work += M * layers[g]->N * (layers[g]->K + layers[g]->total_rank);
    const int use = work >= kSmallGroupWork ? threads : 1;
    ThreadPool::instance().parallel_for(ba[n], use, [&](int64_t i) {
        if (i < n_shrink) {
            int g = 0;
            while (i >= sa[g + 1]) g++;
            runs[(size_t) g]->shrink(i - sa[g]);
            shrink_done.fetch_add(1, std::memory_order_release);
        } else {
            int g = 0;
            while (i >= ba[g + 1]) g++;
            runs[(size_t) g]->block(i - ba[g], await);
        }
    });
}

// The forward of one adapted Linear: the group of one.
template <typename TY>
inline void adapted_linear_forward(const AdaptedLinear& L, TY* y, const TY* x, int64_t M, int threads,
                                   const int32_t* row_slot = nullptr) {
    const AdaptedLinear* layers[1] = {&L};
    TY* ys[1] = {y};
    const int32_t* slots[1] = {row_slot};
    adapted_linear_forward_group<TY>(layers, ys, 1, x, M, threads, slots);
}

}  // namespace peft4j
