// Kernels beside the decode Linear, for any number of rows M:
//
//   lora_delta:  y[M,N] += Σ s_a · (x·A_aᵀ)·B_aᵀ, in place, the base GEMM left to libtorch. With a per-row slot
//                index (Punica's BGMV/SGMV idea) row m gets only adapter row_slot[m] (-1: none), so one call
//                serves a mixed batch. Rows are grouped by slot (stable counting sort); each group is shrunk
//                against its adapter's A once, then expanded into y block by block of output features.
//   merge_lowrank: W[R,C] += Σ_j coef[row,j]·V[j,:], in place and at memory bandwidth (LoRA merge/unmerge: the
//                small factors are widened to float32 once; no temporary the size of W).
//   scale_rows / scale_cols: dst = src ⊙ l along rows or columns (or ⊘), for IA3 merge and IA3 activations.
//
// float32 or bfloat16 tensors, float32 accumulation, bf16 rounded once to nearest even; AVX-512, AVX2 and
// scalar paths chosen at run time by active_isa().
#pragma once

#include "peft4j_axpy.h"
#include "peft4j_cpu.h"
#include "peft4j_lora_linear.h"
#include "peft4j_threads.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#if defined(__x86_64__)
#include <immintrin.h>  // x86 SIMD paths only; other architectures build the scalar ones
#endif
#include <type_traits>
#include <vector>

