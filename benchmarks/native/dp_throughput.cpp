// VDPBF16PS throughput of one core: 24 independent accumulators (enough to hide the instruction's latency), in
// instructions per second; with 8 accumulators the loop is latency-bound. Each instruction is 32 multiply-adds.
#include <immintrin.h>
#include <chrono>
#include <cstdio>

template <int NA>
__attribute__((target("avx512f,avx512bf16"), noinline)) float run(long n, const float* src) {
    __m512 a[NA];
    for (int i = 0; i < NA; i++) a[i] = _mm512_loadu_ps(src + i);
    __m512bh x = (__m512bh) _mm512_loadu_si512(src + 32), y = (__m512bh) _mm512_loadu_si512(src + 48);
    for (long k = 0; k < n; k++) {
#pragma GCC unroll 32
        for (int i = 0; i < NA; i++) a[i] = _mm512_dpbf16_ps(a[i], x, y);
    }
    __m512 s = a[0];
    for (int i = 1; i < NA; i++) s = _mm512_add_ps(s, a[i]);
    return _mm512_reduce_add_ps(s);
}

int main() {
    static float src[128] = {0};
    const long n = 200000000 / 24;
    auto t0 = std::chrono::steady_clock::now();
    float v8 = run<8>(n * 3, src);
    double s8 = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    auto t1 = std::chrono::steady_clock::now();
    float v24 = run<24>(n, src);
    double s24 = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
    printf("VDPBF16PS per core: %.2f G/s with 24 accumulators, %.2f G/s with 8 (latency-bound) (%g)\n",
           n * 24 / s24 / 1e9, n * 24 / s8 / 1e9, v8 + v24);
}
