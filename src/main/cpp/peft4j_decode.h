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
// squares and the attention's dot products, exponentials and weighted sums; the rest is elementwise over a few
// thousand values per token, scalar on every ISA.
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

// Row tables of RoPE at position pos: c[j] = T(cos(pos · inv_freq[j]) · attn_scaling), s[j] likewise, j < half
template <typename T>
inline void rope_table(T, int64_t pos, const float* inv_freq, int64_t half, float attn_scaling, float* c, float* s) {
    const float p = (float) pos;
    for (int64_t j = 0; j < half; j++) {
        const float f = p * inv_freq[j];
        c[j] = round_to(T(), attn_scaling == 1.0f ? std::cos(f) : std::cos(f) * attn_scaling);
        s[j] = round_to(T(), attn_scaling == 1.0f ? std::sin(f) : std::sin(f) * attn_scaling);
    }
}

// One head vector v rotated in place on its leading 2·half dims by the tables c, s
template <typename T>
inline void rope_rotate(T* v, int64_t half, const float* c, const float* s) {
    for (int64_t j = 0; j < half; j++) {
        const float x1 = load_scalar(v, j), x2 = load_scalar(v, j + half);
        // x·cos, rotate_half(x)·sin = (-x2, x1)·sin, then their sum: each rounded to T, as three ops would
        const float lo = round_to(T(), x1 * c[j]) + round_to(T(), -x2 * s[j]);
        const float hi = round_to(T(), x2 * c[j]) + round_to(T(), x1 * s[j]);
        store_as(v + j, lo);
        store_as(v + j + half, hi);
    }
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
        rope_table(T(), pos[i], inv_freq, half, attn_scaling, c.data(), s.data());
        for (int64_t h = 0; h < heads; h++) rope_rotate(x + (i * heads + h) * dim, half, c.data(), s.data());
    }
}

// ---- acc[0:n] += a · v[0:n] (float32 accumulators, v of the storage type), the scalar attention's ----
template <typename T>
inline void acc_axpy_scalar(float* acc, const T* v, float a, int64_t n) {
    for (int64_t i = 0; i < n; i++) acc[i] += a * load_scalar(v, i);
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
    // clamped with x as the second operand of min / max: a NaN passes through
    x = _mm512_min_ps(_mm512_set1_ps(89.0f), _mm512_max_ps(_mm512_set1_ps(-104.0f), x));
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
    x = _mm256_min_ps(_mm256_set1_ps(88.3f), _mm256_max_ps(_mm256_set1_ps(-87.3f), x));  // a NaN passes through
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

// ---- decode attention over a slot cache ----
// Per (row, kv head): the G query heads that share the kv head score the n cached positions (q·kᵀ, float32 dot
// products), the softmax's numerators exp(s·scale - max) and their sum in float32, then out = (Σ_p e_p·v_p) / Σ e,
// rounded to T. SIMD (AVX2, AVX-512) for the scores, the exponentials (the Cephes-style exp of the activations, about
// 1 ulp of float32 where std::exp is correctly rounded or nearly so) and the weighted sums; the scalar path keeps
// std::exp. A NaN score makes its heads' outputs NaN on every path.

// s[0:n] = exp(s·scale - max(s·scale)) in place; returns their sum
inline float softmax_numerators_scalar(float* s, int64_t n, float scale) {
    float mx = -INFINITY;
    for (int64_t p = 0; p < n; p++) {
        s[p] *= scale;
        mx = std::max(mx, s[p]);
    }
    float sum = 0.f;
    for (int64_t p = 0; p < n; p++) {
        s[p] = std::exp(s[p] - mx);
        sum += s[p];
    }
    return sum;
}

// out[G, dim] = (Σ_p e[g, p]·v_p) · inv[g], rounded to T; float32 accumulators
template <typename T>
inline void weighted_sum_scalar(const float* e, int64_t G, int64_t n, const T* vh, int64_t dim, const float* inv,
                                float* acc, T* oh) {
    std::fill(acc, acc + G * dim, 0.f);
    for (int64_t p = 0; p < n; p++) {
        for (int64_t g = 0; g < G; g++) acc_axpy_scalar(acc + g * dim, vh + p * dim, e[g * n + p], dim);
    }
    for (int64_t g = 0; g < G; g++) {
        for (int64_t j = 0; j < dim; j++) store_as(oh + g * dim + j, acc[g * dim + j] * inv[g]);
    }
}

#if defined(__x86_64__)
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
inline float softmax_numerators_avx512(float* s, int64_t n, float scale) {
    const __m512 sv = _mm512_set1_ps(scale);
    __m512 mx = _mm512_set1_ps(-INFINITY);
    for (int64_t p = 0; p < n; p += 16) {
        const __mmask16 m = lanes16(n - p);
        const __m512 x = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, s + p), sv);
        _mm512_mask_storeu_ps(s + p, m, x);
        mx = _mm512_mask_max_ps(mx, m, mx, x);
    }
    const __m512 mv = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    __m512 sum = _mm512_setzero_ps();
    for (int64_t p = 0; p < n; p += 16) {
        const __mmask16 m = lanes16(n - p);
        const __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + p), mv));
        _mm512_mask_storeu_ps(s + p, m, e);
        sum = _mm512_mask_add_ps(sum, m, sum, e);
    }
    return _mm512_reduce_add_ps(sum);
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
inline void store16_as(float* p, __mmask16 m, __m512 v) { _mm512_mask_storeu_ps(p, m, v); }
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
inline void store16_as(uint16_t* p, __mmask16 m, __m512 v) { _mm256_mask_storeu_epi16(p, m, f32x16_to_bf16_avx512(v)); }