namespace peft4j {

inline void store_f32(float* p, float v) { *p = v; }
inline void store_f32(uint16_t* p, float v) { *p = f32_to_bf16(v); }

// ---- row update: y[0:n] = y[0:n] + Σ_j c[j]·V[j*ldv + 0:n], in float32, rounded once into y ----
template <typename T>
inline void row_update_scalar(T* y, int64_t n, const float* c, int R, const float* V, int64_t ldv) {
    for (int64_t i = 0; i < n; i++) {
        float acc = load_scalar(y, i);
        for (int j = 0; j < R; j++) acc += c[j] * V[j * ldv + i];
        store_f32(y + i, acc);
    }
}

#if defined(__x86_64__)
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
inline __m512 ld16(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
inline __m512 ld16(const uint16_t* p, __mmask16 m) { return bf16x16_to_f32_avx512(_mm256_maskz_loadu_epi16(m, p)); }
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
inline void st16(float* p, __mmask16 m, __m512 v) { _mm512_mask_storeu_ps(p, m, v); }
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
inline void st16(uint16_t* p, __mmask16 m, __m512 v) { _mm256_mask_storeu_epi16(p, m, f32x16_to_bf16_avx512(v)); }

// acc[r·NV + v] = y[r][i + 16v, +16) widened to float32, the last vector masked by mlast
template <int MB, int NV, typename T>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
inline void load_rows(__m512* acc, T* const* y, int64_t i, __mmask16 mlast) {
#pragma GCC unroll 16
    for (int q = 0; q < MB * NV; q++) {
        const int r = q / NV, v = q % NV;
        acc[q] = ld16(y[r] + i + 16 * v, v == NV - 1 ? mlast : (__mmask16) 0xffff);
    }
}

// MB rows x NV vectors of 16 columns, starting at column i: acc (MB x NV registers) loaded from y, then one
// load of V per (j, vector) and one broadcast of c per (j, row) feed MB x NV fused multiply-adds (4 x 4: half a
// load per FMA, so the loop runs at FMA throughput), rounded once into y. The last vector is masked by mlast.
template <int MB, int NV, typename T>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
inline void rows_block_avx512(T* const* y, int64_t i, const float* const* c, int R, const float* V, int64_t ldv,
                              __mmask16 mlast) {
    __m512 acc[MB * NV];
    load_rows<MB, NV>(acc, y, i, mlast);
    for (int j = 0; j < R; j++) {
        __m512 vv[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            vv[v] = _mm512_maskz_loadu_ps(v == NV - 1 ? mlast : (__mmask16) 0xffff, V + j * ldv + i + 16 * v);
#pragma GCC unroll 16
        for (int q = 0; q < MB * NV; q++) acc[q] = _mm512_fmadd_ps(_mm512_set1_ps(c[q / NV][j]), vv[q % NV], acc[q]);
    }
#pragma GCC unroll 16
    for (int q = 0; q < MB * NV; q++) {
        const int r = q / NV, v = q % NV;
        st16(y[r] + i + 16 * v, v == NV - 1 ? mlast : (__mmask16) 0xffff, acc[q]);
    }
}

template <int MB, typename T>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
inline void rows_update_avx512(T* const* y, int64_t n, const float* const* c, int R, const float* V, int64_t ldv) {
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) rows_block_avx512<MB, 4, T>(y, i, c, R, V, ldv, (__mmask16) 0xffff);
    for (; i < n; i += 16) {
        __mmask16 m = lanes16(n - i);
        rows_block_avx512<MB, 1, T>(y, i, c, R, V, ldv, m);
    }
}

// The same on ISA_AVX512_BF16: y rounded to bf16 with VCVTNEPS2BF16 (f32x16_to_bf16_ne, bit-identical).
PEFT4J_BF16_TARGET
inline void st16ne(float* p, __mmask16 m, __m512 v) { _mm512_mask_storeu_ps(p, m, v); }
PEFT4J_BF16_TARGET
inline void st16ne(uint16_t* p, __mmask16 m, __m512 v) { _mm256_mask_storeu_epi16(p, m, f32x16_to_bf16_ne(v)); }

// load_rows' inverse: each vector rounded once into y (VCVTNEPS2BF16 for bf16)
template <int MB, int NV, typename T>
PEFT4J_BF16_TARGET
inline void store_rows_ne(T* const* y, int64_t i, __mmask16 mlast, const __m512* acc) {
#pragma GCC unroll 16
    for (int q = 0; q < MB * NV; q++) {
        const int r = q / NV, v = q % NV;
        st16ne(y[r] + i + 16 * v, v == NV - 1 ? mlast : (__mmask16) 0xffff, acc[q]);
    }
}

template <int MB, int NV, typename T>
PEFT4J_BF16_TARGET
inline void rows_block_bf16ne(T* const* y, int64_t i, const float* const* c, int R, const float* V, int64_t ldv,
                              __mmask16 mlast) {
    __m512 acc[MB * NV];
    load_rows<MB, NV>(acc, y, i, mlast);
    for (int j = 0; j < R; j++) {
        __m512 vv[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            vv[v] = _mm512_maskz_loadu_ps(v == NV - 1 ? mlast : (__mmask16) 0xffff, V + j * ldv + i + 16 * v);
#pragma GCC unroll 16
        for (int q = 0; q < MB * NV; q++) acc[q] = _mm512_fmadd_ps(_mm512_set1_ps(c[q / NV][j]), vv[q % NV], acc[q]);
    }
    store_rows_ne<MB, NV>(y, i, mlast, acc);
}

template <int MB, typename T>
PEFT4J_BF16_TARGET
inline void rows_update_bf16ne(T* const* y, int64_t n, const float* const* c, int R, const float* V, int64_t ldv) {
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) rows_block_bf16ne<MB, 4, T>(y, i, c, R, V, ldv, (__mmask16) 0xffff);
    for (; i < n; i += 16) {
        __mmask16 m = lanes16(n - i);
        rows_block_bf16ne<MB, 1, T>(y, i, c, R, V, ldv, m);
    }
}

// The same update on VDPBF16PS for bfloat16 y: y[r][0:n] += Σ_p (c[r][p] as two bf16) · (V[p, 0:n] as pairs of bf16),
// i.e. Σ_j c_j·V_j with the ranks taken two at a time (c and V hold ranks 2p and 2p + 1 in the low and high halves
// of each 32-bit word). Half the instructions of the float32 FMAs; c is rounded to bf16 once, as PEFT's composed
// path rounds x·Aᵀ to the layer's dtype.
template <int MB, int NV>
PEFT4J_BF16_TARGET
inline void rows_block_dp(uint16_t* const* y, int64_t i, const uint32_t* const* c, int P, const uint32_t* V, int64_t ldv,
                          __mmask16 mlast) {
    __m512 acc[MB * NV];
    load_rows<MB, NV>(acc, y, i, mlast);
    for (int p = 0; p < P; p++) {
        __m512bh vv[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            vv[v] = (__m512bh) _mm512_maskz_loadu_epi32(v == NV - 1 ? mlast : (__mmask16) 0xffff, V + p * ldv + i + 16 * v);
#pragma GCC unroll 16
        for (int q = 0; q < MB * NV; q++)
            acc[q] = _mm512_dpbf16_ps(acc[q], (__m512bh) _mm512_set1_epi32((int) c[q / NV][p]), vv[q % NV]);
    }
    store_rows_ne<MB, NV>(y, i, mlast, acc);
}

template <int MB>
PEFT4J_BF16_TARGET
inline void rows_update_dp(uint16_t* const* y, int64_t n, const uint32_t* const* c, int P, const uint32_t* V, int64_t ldv) {
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) rows_block_dp<MB, 4>(y, i, c, P, V, ldv, (__mmask16) 0xffff);
    for (; i < n; i += 16) {
        __mmask16 m = lanes16(n - i);
        rows_block_dp<MB, 1>(y, i, c, P, V, ldv, m);
    }
}

inline void rows_update_dp_any(uint16_t* const* y, int mb, int64_t n, const uint32_t* const* c, int P, const uint32_t* V,
                               int64_t ldv) {
    switch (mb) {
        case 4: rows_update_dp<4>(y, n, c, P, V, ldv); return;
        case 3: rows_update_dp<3>(y, n, c, P, V, ldv); return;
        case 2: rows_update_dp<2>(y, n, c, P, V, ldv); return;
        default: rows_update_dp<1>(y, n, c, P, V, ldv); return;
    }
}

__attribute__((target("avx2,fma")))
inline __m256 ld8(const float* p) { return _mm256_loadu_ps(p); }
__attribute__((target("avx2,fma")))
inline __m256 ld8(const uint16_t* p) { return bf16x8_to_f32_avx2(p); }
__attribute__((target("avx2,fma")))
inline void st8(float* p, __m256 v) { _mm256_storeu_ps(p, v); }
__attribute__((target("avx2,fma")))
inline void st8(uint16_t* p, __m256 v) { f32x8_to_bf16_avx2(p, v); }

template <int MB, int NV, typename T>
__attribute__((target("avx2,fma")))
inline void rows_block_avx2(T* const* y, int64_t i, const float* const* c, int R, const float* V, int64_t ldv) {
    __m256 acc[MB][NV];
    for (int r = 0; r < MB; r++)
        for (int v = 0; v < NV; v++) acc[r][v] = ld8(y[r] + i + 8 * v);
    for (int j = 0; j < R; j++) {
        __m256 vv[NV];
        for (int v = 0; v < NV; v++) vv[v] = _mm256_loadu_ps(V + j * ldv + i + 8 * v);
        for (int r = 0; r < MB; r++) {
            const __m256 cb = _mm256_set1_ps(c[r][j]);
            for (int v = 0; v < NV; v++) acc[r][v] = _mm256_fmadd_ps(cb, vv[v], acc[r][v]);
        }
    }
    for (int r = 0; r < MB; r++)
        for (int v = 0; v < NV; v++) st8(y[r] + i + 8 * v, acc[r][v]);
}

template <int MB, typename T>
__attribute__((target("avx2,fma")))
inline void rows_update_avx2(T* const* y, int64_t n, const float* const* c, int R, const float* V, int64_t ldv) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) rows_block_avx2<MB, 2, T>(y, i, c, R, V, ldv);
    for (; i + 8 <= n; i += 8) rows_block_avx2<MB, 1, T>(y, i, c, R, V, ldv);
    if (i < n) {
        for (int r = 0; r < MB; r++) row_update_scalar(y[r] + i, n - i, c[r], R, V + i, ldv);
    }
}
#endif

