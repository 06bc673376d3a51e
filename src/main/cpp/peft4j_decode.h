// The small per-layer ops of a Llama-family decode step (one new token per row), as transformers computes them:
//
//   rms_norm      y = w · T(x · rsqrt(mean(x²) + eps))           (x in float32, T: rounded to the storage type)
//                 Gemma's (unit_offset): y = T(x · rsqrt(mean(x²) + eps) · (1 + w)), all in float32
//   add_rms_norm  r = T(r + a) in place, then y = rms_norm(r)    (the residual add fused with the next norm)
//   rope          x = T(T(x·cos) + T(rotate_half(x)·sin))         (rotate_half layout, float32 tables rounded to T;
//                 on the leading rot dims of each head, the rest as they are; tables scaled in float32 first)
//   attention     the new keys / values written into a slot cache in place, then softmax(q·kᵀ·scale)·v over the
//                 row's own cached positions (grouped-query heads, per-row lengths, optional sliding window,
//                 optional soft-capping of the scores: cap · tanh(score / cap))
//
// T is float32 or bfloat16 (uint16_t); every product and sum is float32. The roundings to T follow the order of
// libtorch's separate ops, so the bf16 RoPE and residual add are bit-equal to them, and the norms differ only in
// the order of the float32 sum of squares. SIMD (AVX2, AVX-512) where the work grows with the model: the sum of
// squares and the attention's dot products and weighted sums; the rest is elementwise over a few thousand values
// per token, scalar on every ISA.
#pragma once

#include "peft4j_axpy.h"
#include "peft4j_cpu.h"
#include "peft4j_lora_linear.h"
#include "peft4j_threads.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace peft4j {

inline float round_to(float, float v) { return v; }
inline float round_to(uint16_t, float v) { return bf16_to_f32(f32_to_bf16(v)); }
inline void store_as(float* p, float v) { *p = v; }
inline void store_as(uint16_t* p, float v) { *p = f32_to_bf16(v); }

// ---- Σ x² in float32 ----
template <typename T>
inline float sum_squares_scalar(const T* x, int64_t n) {
    float s = 0.f;
    for (int64_t i = 0; i < n; i++) {
        float v = load_scalar(x, i);
        s += v * v;
    }
    return s;
}

#if defined(__x86_64__)
template <typename T>
__attribute__((target("avx2,fma")))
inline float sum_squares_avx2(const T* x, int64_t n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 v0 = load8(x + i), v1 = load8(x + i + 8);
        a0 = _mm256_fmadd_ps(v0, v0, a0);
        a1 = _mm256_fmadd_ps(v1, v1, a1);
    }
    for (; i + 8 <= n; i += 8) {
        __m256 v = load8(x + i);
        a0 = _mm256_fmadd_ps(v, v, a0);
    }
    return hsum8(_mm256_add_ps(a0, a1)) + sum_squares_scalar(x + i, n - i);
}

template <typename T>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
inline float sum_squares_avx512(const T* x, int64_t n) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 v0 = load16(x + i), v1 = load16(x + i + 16);
        a0 = _mm512_fmadd_ps(v0, v0, a0);
        a1 = _mm512_fmadd_ps(v1, v1, a1);
    }
    if (i < n) {
        for (; i < n; i += 16) {
            __mmask16 m = lanes16(n - i);
            __m512 v = load16_masked(x + i, m);
            a0 = _mm512_fmadd_ps(v, v, a0);
        }
    }
    return hsum16(_mm512_add_ps(a0, a1));
}
#endif

template <typename T>
inline float sum_squares(int isa, const T* x, int64_t n) {
#if defined(__x86_64__)
    if (isa >= ISA_AVX512) return sum_squares_avx512(x, n);
    if (isa >= ISA_AVX2) return sum_squares_avx2(x, n);
#endif
    (void) isa;
    return sum_squares_scalar(x, n);
}

