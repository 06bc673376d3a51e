// The attention projections of one TinyLlama-shaped layer on a quantized base (q 2048, k 256, v 256 in one group, then
// o 2048; K = 2048; bf16 activations), with LoRA r = 16 on all four three ways, alternating in one process (the order
// rotating by round, 15 rounds of 400 calls, medians): the quantized product alone (base), the delta fused into it
// (quant_lora_group, peft4j_qlora.h), and the quantized product followed by one lora_delta call per member (the
// separate path). Weights and adapters stay in cache between calls (one layer), so this is the compute and call cost
// of the delta, not its reads from memory.
//
//   g++ -O3 -std=c++17 -fopenmp -I src/main/cpp benchmarks/native/qlora_layer.cpp -o /tmp/qlora_layer
//   OMP_WAIT_POLICY=passive GOMP_SPINCOUNT=10000 /tmp/qlora_layer [int4|int8] [rows]
#include "peft4j_kernels.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

using namespace peft4j;
using T = uint16_t;

int main(int argc, char** argv) {
    const int fmt = argc > 1 && std::strcmp(argv[1], "int8") == 0 ? QF_Q8_0 : QF_Q4_0;
    const int64_t M = argc > 2 ? std::atoi(argv[2]) : 1;
    const int iters = 400, threads = 2;
    const int64_t K = 2048, r = 16;
    const int64_t Ns[4] = {2048, 256, 256, 2048};
    std::mt19937 rng(1);
    std::normal_distribution<float> nd(0, 1);
    std::vector<std::vector<uint8_t>> pq(4);
    std::vector<std::vector<uint16_t>> pd(4);
    std::vector<std::vector<T>> y(4), A(4), B(4);
    std::vector<T> x((size_t) (M * K));
    for (auto& v : x) v = f32_to_bf16(nd(rng));
    std::vector<QuantGroupMember> L(4);
    std::vector<LoraSlot> S(4);
    std::vector<QuantLora> lo(4);
    for (int g = 0; g < 4; g++) {
        std::vector<T> W((size_t) (Ns[g] * K));
        for (auto& v : W) v = f32_to_bf16(nd(rng) * 0.02f);
        pq[g].resize((size_t) panel_bytes(fmt, Ns[g], K));
        pd[g].resize((size_t) (panel_count(Ns[g]) * 16 * (K / 32)));
        quantize_matrix_panels<T>(fmt, W.data(), Ns[g], K, pq[g].data(), pd[g].data(), threads);
        y[g].resize((size_t) (M * Ns[g]));
        A[g].resize((size_t) (r * K));
        B[g].resize((size_t) (Ns[g] * r));
        for (auto& v : A[g]) v = f32_to_bf16(nd(rng) * 0.02f);
        for (auto& v : B[g]) v = f32_to_bf16(nd(rng) * 0.02f);
        L[(size_t) g] = {fmt, pq[g].data(), pd[g].data(), nullptr, y[g].data(), Ns[g]};
        S[(size_t) g] = {A[g].data(), B[g].data(), (int) r, 2.f};
        lo[(size_t) g] = {&S[(size_t) g], 1};
    }
    const int path = quant_path();
    auto run = [&](int mode) {  // 0 base, 1 fused, 2 separate; µs per layer
        const auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < iters; i++) {
            if (mode == 1) {
                quant_lora_group<T>(path, L.data(), lo.data(), 3, x.data(), M, K, nullptr, threads);
                quant_lora_group<T>(path, L.data() + 3, lo.data() + 3, 1, x.data(), M, K, nullptr, threads);
                continue;
            }
            quant_linear_group<T>(path, L.data(), 3, x.data(), M, K, threads);
            if (mode == 2)
                for (int g = 0; g < 3; g++) lora_delta<T>(y[g].data(), x.data(), M, K, Ns[g], &S[g], 1, nullptr, threads);
            quant_linear_group<T>(path, L.data() + 3, 1, x.data(), M, K, threads);
            if (mode == 2) lora_delta<T>(y[3].data(), x.data(), M, K, Ns[3], &S[3], 1, nullptr, threads);
        }
        return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / iters;
    };
    std::vector<double> t[3];
    for (int round = 0; round < 16; round++)
        for (int k = 0; k < 3; k++) {
            const int mode = (k + round) % 3;
            const double us = run(mode);
            if (round > 0) t[mode].push_back(us);  // round 0 warms up
        }
    double med[3];
    for (int k = 0; k < 3; k++) {
        std::sort(t[k].begin(), t[k].end());
        med[k] = t[k][t[k].size() / 2];
    }
    std::printf("%s, %lld rows, path %s: q/k/v + o of one layer, µs: base %.1f, LoRA fused %.1f (%.3f), LoRA separate "
                "%.1f (%.3f)\n", fmt == QF_Q8_0 ? "int8" : "int4", (long long) M, quant_path_name(path), med[0], med[1],
                med[1] / med[0], med[2], med[2] / med[0]);
    return 0;
}