// Updates mb (<= 4) rows y[r][0:n] += Σ_j c[r][j]·V[j, 0:n] on the given ISA.
template <typename T>
inline void rows_update(int isa, T* const* y, int mb, int64_t n, const float* const* c, int R, const float* V,
                        int64_t ldv) {
#if defined(__x86_64__)
    if (isa >= ISA_AVX512_BF16 && !std::is_same<T, float>::value) {
        switch (mb) {
            case 4: rows_update_bf16ne<4>(y, n, c, R, V, ldv); return;
            case 3: rows_update_bf16ne<3>(y, n, c, R, V, ldv); return;
            case 2: rows_update_bf16ne<2>(y, n, c, R, V, ldv); return;
            default: rows_update_bf16ne<1>(y, n, c, R, V, ldv); return;
        }
    }
    if (isa >= ISA_AVX512) {
        switch (mb) {
            case 4: rows_update_avx512<4>(y, n, c, R, V, ldv); return;
            case 3: rows_update_avx512<3>(y, n, c, R, V, ldv); return;
            case 2: rows_update_avx512<2>(y, n, c, R, V, ldv); return;
            default: rows_update_avx512<1>(y, n, c, R, V, ldv); return;
        }
    }
    if (isa == ISA_AVX2) {
        switch (mb) {
            case 4: rows_update_avx2<4>(y, n, c, R, V, ldv); return;
            case 3: rows_update_avx2<3>(y, n, c, R, V, ldv); return;
            case 2: rows_update_avx2<2>(y, n, c, R, V, ldv); return;
            default: rows_update_avx2<1>(y, n, c, R, V, ldv); return;
        }
    }
#endif
    for (int r = 0; r < mb; r++) row_update_scalar(y[r], n, c[r], R, V, ldv);
}

