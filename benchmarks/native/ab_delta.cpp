// A/B of the prefill LoRA delta (lora_delta, bf16 or float32, K = N = 4096, r = 16, 128 and 512 rows): two versions of
// src/main/cpp, A/ and B/ (see ab.sh), compiled side by side in namespaces peftA / peftB, called alternately in one
// process so that the machine's drift hits both; with FLUSH=1 a 64 MiB read evicts the caches before each call (as
// libtorch's GEMM leaves them). Prints each version's median and B / A.
#define peft4j peftA
#include "A/peft4j_lora_delta.h"
#undef peft4j
#define peft4j peftB
#include "B/peft4j_lora_delta.h"
#undef peft4j
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#ifndef AB_FLOAT
using T = uint16_t;
static T cvt(float v) { return peftA::f32_to_bf16(v); }
#else
using T = float;
static T cvt(float v) { return v; }
#endif

int main(int argc, char** argv) {
    const int64_t K = 4096, N = 4096, r = 16;
    const int threads = 2;
    const int rounds = argc > 1 ? atoi(argv[1]) : 100;
    const bool flush = getenv("FLUSH") && atoi(getenv("FLUSH")) != 0;
    std::mt19937 g(1);
    std::normal_distribution<float> d(0, 0.02f);
    auto alloc = [&](size_t n) {
        T* p = (T*) aligned_alloc(64, (n * sizeof(T) + 63) / 64 * 64);
        for (size_t i = 0; i < n; i++) p[i] = cvt(d(g));
        return p;
    };
    T* A = alloc(r * K);
    T* B = alloc(N * r);
    peftA::LoraSlot sa{A, B, (int) r, 2.0f};
    peftB::LoraSlot sb{A, B, (int) r, 2.0f};
    std::vector<float> junk(16 << 20, 1.0f);
    volatile float sink = 0;
    for (int64_t M : {128, 512}) {
        T* x = alloc(M * K);
        T* y = alloc(M * N);
        std::vector<double> ta, tb;
        for (int w = 0; w < 5; w++) {
            peftA::lora_delta<T>(y, x, M, K, N, &sa, 1, nullptr, threads);
            peftB::lora_delta<T>(y, x, M, K, N, &sb, 1, nullptr, threads);
        }
        for (int i = 0; i < rounds; i++) {
            for (int v = 0; v < 2; v++) {
                const bool isA = (v == 0) == (i % 2 == 0);
                if (flush) {
                    float acc = 0;
#pragma omp parallel for reduction(+ : acc)
                    for (size_t q = 0; q < junk.size(); q += 16) acc += junk[q];
                    sink = acc;
                }
                auto t0 = std::chrono::steady_clock::now();
                if (isA) peftA::lora_delta<T>(y, x, M, K, N, &sa, 1, nullptr, threads);
                else peftB::lora_delta<T>(y, x, M, K, N, &sb, 1, nullptr, threads);
                (isA ? ta : tb).push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
            }
        }
        std::sort(ta.begin(), ta.end());
        std::sort(tb.begin(), tb.end());
        const double ma = ta[ta.size() / 2], mb = tb[tb.size() / 2];
        printf("delta %s M=%-4ld flush=%d  A %8.1f us  B %8.1f us  B/A %.3f\n", sizeof(T) == 2 ? "bf16" : "f32", (long) M,
               flush, ma, mb, mb / ma);
        free(x);
        free(y);
    }
    (void) sink;
}
