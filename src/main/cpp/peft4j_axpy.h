// y += alpha * x over contiguous buffers: the first kernel, proving the Java -> native wiring.
// float32 and bfloat16 (computed in float32 with one fused multiply-add, rounded to nearest even),
// with AVX-512, AVX2+FMA and scalar paths chosen at run time.
#pragma once

#include "peft4j_cpu.h"
#include <cmath>
#include <cstdint>
#if defined(__x86_64__)
#include <immintrin.h>  // x86 SIMD paths only; other architectures build the scalar ones
#endif

namespace peft4j {

#if defined(__x86_64__)
// The mask of the first min(n, 16) lanes (n >= 0): a full vector, or a tail.
inline __mmask16 lanes16(int64_t n) {
    return n >= 16 ? (__mmask16) 0xffff : (__mmask16) ((1u << n) - 1u);
}
#endif

// ---- scalar: the portable reference every SIMD path must match ----
inline void axpy_f32_scalar(float* y, const float* x, float alpha, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = std::fma(alpha, x[i], y[i]);
}

inline void axpy_bf16_scalar(uint16_t* y, const uint16_t* x, float alpha, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        y[i] = f32_to_bf16(std::fma(alpha, bf16_to_f32(x[i]), bf16_to_f32(y[i])));
    }
}

#if defined(__x86_64__)
// ---- AVX2 + FMA ----
__attribute__((target("avx2,fma")))
inline void axpy_f32_avx2(float* y, const float* x, float alpha, int64_t n) {
    const __m256 a = _mm256_set1_ps(alpha);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_fmadd_ps(a, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i));
        _mm256_storeu_ps(y + i, v);
    }
    axpy_f32_scalar(y + i, x + i, alpha, n - i);
}

__attribute__((target("avx2,fma")))
inline __m256 bf16x8_to_f32_avx2(const uint16_t* p) {
    __m128i h = _mm_loadu_si128((const __m128i*) p);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// Round-to-nearest-even float -> bf16 for 8 lanes, NaN kept quiet; matches f32_to_bf16.
__attribute__((target("avx2,fma")))
inline void f32x8_to_bf16_avx2(uint16_t* p, __m256 v) {
    __m256i u = _mm256_castps_si256(v);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
    __m256i nan = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
    __m256i is_nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    __m256i r = _mm256_blendv_epi8(rounded, nan, is_nan);
    // pack 8 x u32 (values < 65536) into 8 x u16
    __m128i lo = _mm256_castsi256_si128(r);
    __m128i hi = _mm256_extracti128_si256(r, 1);
    _mm_storeu_si128((__m128i*) p, _mm_packus_epi32(lo, hi));
}

__attribute__((target("avx2,fma")))
inline void axpy_bf16_avx2(uint16_t* y, const uint16_t* x, float alpha, int64_t n) {
    const __m256 a = _mm256_set1_ps(alpha);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_fmadd_ps(a, bf16x8_to_f32_avx2(x + i), bf16x8_to_f32_avx2(y + i));
        f32x8_to_bf16_avx2(y + i, v);
    }
    axpy_bf16_scalar(y + i, x + i, alpha, n - i);
}

// ---- AVX-512 (F, BW, VL, DQ) ----
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
inline void axpy_f32_avx512(float* y, const float* x, float alpha, int64_t n) {
    const __m512 a = _mm512_set1_ps(alpha);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_fmadd_ps(a, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i));
        _mm512_storeu_ps(y + i, v);
    }
    if (i < n) {  // masked tail: no scalar loop
        __mmask16 m = (__mmask16) ((1u << (n - i)) - 1u);
        __m512 v = _mm512_fmadd_ps(a, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i));
        _mm512_mask_storeu_ps(y + i, m, v);
    }
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
inline __m512 bf16x16_to_f32_avx512(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
inline __m256i f32x16_to_bf16_avx512(__m512 v) {
    __m512i u = _mm512_castps_si512(v);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
    __m512i nan = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
    __mmask16 is_nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    return _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(is_nan, rounded, nan));
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
inline void axpy_bf16_avx512(uint16_t* y, const uint16_t* x, float alpha, int64_t n) {
    const __m512 a = _mm512_set1_ps(alpha);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 xv = bf16x16_to_f32_avx512(_mm256_loadu_si256((const __m256i*) (x + i)));
        __m512 yv = bf16x16_to_f32_avx512(_mm256_loadu_si256((const __m256i*) (y + i)));
        _mm256_storeu_si256((__m256i*) (y + i), f32x16_to_bf16_avx512(_mm512_fmadd_ps(a, xv, yv)));
    }
    if (i < n) {
        __mmask16 m = (__mmask16) ((1u << (n - i)) - 1u);
        __m512 xv = bf16x16_to_f32_avx512(_mm256_maskz_loadu_epi16(m, x + i));
        __m512 yv = bf16x16_to_f32_avx512(_mm256_maskz_loadu_epi16(m, y + i));
        _mm256_mask_storeu_epi16(y + i, m, f32x16_to_bf16_avx512(_mm512_fmadd_ps(a, xv, yv)));
    }
}
#endif  // __x86_64__

// ---- dispatch ----
inline void axpy_f32(float* y, const float* x, float alpha, int64_t n) {
#if defined(__x86_64__)
    switch (active_isa()) {
        case ISA_AVX512_BF16:
        case ISA_AVX512: axpy_f32_avx512(y, x, alpha, n); return;
        case ISA_AVX2: axpy_f32_avx2(y, x, alpha, n); return;
        default: break;
    }
#endif
    axpy_f32_scalar(y, x, alpha, n);
}

inline void axpy_bf16(uint16_t* y, const uint16_t* x, float alpha, int64_t n) {
#if defined(__x86_64__)
    switch (active_isa()) {
        case ISA_AVX512_BF16:
        case ISA_AVX512: axpy_bf16_avx512(y, x, alpha, n); return;
        case ISA_AVX2: axpy_bf16_avx2(y, x, alpha, n); return;
        default: break;
    }
#endif
    axpy_bf16_scalar(y, x, alpha, n);
}

}  // namespace peft4j