inline float widen(float v) { return v; }
inline float widen(uint16_t v) { return bf16_to_f32(v); }

#if defined(__x86_64__)
// dst[(j0 + c) * ldd + n0 + i] = widen(B[(n0 + i) * r + j0 + c]) for i, c < 16: one 16 x 16 block of B ([N, r])
// transposed to float32 in registers (unpack ps, unpack pd, two 128-bit lane shuffles)
template <typename T>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
inline void transpose16_avx512(const T* B, int64_t r, int64_t n0, int64_t j0, float* dst, int64_t ldd) {
    __m512 a[16];
    for (int i = 0; i < 16; i++) a[i] = ld16(B + (n0 + i) * r + j0, (__mmask16) 0xffff);
    transpose16x16_avx512(a);
    for (int j = 0; j < 16; j++) _mm512_storeu_ps(dst + (j0 + j) * ldd + n0, a[j]);
}
#endif

#if defined(__x86_64__)
// dst[p * ldd + n] = the 32-bit word (B[n, 2p], B[n, 2p + 1]) for n0 <= n < n1, p < r / 2 (r even): B's pairs of
// ranks transposed, 16 rows x 16 words at a time through the float32 register transpose (pure data movement, so
// every bit pattern passes unchanged).
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
inline void transpose_pairs_bf16(const uint16_t* B, int64_t r, int64_t n0, int64_t n1, uint32_t* dst, int64_t ldd) {
    const int64_t P = r / 2;
    for (int64_t n = n0; n < n1; n += 16) {
        const int64_t nb = std::min<int64_t>(16, n1 - n);
        const __mmask16 mn = lanes16(nb);
        for (int64_t p0 = 0; p0 < P; p0 += 16) {
            const int64_t pb = std::min<int64_t>(16, P - p0);
            const __mmask16 mp = lanes16(pb);
            __m512 a[16];
            for (int i = 0; i < 16; i++)
                a[i] = i < nb ? _mm512_castsi512_ps(_mm512_maskz_loadu_epi32(mp, B + (n + i) * r + 2 * p0))
                              : _mm512_setzero_ps();
            transpose16x16_avx512(a);  // a[p]: word p0 + p of rows n .. n + 15
            for (int64_t p = 0; p < pb; p++)
                _mm512_mask_storeu_epi32(dst + (p0 + p) * ldd + n, mn, _mm512_castps_si512(a[p]));
        }
    }
}
#endif