// GB query heads (g0 ..) over dims [d0, d0 + 64) ∩ [0, dim): GB x 4 accumulators, each v vector loaded once for all GB
template <int GB, typename T>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
inline void weighted_sum_block_avx512(const float* e, int64_t g0, int64_t n, const T* vh, int64_t dim, int64_t d0,
                                      const float* inv, T* oh) {
    __mmask16 m[4];
    for (int c = 0; c < 4; c++) m[c] = lanes16(std::max<int64_t>(0, dim - d0 - 16 * c));
    __m512 acc[GB][4];
    for (int g = 0; g < GB; g++)
        for (int c = 0; c < 4; c++) acc[g][c] = _mm512_setzero_ps();
    for (int64_t p = 0; p < n; p++) {
        const T* vp = vh + p * dim + d0;
        __m512 vv[4];
        for (int c = 0; c < 4; c++) vv[c] = load16_masked(vp + 16 * c, m[c]);
        for (int g = 0; g < GB; g++) {
            const __m512 a = _mm512_set1_ps(e[(g0 + g) * n + p]);
            for (int c = 0; c < 4; c++) acc[g][c] = _mm512_fmadd_ps(a, vv[c], acc[g][c]);
        }
    }
    for (int g = 0; g < GB; g++) {
        const __m512 iv = _mm512_set1_ps(inv[g0 + g]);
        for (int c = 0; c < 4; c++) store16_as(oh + (g0 + g) * dim + d0 + 16 * c, m[c], _mm512_mul_ps(acc[g][c], iv));
    }
}

template <typename T>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
inline void weighted_sum_avx512(const float* e, int64_t G, int64_t n, const T* vh, int64_t dim, const float* inv,
                                T* oh) {
    for (int64_t d0 = 0; d0 < dim; d0 += 64) {
        for (int64_t g0 = 0; g0 < G; g0 += 4) {
            switch (std::min<int64_t>(4, G - g0)) {
                case 4: weighted_sum_block_avx512<4>(e, g0, n, vh, dim, d0, inv, oh); break;
                case 3: weighted_sum_block_avx512<3>(e, g0, n, vh, dim, d0, inv, oh); break;
                case 2: weighted_sum_block_avx512<2>(e, g0, n, vh, dim, d0, inv, oh); break;
                default: weighted_sum_block_avx512<1>(e, g0, n, vh, dim, d0, inv, oh); break;
            }
        }
    }
}