// y[rows, dim] = w · T(x · rsqrt(mean(x²) + eps)); unit_offset (GemmaRMSNorm): y = T(x · rsqrt(...) · (1 + w)), the
// product in float32 and rounded once. y may be x.
template <typename T>
inline void rms_norm(T* y, const T* x, const T* w, int64_t rows, int64_t dim, float eps, bool unit_offset = false) {
    const int isa = active_isa();
    for (int64_t r = 0; r < rows; r++) {
        const T* xr = x + r * dim;
        T* yr = y + r * dim;
        const float var = sum_squares(isa, xr, dim) / (float) dim;
        const float inv = 1.0f / std::sqrt(var + eps);  // libtorch's rsqrt: a correctly rounded sqrt, then 1/x
        if (unit_offset) {
            for (int64_t i = 0; i < dim; i++) store_as(yr + i, load_scalar(xr, i) * inv * (1.0f + load_scalar(w, i)));
        } else {
            for (int64_t i = 0; i < dim; i++) {
                const float normed = round_to(T(), load_scalar(xr, i) * inv);
                store_as(yr + i, load_scalar(w, i) * normed);
            }
        }
    }
}

// r = T(r + a) in place, then y = rms_norm(r); y must not alias r
template <typename T>
inline void add_rms_norm(T* r, const T* a, T* y, const T* w, int64_t rows, int64_t dim, float eps,
                         bool unit_offset = false) {
    for (int64_t i = 0; i < rows * dim; i++) store_as(r + i, load_scalar(r, i) + load_scalar(a, i));
    rms_norm(y, r, w, rows, dim, eps, unit_offset);
}

// x[rows, heads, dim] in place: row i's token at position pos[i]; the leading rot dims of each head rotate (rot = 0:
// all dim), inv_freq has rot / 2 float32 entries. cos and sin as transformers builds them: float32 freqs = pos ·
// inv_freq, cos / sin in float32, times attn_scaling in float32 (Phi-3's long-RoPE factor), rounded to T.
template <typename T>
inline void rope(T* x, int64_t rows, int64_t heads, int64_t dim, const int64_t* pos, const float* inv_freq,
                 int64_t rot = 0, float attn_scaling = 1.0f) {
    const int64_t half = (rot > 0 ? rot : dim) / 2;
    std::vector<float> c((size_t) half), s((size_t) half);
    for (int64_t i = 0; i < rows; i++) {
        const float p = (float) pos[i];
        for (int64_t j = 0; j < half; j++) {
            const float f = p * inv_freq[j];
            c[(size_t) j] = round_to(T(), attn_scaling == 1.0f ? std::cos(f) : std::cos(f) * attn_scaling);
            s[(size_t) j] = round_to(T(), attn_scaling == 1.0f ? std::sin(f) : std::sin(f) * attn_scaling);
        }
        for (int64_t h = 0; h < heads; h++) {
            T* v = x + (i * heads + h) * dim;
            for (int64_t j = 0; j < half; j++) {
                const float x1 = load_scalar(v, j), x2 = load_scalar(v, j + half);
                const float cj = c[(size_t) j], sj = s[(size_t) j];
                // x·cos, rotate_half(x)·sin = (-x2, x1)·sin, then their sum: each rounded to T, as three ops would
                const float lo = round_to(T(), x1 * cj) + round_to(T(), -x2 * sj);
                const float hi = round_to(T(), x2 * cj) + round_to(T(), x1 * sj);
                store_as(v + j, lo);
                store_as(v + j + half, hi);
            }
        }
    }
}

// ---- acc[0:n] += a · v[0:n] (float32 accumulators, v of the storage type) ----
template <typename T>
inline void acc_axpy_scalar(float* acc, const T* v, float a, int64_t n) {
    for (int64_t i = 0; i < n; i++) acc[i] += a * load_scalar(v, i);
}

#if defined(__x86_64__)
template <typename T>
__attribute__((target("avx2,fma")))
inline void acc_axpy_avx2(float* acc, const T* v, float a, int64_t n) {
    const __m256 av = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(acc + i, _mm256_fmadd_ps(av, load8(v + i), _mm256_loadu_ps(acc + i)));
    for (; i < n; i++) acc[i] = std::fma(a, load_scalar(v, i), acc[i]);
}