// ---- LoRA delta for any M ----
// slots: n_slots adapters (A [r, K], B [N, r] in T, scale). row_slot: null (every slot on every row, summed) or
// M entries in [-1, n_slots). y [M, N] and x [M, K] in T, contiguous.
template <typename T>
inline void lora_delta(T* y, const T* x, int64_t M, int64_t K, int64_t N, const LoraSlot* slots, int n_slots,
                       const int32_t* row_slot, int threads) {
    if (M <= 0 || N <= 0 || n_slots <= 0) return;
    const int isa = active_isa();
    // segments: a set of rows and the slots applied to all of them; t_seg [rows, Σ r] float32
    struct Segment {
        std::vector<int64_t> rows;
        int first_slot, n;  // slots [first_slot, first_slot + n)
        int64_t R;          // Σ ranks
        int64_t t_off;      // offset of its t block
    };
    std::vector<Segment> segs;
    if (row_slot == nullptr) {
        Segment s;
        s.rows.resize((size_t) M);
        for (int64_t m = 0; m < M; m++) s.rows[(size_t) m] = m;
        s.first_slot = 0;
        s.n = n_slots;
        s.R = 0;
        for (int i = 0; i < n_slots; i++) s.R += slots[i].r;
        segs.push_back(std::move(s));
    } else {
        std::vector<std::vector<int64_t>> by(n_slots);
        for (int64_t m = 0; m < M; m++) {
            int32_t sl = row_slot[m];
            if (sl >= 0 && sl < n_slots) by[(size_t) sl].push_back(m);
        }
        for (int i = 0; i < n_slots; i++) {
            if (by[(size_t) i].empty()) continue;
            Segment s;
            s.rows = std::move(by[(size_t) i]);
            s.first_slot = i;
            s.n = 1;
            s.R = slots[i].r;
            segs.push_back(std::move(s));
        }
    }
    if (segs.empty()) return;  // an all-base batch costs nothing
    int64_t t_total = 0;
    for (Segment& s : segs) {
        s.t_off = t_total;
        t_total += (int64_t) s.rows.size() * s.R;
    }
    // t and bt below: per calling thread, reused across calls (every element is written before it is read); the
    // references are what the lambdas capture, so pool threads use the caller's buffers
    thread_local std::vector<float> t_tls, bt_tls;
    std::vector<float>& t = t_tls;
    t.resize((size_t) t_total);
    std::vector<char> used((size_t) n_slots, 0);
    for (const Segment& s : segs)
        for (int a = s.first_slot; a < s.first_slot + s.n; a++) used[(size_t) a] = 1;
    // bfloat16 with VDPBF16PS: x and A are multiplied as stored. Otherwise the shrink's micro-kernel takes A in
    // float32: widened once per call for bfloat16 (r·K elements, small next to M·K), x read in its own dtype.
    constexpr bool kBf16 = !std::is_same<T, float>::value;
    const bool dp_bf16 = kBf16 && isa >= ISA_AVX512_BF16;
    std::vector<std::vector<float>> a_wide((size_t) n_slots);
    if (kBf16 && !dp_bf16) {
        ThreadPool::instance().parallel_for(n_slots, threads, [&](int64_t a) {
            if (!used[(size_t) a]) return;
            const T* A = (const T*) slots[a].A;
            std::vector<float>& dst = a_wide[(size_t) a];
            dst.resize((size_t) (slots[a].r * K));
            for (int64_t i = 0; i < slots[a].r * K; i++) dst[(size_t) i] = widen(A[i]);
        });
    }
    // B transposed to float32 once per call, slot after slot: bt rows [bt_row[a], bt_row[a] + r_a) hold B_aᵀ
    // ([r_a, N]), so a segment's slots [first, first + n) are one [R, N] block (the expand's V).
    std::vector<int64_t> bt_row((size_t) n_slots + 1, 0);
    for (int a = 0; a < n_slots; a++) bt_row[(size_t) a + 1] = bt_row[(size_t) a] + (used[(size_t) a] ? slots[a].r : 0);
    // bfloat16 on ISA_AVX512_BF16 with every used rank even: the expand runs on VDPBF16PS. B's ranks 2p and 2p + 1
    // are adjacent in each row, so a 32-bit transpose of B ([N, r/2] words -> [r/2, N]) is VDPBF16PS's layout, and
    // t is packed into bf16 pairs by the shrink. An odd rank would pair across two adapters: float32 path.
    bool dp_expand = false;
#if defined(__x86_64__)
    dp_expand = dp_bf16;
    for (int a = 0; a < n_slots; a++)
        if (used[(size_t) a] && slots[a].r % 2 != 0) dp_expand = false;
#endif
    thread_local std::vector<uint32_t> bt32_tls, tp_tls;
    std::vector<uint32_t>& bt32 = bt32_tls;  // [Σ r / 2, N]
    std::vector<uint32_t>& tp = tp_tls;      // t as bf16 pairs, [rows][R / 2] per segment
    std::vector<float>& bt = bt_tls;
    if (dp_expand) {
        bt32.resize((size_t) (bt_row[(size_t) n_slots] / 2 * N));
        tp.resize((size_t) (t_total / 2));
    } else {
        bt.resize((size_t) (bt_row[(size_t) n_slots] * N));
    }
    // one parallel region: the transposes of B (column chunks of 512) and the shrink (chunks of 16 rows)
    constexpr int64_t kRowChunk = 16;
    constexpr int64_t kBtChunk = 512;
    struct Task { int seg; int64_t row0; };  // seg < 0: transpose of slot -seg-1, columns [row0, row0 + kBtChunk)
    std::vector<Task> tasks;
    for (int a = 0; a < n_slots; a++)
        if (used[(size_t) a])
            for (int64_t c0 = 0; c0 < N; c0 += kBtChunk) tasks.push_back({-a - 1, c0});
    for (int si = 0; si < (int) segs.size(); si++)
        for (int64_t r0 = 0; r0 < (int64_t) segs[(size_t) si].rows.size(); r0 += kRowChunk) tasks.push_back({si, r0});
    const std::function<void(int64_t)> prepare = [&](int64_t ti) {
        const Task& tk = tasks[(size_t) ti];
        if (tk.seg < 0) {
            const int a = -tk.seg - 1;
            const int64_t r = slots[a].r, c1 = std::min(N, tk.row0 + kBtChunk);
            const T* B = (const T*) slots[a].B;
#if defined(__x86_64__)
            if (dp_expand) {
                transpose_pairs_bf16((const uint16_t*) B, r, tk.row0, c1, bt32.data() + bt_row[(size_t) a] / 2 * N, N);
                return;
            }
#endif
            float* dst = bt.data() + bt_row[(size_t) a] * N;
            for (int64_t n0 = tk.row0; n0 < c1; n0 += 16) {  // 16 rows of B (16·r elements, in L1) at a time
                const int64_t n1 = std::min(c1, n0 + 16);
                int64_t j = 0;
#if defined(__x86_64__)
                if (isa >= ISA_AVX512 && n1 - n0 == 16)
                    for (; j + 16 <= r; j += 16) transpose16_avx512<T>(B, r, n0, j, dst, N);
#endif
                for (; j < r; j++)
                    for (int64_t n = n0; n < n1; n++) dst[j * N + n] = widen(B[n * r + j]);
            }
            return;
        }
        const Segment& s = segs[(size_t) tk.seg];
        const int64_t mb = std::min<int64_t>(kRowChunk, (int64_t) s.rows.size() - tk.row0);
        const int64_t first = s.rows[(size_t) tk.row0];
        const T* xr = x + first * K;
        thread_local std::vector<T> xs;
        if (s.rows[(size_t) (tk.row0 + mb - 1)] - first != mb - 1) {  // rows ascend: consecutive iff the span fits
            xs.resize((size_t) (mb * K));
            for (int64_t i = 0; i < mb; i++)
                std::memcpy(xs.data() + i * K, x + s.rows[(size_t) (tk.row0 + i)] * K, sizeof(T) * (size_t) K);
            xr = xs.data();
        }
        float tmp[kRowChunk * 64];  // [mb][rb] for one block of up to 64 rows of A
        float* tt = t.data() + s.t_off + tk.row0 * s.R;
        int64_t col = 0;
        for (int a = s.first_slot; a < s.first_slot + s.n; a++) {
            const LoraSlot& sl = slots[a];
            for (int64_t j0 = 0; j0 < sl.r; j0 += 64) {
                const int64_t rb = std::min<int64_t>(64, sl.r - j0);
                if (dp_bf16) {  // tmp[i][j] = x_i·A_j
                    rows_times_rowsT_bf16(isa, (const uint16_t*) xr, mb, (const uint16_t*) sl.A + j0 * K, 0, rb, K, tmp, rb);
                } else {
                    const float* Af = kBf16 ? a_wide[(size_t) a].data() : (const float*) sl.A;
                    float tr[kRowChunk * 64];  // [rb][mb]: A rows as the micro-kernel's X side
                    rows_times_rowsT<T>(isa, Af + j0 * K, rb, xr, 0, mb, K, tr, mb);
                    for (int64_t j = 0; j < rb; j++)
                        for (int64_t i = 0; i < mb; i++) tmp[i * rb + j] = tr[j * mb + i];
                }
                for (int64_t i = 0; i < mb; i++)
                    for (int64_t j = 0; j < rb; j++) tt[i * s.R + col + j0 + j] = tmp[i * rb + j] * sl.scale;
            }
            col += sl.r;
        }
        if (dp_expand) {  // the rows' t as bf16 pairs (R even)
            uint32_t* tpr = tp.data() + s.t_off / 2 + tk.row0 * (s.R / 2);
            for (int64_t i = 0; i < mb * s.R / 2; i++)
                tpr[i] = (uint32_t) f32_to_bf16(tt[2 * i]) | ((uint32_t) f32_to_bf16(tt[2 * i + 1]) << 16);
        }
    };
    // expand: tasks of (up to 16 rows of a segment) x (a column range, in multiples of 64), enough of them to
    // balance the threads
    int64_t row_tasks = 0;
    for (const Segment& s : segs) row_tasks += ((int64_t) s.rows.size() + kRowChunk - 1) / kRowChunk;
    const int64_t max_split = std::max<int64_t>(1, (N + 255) / 256);
    const int64_t col_split = std::min<int64_t>(max_split, std::max<int64_t>(1, (4 * (int64_t) threads + row_tasks - 1) / row_tasks));
    const int64_t col_chunk = ((N + col_split - 1) / col_split + 63) / 64 * 64;
    std::vector<Task> etasks;
    for (int si = 0; si < (int) segs.size(); si++)
        for (int64_t r0 = 0; r0 < (int64_t) segs[(size_t) si].rows.size(); r0 += kRowChunk) etasks.push_back({si, r0});
    const int64_t n_col = (N + col_chunk - 1) / col_chunk;
    const std::function<void(int64_t)> expand = [&](int64_t ti) {
        const Task& tk = etasks[(size_t) (ti / n_col)];
        const int64_t c0 = (ti % n_col) * col_chunk, c1 = std::min(N, c0 + col_chunk);
        const Segment& s = segs[(size_t) tk.seg];
        const int64_t rows = std::min<int64_t>(kRowChunk, (int64_t) s.rows.size() - tk.row0);
        const float* V = dp_expand ? nullptr : bt.data() + bt_row[(size_t) s.first_slot] * N;
#if defined(__x86_64__)
        const uint32_t* V32 = dp_expand ? bt32.data() + bt_row[(size_t) s.first_slot] / 2 * N : nullptr;
#endif
        // Column chunks of V small enough for L1 (16 KiB); inside one, each group of 4 rows sweeps all its 64-column
        // blocks before the next group starts. Rows of y are N·sizeof(T) bytes apart (a multiple of 4 KiB at every
        // common width), so a group's loads right after the previous group's stores at the same columns alias them
        // in the low 12 address bits and wait on them; blocks of one group go on at the next columns instead (with
        // the groups inside the 64-column loop, perf annotate puts most of the expand's samples on its loads of y).
        // benchmarks/native/ab.sh delta, with FLUSH=1 for cold caches, compares another order with this one.
        const int64_t v_rows = dp_expand ? s.R / 2 : s.R;
        const int64_t chunk = std::max<int64_t>(64, 16384 / (v_rows * 4) / 64 * 64);
        for (int64_t cc = c0; cc < c1; cc += chunk) {
            const int64_t ce = std::min(c1, cc + chunk);
            for (int64_t i = 0; i < rows; i += 4) {
                const int mb = (int) std::min<int64_t>(4, rows - i);
#if defined(__x86_64__)
                if (dp_expand) {
                    uint16_t* yr[4];
                    const uint32_t* cr[4];
                    for (int q = 0; q < mb; q++) cr[q] = tp.data() + s.t_off / 2 + (tk.row0 + i + q) * (s.R / 2);
                    for (int64_t cb = cc; cb < ce; cb += 64) {
                        for (int q = 0; q < mb; q++) yr[q] = (uint16_t*) y + s.rows[(size_t) (tk.row0 + i + q)] * N + cb;
                        rows_update_dp_any(yr, mb, std::min<int64_t>(64, ce - cb), cr, (int) (s.R / 2), V32 + cb, N);
                    }
                    continue;
                }
#endif
                T* yr[4];
                const float* cr[4];
                for (int q = 0; q < mb; q++) cr[q] = t.data() + s.t_off + (tk.row0 + i + q) * s.R;
                for (int64_t cb = cc; cb < ce; cb += 64) {
                    for (int q = 0; q < mb; q++) yr[q] = y + s.rows[(size_t) (tk.row0 + i + q)] * N + cb;
                    rows_update<T>(isa, yr, mb, std::min<int64_t>(64, ce - cb), cr, (int) s.R, V + cb, N);
                }
            }
        }
    };
    // one parallel region: the expand waits inside it for every transpose and shrink task to finish
    ThreadPool::instance().parallel_phases(threads, {{(int64_t) tasks.size(), &prepare},
                                                     {(int64_t) etasks.size() * n_col, &expand}});
}