__attribute__((target("avx2,fma")))
inline float softmax_numerators_avx2(float* s, int64_t n, float scale) {
    const __m256 sv = _mm256_set1_ps(scale);
    __m256 mx = _mm256_set1_ps(-INFINITY);
    int64_t p = 0;
    for (; p + 8 <= n; p += 8) {
        const __m256 x = _mm256_mul_ps(_mm256_loadu_ps(s + p), sv);
        _mm256_storeu_ps(s + p, x);
        mx = _mm256_max_ps(mx, x);
    }
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, mx);
    float m = -INFINITY;
    for (float l : lanes) m = std::max(m, l);
    for (int64_t t = p; t < n; t++) {
        s[t] *= scale;
        m = std::max(m, s[t]);
    }
    const __m256 mv = _mm256_set1_ps(m);
    __m256 sum = _mm256_setzero_ps();
    for (p = 0; p + 8 <= n; p += 8) {
        const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + p), mv));
        _mm256_storeu_ps(s + p, e);
        sum = _mm256_add_ps(sum, e);
    }
    float total = hsum8(sum);
    for (; p < n; p++) {
        s[p] = std::exp(s[p] - m);
        total += s[p];
    }
    return total;
}

// GB query heads (g0 ..) over dims [d0, d0 + 8·C): GB x C accumulators
template <int GB, int C, typename T>
__attribute__((target("avx2,fma")))
inline void weighted_sum_block_avx2(const float* e, int64_t g0, int64_t n, const T* vh, int64_t dim, int64_t d0,
                                    const float* inv, T* oh) {
    __m256 acc[GB][C];
    for (int g = 0; g < GB; g++)
        for (int c = 0; c < C; c++) acc[g][c] = _mm256_setzero_ps();
    for (int64_t p = 0; p < n; p++) {
        const T* vp = vh + p * dim + d0;
        __m256 vv[C];
        for (int c = 0; c < C; c++) vv[c] = load8(vp + 8 * c);
        for (int g = 0; g < GB; g++) {
            const __m256 a = _mm256_set1_ps(e[(g0 + g) * n + p]);
            for (int c = 0; c < C; c++) acc[g][c] = _mm256_fmadd_ps(a, vv[c], acc[g][c]);
        }
    }
    alignas(32) float buf[8];
    for (int g = 0; g < GB; g++) {
        const __m256 iv = _mm256_set1_ps(inv[g0 + g]);
        for (int c = 0; c < C; c++) {
            _mm256_store_ps(buf, _mm256_mul_ps(acc[g][c], iv));
            T* o = oh + (g0 + g) * dim + d0 + 8 * c;
            for (int j = 0; j < 8; j++) store_as(o + j, buf[j]);
        }
    }
}

template <int C, typename T>
__attribute__((target("avx2,fma")))
inline void weighted_sum_chunks_avx2(const float* e, int64_t G, int64_t n, const T* vh, int64_t dim, int64_t d0,
                                     const float* inv, T* oh) {
    int64_t g0 = 0;
    for (; g0 + 3 <= G; g0 += 3) weighted_sum_block_avx2<3, C>(e, g0, n, vh, dim, d0, inv, oh);
    for (; g0 < G; g0++) weighted_sum_block_avx2<1, C>(e, g0, n, vh, dim, d0, inv, oh);
}

template <typename T>
__attribute__((target("avx2,fma")))
inline void weighted_sum_avx2(const float* e, int64_t G, int64_t n, const T* vh, int64_t dim, const float* inv,
                              float* acc, T* oh) {
    int64_t d0 = 0;
    for (; d0 + 32 <= dim; d0 += 32) weighted_sum_chunks_avx2<4>(e, G, n, vh, dim, d0, inv, oh);
    for (; d0 + 8 <= dim; d0 += 8) weighted_sum_chunks_avx2<1>(e, G, n, vh, dim, d0, inv, oh);
    if (d0 < dim) {  // the last dim % 8 dims
        const int64_t r = dim - d0;
        std::fill(acc, acc + G * r, 0.f);
        for (int64_t p = 0; p < n; p++) {
            for (int64_t g = 0; g < G; g++) acc_axpy_scalar(acc + g * r, vh + p * dim + d0, e[g * n + p], r);
        }
        for (int64_t g = 0; g < G; g++) {
            for (int64_t j = 0; j < r; j++) store_as(oh + g * dim + d0 + j, acc[g * r + j] * inv[g]);
        }
    }
}
#endif