template <typename T>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
inline void acc_axpy_avx512(float* acc, const T* v, float a, int64_t n) {
    const __m512 av = _mm512_set1_ps(a);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = lanes16(n - i);
        _mm512_mask_storeu_ps(acc + i, m, _mm512_fmadd_ps(av, load16_masked(v + i, m), _mm512_maskz_loadu_ps(m, acc + i)));
    }
}
#endif

template <typename T>
inline void acc_axpy(int isa, float* acc, const T* v, float a, int64_t n) {
#if defined(__x86_64__)
    if (isa >= ISA_AVX512) return acc_axpy_avx512(acc, v, a, n);
    if (isa >= ISA_AVX2) return acc_axpy_avx2(acc, v, a, n);
#endif
    (void) isa;
    acc_axpy_scalar(acc, v, a, n);
}

// Decode attention over a slot cache. q [rows, heads, dim], k and v [rows, kv_heads, dim] (RoPE already applied to q
// and k); kc, vc [slots, kv_heads, max_len, dim]. Row i writes its k, v at position past[i] of slot slot[i], then each
// of its query heads attends to positions [lo, past[i]] of that slot, lo = max(0, past[i] + 1 - window) when
// window > 0, else 0; heads h·G .. h·G + G - 1 (G = heads / kv_heads) share kv head h. out [rows, heads, dim].
// softcap > 0: the scaled scores are soft-capped, cap · tanh(score / cap), before the softmax.
// The caller has checked the slots and lengths (past[i] < max_len) and that no two rows share a slot.
template <typename T>
inline void decode_attention(const T* q, const T* k, const T* v, T* kc, T* vc, int64_t max_len,
                             const int32_t* slot, const int64_t* past, int64_t rows, int64_t heads, int64_t kv_heads,
                             int64_t dim, int64_t window, float scale, T* out, int threads, float softcap = 0.f) {
    const int isa = active_isa();
    const int64_t G = heads / kv_heads;
    for (int64_t i = 0; i < rows; i++) {
        for (int64_t h = 0; h < kv_heads; h++) {
            const int64_t at = (((int64_t) slot[i] * kv_heads + h) * max_len + past[i]) * dim;
            std::memcpy(kc + at, k + (i * kv_heads + h) * dim, sizeof(T) * (size_t) dim);
            std::memcpy(vc + at, v + (i * kv_heads + h) * dim, sizeof(T) * (size_t) dim);
        }
    }
    int64_t work = 0;
    for (int64_t i = 0; i < rows; i++) work += (past[i] + 1) * heads * dim;
    const std::function<void(int64_t)> task = [&](int64_t t) {
        const int64_t i = t / kv_heads, h = t % kv_heads;
        const int64_t n_end = past[i] + 1;
        const int64_t lo = window > 0 ? std::max<int64_t>(0, n_end - window) : 0;
        const int64_t n = n_end - lo;
        const int64_t base = ((int64_t) slot[i] * kv_heads + h) * max_len;
        const T* kh = kc + (base + lo) * dim;
        const T* vh = vc + (base + lo) * dim;
        thread_local std::vector<float> qf, sc, acc;
        qf.resize((size_t) (G * dim));
        sc.resize((size_t) (G * n));
        acc.assign((size_t) (G * dim), 0.f);
        const T* qh = q + (i * heads + h * G) * dim;
        for (int64_t j = 0; j < G * dim; j++) qf[(size_t) j] = load_scalar(qh, j);
        rows_times_rowsT(isa, qf.data(), G, kh, 0, n, dim, sc.data(), n);
        for (int64_t g = 0; g < G; g++) {
            float* s = sc.data() + g * n;
            float mx = -INFINITY;
            if (softcap > 0.f) {
                // Gemma 2: (q·k · scale) / cap, tanh, · cap, as its eager attention (in float32 here)
                for (int64_t p = 0; p < n; p++) {
                    s[p] = std::tanh(s[p] * scale / softcap) * softcap;
                    mx = std::max(mx, s[p]);
                }
            } else {
                for (int64_t p = 0; p < n; p++) {
                    s[p] *= scale;
                    mx = std::max(mx, s[p]);
                }
            }
            float sum = 0.f;
            for (int64_t p = 0; p < n; p++) {
                s[p] = std::exp(s[p] - mx);
                sum += s[p];
            }
            const float inv = 1.0f / sum;
            for (int64_t p = 0; p < n; p++) s[p] *= inv;
        }
        for (int64_t p = 0; p < n; p++) {
            for (int64_t g = 0; g < G; g++) acc_axpy(isa, acc.data() + g * dim, vh + p * dim, sc[(size_t) (g * n + p)], dim);
        }
        T* oh = out + (i * heads + h * G) * dim;
        for (int64_t j = 0; j < G * dim; j++) store_as(oh + j, acc[(size_t) j]);
    };
    // a region's fork and join cost a few µs: worth it only once the cached positions make the work large
    const int use = work >= (int64_t) 1 << 16 ? threads : 1;
    ThreadPool::instance().parallel_for(rows * kv_heads, use, task);
}