// ---- low-rank merge: W[R, C] += Σ_j coef[row, j]·V[j, :] (coef [R, r], V [r, C] float32) ----
template <typename T>
inline void merge_lowrank(T* W, int64_t R, int64_t C, const float* coef, const float* V, int r, int threads) {
    if (R <= 0 || C <= 0 || r <= 0) return;
    const int isa = active_isa();
    const int64_t rows_per_task = 16;
    const int64_t n_tasks = (R + rows_per_task - 1) / rows_per_task;
    ThreadPool::instance().parallel_for(n_tasks, threads, [&](int64_t tsk) {
        const int64_t r0 = tsk * rows_per_task, r1 = std::min(R, r0 + rows_per_task);
        for (int64_t i = r0; i < r1; i += 4) {
            int mb = (int) std::min<int64_t>(4, r1 - i);
            T* wr[4];
            const float* cr[4];
            for (int q = 0; q < mb; q++) {
                wr[q] = W + (i + q) * C;
                cr[q] = coef + (i + q) * r;
            }
            // column chunks keep the 4 W rows' chunk and V's chunk in L1
            const int64_t cc = 1024;
            for (int64_t c0 = 0; c0 < C; c0 += cc) {
                T* wc[4];
                for (int q = 0; q < mb; q++) wc[q] = wr[q] + c0;
                rows_update<T>(isa, wc, mb, std::min(cc, C - c0), cr, r, V + c0, C);
            }
        }
    });
}