// One (row, kv head) task: qh [G, dim], kh / vh [n, dim] (the attended positions), oh [G, dim]; scratch holds
// G·dim + G·n + G floats
template <typename T>
inline void attend_kv_head(int isa, const T* qh, int64_t G, const T* kh, const T* vh, int64_t n, int64_t dim,
                           float scale, float softcap, float* scratch, T* oh) {
    float* qf = scratch;         // q in float32, then the scalar paths' accumulators
    float* sc = qf + G * dim;    // scores, then the softmax's numerators
    float* inv = sc + G * n;     // 1 / Σ numerators per head
    for (int64_t j = 0; j < G * dim; j++) qf[j] = load_scalar(qh, j);
    rows_times_rowsT(isa, qf, G, kh, 0, n, dim, sc, n);
    for (int64_t g = 0; g < G; g++) {
        float* s = sc + g * n;
        float sscale = scale;
        if (softcap > 0.f) {
            // Gemma 2: (q·k · scale) / cap, tanh, · cap, as its eager attention (in float32 here)
            for (int64_t p = 0; p < n; p++) s[p] = std::tanh(s[p] * scale / softcap) * softcap;
            sscale = 1.0f;
        }
        float sum;
#if defined(__x86_64__)
        if (isa >= ISA_AVX512) sum = softmax_numerators_avx512(s, n, sscale);
        else if (isa >= ISA_AVX2) sum = softmax_numerators_avx2(s, n, sscale);
        else
#endif
            sum = softmax_numerators_scalar(s, n, sscale);
        inv[g] = 1.0f / sum;
    }
#if defined(__x86_64__)
    if (isa >= ISA_AVX512) return weighted_sum_avx512(sc, G, n, vh, dim, inv, oh);
    if (isa >= ISA_AVX2) return weighted_sum_avx2(sc, G, n, vh, dim, inv, qf, oh);
#endif
    weighted_sum_scalar(sc, G, n, vh, dim, inv, qf, oh);
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
    int64_t work = 0, longest = 0;
    for (int64_t i = 0; i < rows; i++) {
        for (int64_t h = 0; h < kv_heads; h++) {
            const int64_t at = (((int64_t) slot[i] * kv_heads + h) * max_len + past[i]) * dim;
            std::memcpy(kc + at, k + (i * kv_heads + h) * dim, sizeof(T) * (size_t) dim);
            std::memcpy(vc + at, v + (i * kv_heads + h) * dim, sizeof(T) * (size_t) dim);
        }
        work += (past[i] + 1) * heads * dim;
        longest = std::max(longest, past[i] + 1);
    }
    // one scratch block per task, grown (never shrunk) on the calling thread
    const int64_t per_task = G * dim + G * longest + G;
    thread_local std::vector<float> scratch;
    if ((int64_t) scratch.size() < rows * kv_heads * per_task) scratch.resize((size_t) (rows * kv_heads * per_task));
    float* scratch0 = scratch.data();
    const std::function<void(int64_t)> task = [&](int64_t t) {
        const int64_t i = t / kv_heads, h = t % kv_heads;
        const int64_t n_end = past[i] + 1;
        const int64_t lo = window > 0 ? std::max<int64_t>(0, n_end - window) : 0;
        const int64_t base = ((int64_t) slot[i] * kv_heads + h) * max_len;
        attend_kv_head(isa, q + (i * heads + h * G) * dim, G, kc + (base + lo) * dim, vc + (base + lo) * dim,
                       n_end - lo, dim, scale, softcap, scratch0 + t * per_task, out + (i * heads + h * G) * dim);
    };
    // a region's fork and join cost a few µs: worth it only once the cached positions make the work large
    const int use = work >= (int64_t) 1 << 16 ? threads : 1;
    ThreadPool::instance().parallel_for(rows * kv_heads, use, task);
}

