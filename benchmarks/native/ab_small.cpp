// A/B of the decode kernel's base product at small M (adapted_linear_forward without adapter, one thread), float32
// and bf16, K x N = 2048 x 5632 and 5632 x 2048 (TinyLlama's MLP shapes), 4 distinct weights per shape so every call
// streams its weight from DRAM: two versions of src/main/cpp, A/ and B/ (see ab.sh small), called alternately in
// one process on the same weights. Times are the calling thread's CPU time (quieter than wall time on a shared
// machine), the lower quartile of the rounds. MS=1,5,8,16 (default) picks the row counts. Prints each version's time,
// B / A, B's rate of reading W, and the largest difference between the two outputs.
#define peft4j peftA
#include "A/peft4j_lora_linear.h"
#undef peft4j
#define peft4j peftB
#include "B/peft4j_lora_linear.h"
#undef peft4j
#include <time.h>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>
static double cpu_us() { timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); return t.tv_sec * 1e6 + t.tv_nsec / 1e3; }
template <typename T> T* alloc(size_t n, std::mt19937& g) {
    T* p = (T*) aligned_alloc(64, (n * sizeof(T) + 63) / 64 * 64);
    std::normal_distribution<float> d(0, 0.02f);
    for (size_t i = 0; i < n; i++) { float v = d(g); if constexpr (sizeof(T) == 2) p[i] = peftA::f32_to_bf16(v); else p[i] = v; }
    return p;
}
template <typename T> void run(int dt, int64_t K, int64_t N, int rounds, std::vector<int> ms) {
    std::mt19937 g(1); const int nw = 4;
    std::vector<peftA::AdaptedLinear> LA(nw); std::vector<peftB::AdaptedLinear> LB(nw);
    for (int i = 0; i < nw; i++) {
        LA[i].dtype = dt; LA[i].K = K; LA[i].N = N; LA[i].W = alloc<T>(K * N, g); LA[i].bias = nullptr;
        LB[i].dtype = dt; LB[i].K = K; LB[i].N = N; LB[i].W = LA[i].W; LB[i].bias = nullptr;
    }
    T* x = alloc<T>(16 * K, g); T* ya = alloc<T>(16 * N, g); T* yb = alloc<T>(16 * N, g);
    for (int M : ms) {
        std::vector<double> ta, tb; int i = 0;
        for (int r = 0; r < rounds; r++) {
            double t0 = cpu_us(); peftA::adapted_linear_forward<T>(LA[i++ % nw], ya, x, M, 1); ta.push_back(cpu_us() - t0);
            t0 = cpu_us(); peftB::adapted_linear_forward<T>(LB[(i - 1) % nw], yb, x, M, 1); tb.push_back(cpu_us() - t0);
        }
        double err = 0; for (int j = 0; j < M * N; j++) { double a = sizeof(T)==2 ? peftA::bf16_to_f32(ya[j]) : ya[j], b = sizeof(T)==2 ? peftA::bf16_to_f32(yb[j]) : yb[j]; err = std::max(err, std::abs(a-b)); }
        std::sort(ta.begin(), ta.end()); std::sort(tb.begin(), tb.end());
        double ma = ta[ta.size() / 4], mb = tb[tb.size() / 4];
        printf("%s K=%ld N=%ld M=%2d  A %7.0f us  B %7.0f us  B/A %.3f  B %.1f GB/s  maxdiff %.2g\n", dt ? "bf16" : "f32 ", K, N, M, ma, mb, mb / ma, K*N*sizeof(T)/mb/1e3, err);
    }
}
int main(int argc, char** argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 20;
    std::vector<int> ms;
    const char* env = getenv("MS");
    for (const char* p = env ? env : "1,5,8,16"; *p;) {
        ms.push_back(atoi(p));
        while (*p && *p != ',') p++;
        if (*p) p++;
    }
    run<float>(0, 2048, 5632, rounds, ms);
    run<uint16_t>(1, 2048, 5632, rounds, ms);
    run<float>(0, 5632, 2048, rounds, ms);
    run<uint16_t>(1, 5632, 2048, rounds, ms);
}