// ---- scaling: dst[i, j] = src[i, j] (*|/) l[i] (rows) or l[j] (cols); dst may equal src ----
template <typename T>
inline void scale_span_scalar(T* d, const T* s, int64_t n, const float* l, float c, bool div) {
    // l == null: one factor c for the span; else per element l[i]
    for (int64_t i = 0; i < n; i++) {
        float f = l ? l[i] : c;
        float v = widen(s[i]);
        store_f32(d + i, div ? v / f : v * f);
    }
}

#if defined(__x86_64__)
template <typename T>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
inline void scale_span_avx512(T* d, const T* s, int64_t n, const float* l, float c, bool div) {
    const __m512 cv = _mm512_set1_ps(c);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = lanes16(n - i);
        __m512 f = l ? _mm512_mask_loadu_ps(_mm512_set1_ps(1.f), m, l + i) : cv;
        __m512 v = ld16(s + i, m);
        st16(d + i, m, div ? _mm512_div_ps(v, f) : _mm512_mul_ps(v, f));
    }
}

template <typename T>
__attribute__((target("avx2,fma")))
inline void scale_span_avx2(T* d, const T* s, int64_t n, const float* l, float c, bool div) {
    const __m256 cv = _mm256_set1_ps(c);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 f = l ? _mm256_loadu_ps(l + i) : cv;
        __m256 v = ld8(s + i);
        st8(d + i, div ? _mm256_div_ps(v, f) : _mm256_mul_ps(v, f));
    }
    scale_span_scalar(d + i, s + i, n - i, l ? l + i : nullptr, c, div);
}
#endif

