// A/B of the fused decode layer (adapted_linear_forward, bf16, K = N = 4096, r = 16, 4 distinct weights per version
// so every call streams its weight from DRAM): two versions of src/main/cpp, A/ and B/ (see ab.sh), called
// alternately in one process. MS=1,4 (default) picks the row counts. Prints each version's median and B / A.
#define peft4j peftA
#include "A/peft4j_lora_linear.h"
#undef peft4j
#define peft4j peftB
#include "B/peft4j_lora_linear.h"
#undef peft4j
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

int main(int argc, char** argv) {
    const int64_t K = 4096, N = 4096, r = 16;
    const int nw = 4, threads = 2;
    const int rounds = argc > 1 ? atoi(argv[1]) : 100;
    std::mt19937 g(1);
    std::normal_distribution<float> d(0, 0.02f);
    auto alloc = [&](size_t n) {
        uint16_t* p = (uint16_t*) aligned_alloc(64, (n * 2 + 63) / 64 * 64);
        for (size_t i = 0; i < n; i++) p[i] = peftA::f32_to_bf16(d(g));
        return p;
    };
    uint16_t* A = alloc(r * K);
    uint16_t* B = alloc(N * r);
    uint16_t* x = alloc(16 * K);
    uint16_t* ya = alloc(16 * N);
    uint16_t* yb = alloc(16 * N);
    std::vector<peftA::AdaptedLinear> LA(nw);
    std::vector<peftB::AdaptedLinear> LB(nw);
    for (int i = 0; i < nw; i++) {
        LA[i].dtype = peftA::DT_BF16; LA[i].K = K; LA[i].N = N; LA[i].W = alloc(K * N); LA[i].bias = nullptr;
        LA[i].adapters = {{A, B, (int) r, 2.0f}}; LA[i].total_rank = r;
        LB[i].dtype = peftB::DT_BF16; LB[i].K = K; LB[i].N = N; LB[i].W = alloc(K * N); LB[i].bias = nullptr;
        LB[i].adapters = {{A, B, (int) r, 2.0f}}; LB[i].total_rank = r;
    }
    std::vector<int> ms;
    const char* env = getenv("MS");
    for (const char* p = env ? env : "1,4"; *p;) {
        ms.push_back(atoi(p));
        while (*p && *p != ',') p++;
        if (*p) p++;
    }
    for (int M : ms) {
        std::vector<double> ta, tb;
        int ia = 0, ib = 0;
        for (int w = 0; w < 8; w++) {
            peftA::adapted_linear_forward<uint16_t>(LA[ia++ % nw], ya, x, M, threads);
            peftB::adapted_linear_forward<uint16_t>(LB[ib++ % nw], yb, x, M, threads);
        }
        for (int i = 0; i < rounds; i++) {
            for (int v = 0; v < 2; v++) {
                const bool isA = (v == 0) == (i % 2 == 0);
                auto t0 = std::chrono::steady_clock::now();
                if (isA) peftA::adapted_linear_forward<uint16_t>(LA[ia++ % nw], ya, x, M, threads);
                else peftB::adapted_linear_forward<uint16_t>(LB[ib++ % nw], yb, x, M, threads);
                (isA ? ta : tb).push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
            }
        }
        std::sort(ta.begin(), ta.end());
        std::sort(tb.begin(), tb.end());
        const double ma = ta[ta.size() / 2], mb = tb[tb.size() / 2];
        printf("decode bf16 M=%-2d  A %8.1f us  B %8.1f us  B/A %.3f\n", M, ma, mb, mb / ma);
    }
}