// ---- the gated MLP's activation: y = T(T(act(g)) · u), as libtorch's act op then its mul ----
// act: silu x / (1 + exp(-x)); gelu (erf) 0.5·x·(1 + erf(x / √2)); gelu_tanh 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)));
// relu. float32 arithmetic. SIMD (AVX2, AVX-512) for silu and gelu_tanh with a Cephes-style exp (about 1 ulp of
// float32, where libtorch's SLEEF exp is within 1 ulp too: a bf16 result rounds the same but for rare ties); gelu and
// relu scalar on every ISA.
enum GateAct : int { ACT_SILU = 0, ACT_GELU = 1, ACT_GELU_TANH = 2, ACT_RELU = 3 };

inline float act_scalar(int act, float x) {
    switch (act) {
        case ACT_SILU: return x / (1.0f + std::exp(-x));
        case ACT_GELU: return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f));
        case ACT_GELU_TANH: {
            const float inner = 0.79788456080286536f * (x + 0.044715f * (x * x * x));
            return 0.5f * x * (1.0f + std::tanh(inner));
        }
        default: return x > 0.f ? x : (x == x ? 0.f : x);  // relu; NaN stays NaN
    }
}

template <typename T>
inline void act_mul_scalar(int act, T* y, const T* g, const T* u, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const float a = round_to(T(), act_scalar(act, load_scalar(g, i)));
        store_as(y + i, a * load_scalar(u, i));
    }
}

#if defined(__x86_64__)
// Cephes' expf: 2^n · p(r), r = x - n·ln 2 in two parts, p of degree 7 (about 1 ulp)
#define PEFT4J_EXP_POLY(MUL, ADD, SET1, r)                                                                        \
    ADD(MUL(ADD(MUL(ADD(MUL(ADD(MUL(ADD(MUL(ADD(MUL(SET1(1.9875691500E-4f), r), SET1(1.3981999507E-3f)), r),       \
                                        SET1(8.3334519073E-3f)), r), SET1(4.1665795894E-2f)), r),                  \
                        SET1(1.6666665459E-1f)), r), SET1(5.0000001201E-1f)), MUL(r, r)), ADD(r, SET1(1.0f)))

__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
inline __m512 exp16(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.0f)), _mm512_set1_ps(89.0f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    const __m512 p = PEFT4J_EXP_POLY(_mm512_mul_ps, _mm512_add_ps, _mm512_set1_ps, r);
    return _mm512_scalef_ps(p, n);  // 2^n: overflow to inf, underflow to 0
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
inline __m512 act16(int act, __m512 x) {
    const __m512 one = _mm512_set1_ps(1.0f);
    if (act == ACT_SILU) return _mm512_div_ps(x, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), x))));
    // gelu_tanh; tanh(v) = 1 - 2 / (1 + exp(2v))
    const __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
    const __m512 v = _mm512_mul_ps(_mm512_set1_ps(0.79788456080286536f),
                                   _mm512_add_ps(x, _mm512_mul_ps(_mm512_set1_ps(0.044715f), x3)));
    const __m512 e = exp16(_mm512_add_ps(v, v));
    const __m512 th = _mm512_sub_ps(one, _mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(one, e)));
    return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), x), _mm512_add_ps(one, th));
}

