// DoRA against plain LoRA in the fused decode kernel (adapted_linear_forward, K = N = 4096, r = 16, 4 distinct
// weights per side so every call streams its weight from DRAM), one build, calls alternating in one process:
// the DoRA side has a dora_scale (one multiply per output in the kernel's write). Prints each side's median and
// minimum per call and DoRA / LoRA for both. Build and run from the repository root:
//   g++ -O3 -std=c++17 -fopenmp -I src/main/cpp benchmarks/native/ab_dora.cpp -o /tmp/ab_dora
//   OMP_WAIT_POLICY=passive MS=1,16 /tmp/ab_dora 200
#include "peft4j_kernels.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

template <typename T>
static void run(int dtype, const char* name, const std::vector<int>& ms, int rounds) {
    const int64_t K = 4096, N = 4096, r = 16;
    const int nw = 4, threads = 2;
    std::mt19937 g(1);
    std::normal_distribution<float> d(0, 0.02f);
    auto alloc = [&](size_t n) {
        T* p = (T*) aligned_alloc(64, (n * sizeof(T) + 63) / 64 * 64);
        for (size_t i = 0; i < n; i++) {
            if constexpr (sizeof(T) == 2) p[i] = peft4j::f32_to_bf16(d(g)); else p[i] = d(g);
        }
        return p;
    };
    T* A = alloc(r * K);
    T* B = alloc(N * r);
    T* x = alloc(16 * K);
    T* ya = alloc(16 * N);
    T* yb = alloc(16 * N);
    std::vector<float> ds(N);
    for (auto& v : ds) v = 1.0f + d(g);
    std::vector<peft4j::AdaptedLinear> lora(nw), dora(nw);
    for (int i = 0; i < nw; i++) {
        for (auto* L : {&lora[i], &dora[i]}) {
            L->dtype = dtype; L->K = K; L->N = N; L->W = alloc(K * N); L->bias = nullptr;
            L->adapters = {{A, B, (int) r, 2.0f}}; L->total_rank = r;
        }
        dora[i].dora_scale = ds;
    }
    for (int M : ms) {
        std::vector<double> tl, td;
        int il = 0, id = 0;
        for (int w = 0; w < 8; w++) {
            peft4j::adapted_linear_forward<T>(lora[il++ % nw], ya, x, M, threads);
            peft4j::adapted_linear_forward<T>(dora[id++ % nw], yb, x, M, threads);
        }
        for (int i = 0; i < rounds; i++) {
            for (int v = 0; v < 2; v++) {
                const bool isLora = (v == 0) == (i % 2 == 0);
                auto t0 = std::chrono::steady_clock::now();
                if (isLora) peft4j::adapted_linear_forward<T>(lora[il++ % nw], ya, x, M, threads);
                else peft4j::adapted_linear_forward<T>(dora[id++ % nw], yb, x, M, threads);
                (isLora ? tl : td).push_back(
                    std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
            }
        }
        std::sort(tl.begin(), tl.end());
        std::sort(td.begin(), td.end());
        const double ml = tl[tl.size() / 2], md = td[td.size() / 2];
        printf("decode %s M=%-2d  median LoRA %8.1f us  DoRA %8.1f us  DoRA/LoRA %.3f   min LoRA %8.1f  DoRA %8.1f  %.3f\n",
               name, M, ml, md, md / ml, tl[0], td[0], td[0] / tl[0]);
    }
}

int main(int argc, char** argv) {
    const int rounds = argc > 1 ? atoi(argv[1]) : 100;
    std::vector<int> ms;
    const char* env = getenv("MS");
    for (const char* p = env ? env : "1,16"; *p;) {
        ms.push_back(atoi(p));
        while (*p && *p != ',') p++;
        if (*p) p++;
    }
    run<float>(peft4j::DT_F32, "f32 ", ms, rounds);
    run<uint16_t>(peft4j::DT_BF16, "bf16", ms, rounds);
}