// RoPE (as rope()) on q [rows, heads, dim] and k [rows, kv_heads, dim] in place, then decode_attention: one call
// per layer. The cos / sin tables of the step's positions are kept per thread and reused while the positions, the
// inverse frequencies, the scaling and T stay the same (every layer of a step).
template <typename T>
inline void decode_rope_attention(T* q, T* k, const T* v, T* kc, T* vc, int64_t max_len, const int32_t* slot,
                                  const int64_t* past, int64_t rows, int64_t heads, int64_t kv_heads, int64_t dim,
                                  int64_t window, float scale, T* out, int threads, float softcap,
                                  const float* inv_freq, int64_t rot, float attn_scaling) {
    const int64_t half = (rot > 0 ? rot : dim) / 2;
    struct Tables {
        std::vector<int64_t> pos;
        std::vector<float> inv, cs;  // cs: row i's cos at [2·i·half, ...), its sin after them
        float scaling = 0.f;
    };
    thread_local Tables t;
    if ((int64_t) t.pos.size() != rows || (int64_t) t.inv.size() != half || t.scaling != attn_scaling
        || !std::equal(t.pos.begin(), t.pos.end(), past) || !std::equal(t.inv.begin(), t.inv.end(), inv_freq)) {
        t.pos.assign(past, past + rows);
        t.inv.assign(inv_freq, inv_freq + half);
        t.scaling = attn_scaling;
        t.cs.resize((size_t) (2 * rows * half));
        for (int64_t i = 0; i < rows; i++)
            rope_table(T(), past[i], inv_freq, half, attn_scaling, t.cs.data() + 2 * i * half,
                       t.cs.data() + (2 * i + 1) * half);
    }
    for (int64_t i = 0; i < rows; i++) {
        const float* c = t.cs.data() + 2 * i * half;
        const float* s = c + half;
        for (int64_t h = 0; h < heads; h++) rope_rotate(q + (i * heads + h) * dim, half, c, s);
        for (int64_t h = 0; h < kv_heads; h++) rope_rotate(k + (i * kv_heads + h) * dim, half, c, s);
    }
    decode_attention<T>(q, k, v, kc, vc, max_len, slot, past, rows, heads, kv_heads, dim, window, scale, out, threads,
                        softcap);
}

// A gated MLP's input half for one new token per row: y[M, I] = T(T(act(x·Gᵀ)) · (x·Uᵀ)), gate and up as two
// adapted Linears run in one parallel region (up == null: `gate` is a fused [2I, K] gate_up projection, its first
// I outputs the gate's). The activation runs on the caller after the region (I values per row, a few µs).
// gate_slot / up_slot: a mixed batch's per-row adapter index of each layer (null: every adapter on every row).
template <typename T>
inline void gated_linear(const AdaptedLinear* gate, const AdaptedLinear* up, T* y, const T* x, int64_t M, int act,
                         int threads, const int32_t* gate_slot = nullptr, const int32_t* up_slot = nullptr) {
    const int64_t I = up != nullptr ? gate->N : gate->N / 2;
    thread_local std::vector<T> scratch;
    scratch.resize((size_t) (2 * M * I));
    T* g = scratch.data();
    T* u = scratch.data() + M * I;
    if (up != nullptr) {
        const AdaptedLinear* layers[2] = {gate, up};
        T* ys[2] = {g, u};
        const int32_t* slots[2] = {gate_slot, up_slot};
        adapted_linear_forward_group<T>(layers, ys, 2, x, M, threads, slots);
    } else {
        adapted_linear_forward<T>(*gate, g, x, M, threads, gate_slot);  // [M, 2I]: row m's gate then its up
    }
    const int isa = active_isa();
    for (int64_t m = 0; m < M; m++) {
        const T* gm = up != nullptr ? g + m * I : g + m * 2 * I;
        const T* um = up != nullptr ? u + m * I : g + m * 2 * I + I;
        act_mul(isa, act, y + m * I, gm, um, I);
    }
}

}  // namespace peft4j