template <typename T>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
inline void act_mul_avx512(int act, T* y, const T* g, const T* u, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = lanes16(n - i);
        __m512 a = act16(act, load16_masked(g + i, m));
        __m512 out;
        if (std::is_same<T, float>::value) {
            out = _mm512_mul_ps(a, load16_masked(u + i, m));
            _mm512_mask_storeu_ps((float*) (y + i), m, out);
        } else {
            // the activation's output rounded to bf16 first, as its own op stores it
            a = bf16x16_to_f32_avx512(f32x16_to_bf16_avx512(a));
            out = _mm512_mul_ps(a, load16_masked(u + i, m));
            _mm256_mask_storeu_epi16((uint16_t*) (y + i), m, f32x16_to_bf16_avx512(out));
        }
    }
}

__attribute__((target("avx2,fma")))
inline __m256 exp8(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    const __m256 p = PEFT4J_EXP_POLY(_mm256_mul_ps, _mm256_add_ps, _mm256_set1_ps, r);
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

__attribute__((target("avx2,fma")))
inline __m256 act8(int act, __m256 x) {
    const __m256 one = _mm256_set1_ps(1.0f);
    if (act == ACT_SILU) return _mm256_div_ps(x, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), x))));
    const __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
    const __m256 v = _mm256_mul_ps(_mm256_set1_ps(0.79788456080286536f),
                                   _mm256_add_ps(x, _mm256_mul_ps(_mm256_set1_ps(0.044715f), x3)));
    const __m256 e = exp8(_mm256_add_ps(v, v));
    const __m256 th = _mm256_sub_ps(one, _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(one, e)));
    return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), _mm256_add_ps(one, th));
}

template <typename T>
__attribute__((target("avx2,fma")))
inline void act_mul_avx2(int act, T* y, const T* g, const T* u, int64_t n) {
    int64_t i = 0;
    alignas(32) float buf[8];
    for (; i + 8 <= n; i += 8) {
        __m256 a = act8(act, load8(g + i));
        _mm256_store_ps(buf, a);
        // rounded to T first, as the activation's own op stores it, then the product rounded to T
        for (int j = 0; j < 8; j++) store_as(y + i + j, round_to(T(), buf[j]) * load_scalar(u, i + j));
    }
    act_mul_scalar(act, y + i, g + i, u + i, n - i);
}
#undef PEFT4J_EXP_POLY
#endif

template <typename T>
inline void act_mul(int isa, int act, T* y, const T* g, const T* u, int64_t n) {
#if defined(__x86_64__)
    if (act == ACT_SILU || act == ACT_GELU_TANH) {
        if (isa >= ISA_AVX512) return act_mul_avx512(act, y, g, u, n);
        if (isa >= ISA_AVX2) return act_mul_avx2(act, y, g, u, n);
    }
#endif
    (void) isa;
    act_mul_scalar(act, y, g, u, n);
}

// A gated MLP's input half for one new token per row: y[M, I] = T(T(act(x·Gᵀ)) · (x·Uᵀ)), gate and up as two
// adapted Linears run in one parallel region (up == null: `gate` is a fused [2I, K] gate_up projection, its first
// I outputs the gate's). The activation runs on the caller after the region (I values per row, a few µs).
template <typename T>
inline void gated_linear(const AdaptedLinear* gate, const AdaptedLinear* up, T* y, const T* x, int64_t M, int act,
                         int threads) {
    const int64_t I = up != nullptr ? gate->N : gate->N / 2;
    thread_local std::vector<T> scratch;
    scratch.resize((size_t) (2 * M * I));
    T* g = scratch.data();
    T* u = scratch.data() + M * I;
    if (up != nullptr) {
        const AdaptedLinear* layers[2] = {gate, up};
        T* ys[2] = {g, u};
        adapted_linear_forward_group<T>(layers, ys, 2, x, M, threads);
    } else {
        adapted_linear_forward<T>(*gate, g, x, M, threads);  // [M, 2I]: row m's gate then its up
    }
    const int isa = active_isa();
    for (int64_t m = 0; m < M; m++) {
        const T* gm = up != nullptr ? g + m * I : g + m * 2 * I;
        const T* um = up != nullptr ? u + m * I : g + m * 2 * I + I;
        act_mul(isa, act, y + m * I, gm, um, I);
    }
}

}  // namespace peft4j