template <typename T>
inline void scale_span(int isa, T* d, const T* s, int64_t n, const float* l, float c, bool div) {
#if defined(__x86_64__)
    if (isa >= ISA_AVX512) { scale_span_avx512(d, s, n, l, c, div); return; }
    if (isa == ISA_AVX2) { scale_span_avx2(d, s, n, l, c, div); return; }
#endif
    scale_span_scalar(d, s, n, l, c, div);
}

// by_rows: l has R entries (row i scaled by l[i]); else C entries (column j by l[j]).
template <typename T>
inline void scale_matrix(T* dst, const T* src, int64_t R, int64_t C, const float* l, bool by_rows, bool div,
                         int threads) {
    if (R <= 0 || C <= 0) return;
    const int isa = active_isa();
    const int64_t rows_per_task = std::max<int64_t>(1, 16384 / C);
    const int64_t n_tasks = (R + rows_per_task - 1) / rows_per_task;
    ThreadPool::instance().parallel_for(n_tasks, threads, [&](int64_t tsk) {
        const int64_t r0 = tsk * rows_per_task, r1 = std::min(R, r0 + rows_per_task);
        for (int64_t i = r0; i < r1; i++) {
            if (by_rows) scale_span(isa, dst + i * C, src + i * C, C, (const float*) nullptr, l[i], div);
            else scale_span(isa, dst + i * C, src + i * C, C, l, 0.f, div);
        }
    });
}

}  // namespace peft4j
