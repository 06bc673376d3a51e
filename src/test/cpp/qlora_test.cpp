// Native test of LoRA fused into the quantized decode product (peft4j_qlora.h), run by kernels_test's main under
// ASan/UBSan on every ISA level the CPU has (scalar, AVX2, AVX-512, AVX-512 BF16; the quantized path follows it):
//  - each member's output against the layer's own quantized product plus the delta in double precision, and against
//    the unfused path (quant_linear_panels, then lora_delta in place), within the stated rounding bounds;
//  - a member's output in the group equals its own call (n = 1) bit for bit, with 1 and 2 threads;
//  - a mixed batch (row_slot): each row equals, bit for bit, the row of a call with that row's adapter alone, and a
//    row on no adapter the plain quantized product;
//  - the gated input equals act_mul of the group's outputs bit for bit.
// Ranks 4, 19 (past one 16-rank transpose block, odd) and 8; output widths 20, 33 (padded tail panels) and 40.
#include "peft4j_kernels.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

namespace {

int lfail = 0;
int lchecks = 0;

#define LCHECK(cond, ...)                                             \
    do {                                                              \
        lchecks++;                                                    \
        if (!(cond)) {                                                \
            std::fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            std::fprintf(stderr, __VA_ARGS__);                        \
            std::fprintf(stderr, "\n");                               \
            lfail++;                                                  \
        }                                                             \
    } while (0)

template <typename T>
T cvt(float v);
template <>
float cvt<float>(float v) { return v; }
template <>
uint16_t cvt<uint16_t>(float v) { return peft4j::f32_to_bf16(v); }

template <typename T>
double val(const T* p, int64_t i) { return (double) peft4j::load_scalar(p, i); }

struct Layer {
    int fmt;
    int64_t N;
    bool bias;
    std::vector<int> ranks;
};

template <typename T>
void check_fused(std::mt19937& rng, int64_t M, int threads) {
    const int isa = peft4j::active_isa();
    const int path = peft4j::quant_path();
    const bool bf = sizeof(T) == 2;
    const int64_t K = 96;
    const Layer layers[3] = {{peft4j::QF_Q8_0, 20, true, {4, 19}}, {peft4j::QF_Q4_0, 40, false, {}},
                             {peft4j::QF_Q4_0, 33, true, {8}}};
    const int n = 3;
    std::normal_distribution<float> nd(0.f, 1.f);
    std::vector<T> x((size_t) (M * K));
    for (auto& v : x) v = cvt<T>(nd(rng));
    std::vector<std::vector<uint8_t>> pq(n);
    std::vector<std::vector<uint16_t>> pd(n);
    std::vector<std::vector<T>> bias(n), base(n), got(n), alone(n), unfused(n);
    std::vector<std::vector<std::vector<T>>> A(n), B(n);
    std::vector<std::vector<peft4j::LoraSlot>> slots(n);
    std::vector<peft4j::QuantGroupMember> L(n);
    std::vector<peft4j::QuantLora> lora(n);
    for (int g = 0; g < n; g++) {
        const int64_t N = layers[g].N;
        std::vector<T> W((size_t) (N * K));
        for (auto& v : W) v = cvt<T>(nd(rng) * 0.2f);
        pq[g].resize((size_t) peft4j::panel_bytes(layers[g].fmt, N, K));
        pd[g].resize((size_t) (peft4j::panel_count(N) * 16 * (K / 32)));
        peft4j::quantize_matrix_panels<T>(layers[g].fmt, W.data(), N, K, pq[g].data(), pd[g].data(), 1);
        if (layers[g].bias) {
            bias[g].resize((size_t) N);
            for (auto& v : bias[g]) v = cvt<T>(nd(rng));
        }
        const T* bp = layers[g].bias ? bias[g].data() : nullptr;
        base[g].resize((size_t) (M * N));
        peft4j::quant_linear_panels<T>(path, layers[g].fmt, pq[g].data(), pd[g].data(), bp, x.data(), base[g].data(),
                                       M, K, N, 1);
        for (size_t a = 0; a < layers[g].ranks.size(); a++) {
            const int r = layers[g].ranks[a];
            A[g].emplace_back((size_t) (r * K));
            B[g].emplace_back((size_t) (N * r));
            for (auto& v : A[g].back()) v = cvt<T>(nd(rng) * 0.3f);
            for (auto& v : B[g].back()) v = cvt<T>(nd(rng) * 0.3f);
            slots[g].push_back({A[g].back().data(), B[g].back().data(), r, 0.5f + 0.25f * (float) a});
        }
        got[g].resize((size_t) (M * N));
        alone[g].resize((size_t) (M * N));
        unfused[g] = base[g];
        peft4j::lora_delta<T>(unfused[g].data(), x.data(), M, K, N, slots[g].data(), (int) slots[g].size(), nullptr, 1);
        L[(size_t) g] = {layers[g].fmt, pq[g].data(), pd[g].data(), (const void*) bp, got[g].data(), N};
        lora[(size_t) g] = {slots[g].data(), (int) slots[g].size()};
    }
    peft4j::quant_lora_group<T>(path, L.data(), lora.data(), n, x.data(), M, K, nullptr, threads);
    for (int g = 0; g < n; g++) {
        const int64_t N = layers[g].N;
        // the delta in double from the same x, A, B (sum and sum of magnitudes)
        double worst_exact = 0, worst_unfused = 0;
        for (int64_t m = 0; m < M; m++)
            for (int64_t j = 0; j < N; j++) {
                double d = 0, dabs = 0;
                for (size_t a = 0; a < slots[g].size(); a++) {
                    const int r = slots[g][a].r;
                    for (int k = 0; k < r; k++) {
                        double t = 0;
                        for (int64_t c = 0; c < K; c++) t += val(x.data(), m * K + c) * val(A[g][a].data(), k * K + c);
                        const double term = slots[g][a].scale * t * val(B[g][a].data(), j * r + k);
                        d += term;
                        dabs += std::fabs(term);
                    }
                }
                const double b = val(base[g].data(), m * N + j), o = val(got[g].data(), m * N + j);
                const double want = b + d;
                // float32: sums of ~100 terms in another order; bfloat16: one rounding of the fused sum against the
                // base rounded before the delta is added (each at most half an ulp, 2^-9 relative)
                const double tol = bf ? std::ldexp(1.0, -8) * (std::fabs(want) + std::fabs(b)) + 1e-5
                                      : 1e-5 * (1.0 + std::fabs(want) + std::fabs(b) + dabs);
                worst_exact = std::max(worst_exact, std::fabs(o - want) / tol);
                // the unfused path also rounds t to bf16 on AVX-512 BF16 (2^-9 of each term)
                const double tol_u = tol + (bf ? std::ldexp(1.0, -8) * (dabs + std::fabs(want)) : 0.0);
                worst_unfused = std::max(worst_unfused, std::fabs(o - val(unfused[g].data(), m * N + j)) / tol_u);
            }
        LCHECK(worst_exact <= 1.0, "member %d isa %s path %s M=%lld dtype %zu: %.3g of the tolerance vs the layer's "
               "product plus the exact delta", g, peft4j::isa_name(isa), peft4j::quant_path_name(path), (long long) M,
               sizeof(T), worst_exact);
        LCHECK(worst_unfused <= 1.0, "member %d isa %s M=%lld dtype %zu: %.3g of the tolerance vs the unfused path", g,
               peft4j::isa_name(isa), (long long) M, sizeof(T), worst_unfused);
        // alone, with the other thread count
        peft4j::QuantGroupMember one = L[(size_t) g];
        one.y = alone[g].data();
        peft4j::quant_lora_group<T>(path, &one, &lora[(size_t) g], 1, x.data(), M, K, nullptr, 3 - threads);
        LCHECK(std::memcmp(alone[g].data(), got[g].data(), got[g].size() * sizeof(T)) == 0,
               "member %d isa %s M=%lld threads %d dtype %zu: the group's output is not the member's own", g,
               peft4j::isa_name(isa), (long long) M, threads, sizeof(T));
    }
    // a mixed batch on member 0 (adapters 0 and 1): row m on adapter m % 3 - 1
    std::vector<int32_t> row_slot((size_t) M);
    for (int64_t m = 0; m < M; m++) row_slot[(size_t) m] = (int32_t) (m % 3) - 1;
    const int64_t N0 = layers[0].N;
    std::vector<T> mixed((size_t) (M * N0)), single((size_t) (M * N0));
    peft4j::QuantGroupMember one = L[0];
    one.y = mixed.data();
    peft4j::quant_lora_group<T>(path, &one, &lora[0], 1, x.data(), M, K, row_slot.data(), threads);
    for (int a = -1; a < 2; a++) {
        const peft4j::QuantLora just = {a < 0 ? nullptr : &slots[0][(size_t) a], a < 0 ? 0 : 1};
        one.y = single.data();
        peft4j::quant_lora_group<T>(path, &one, &just, 1, x.data(), M, K, nullptr, threads);
        for (int64_t m = 0; m < M; m++)
            if (row_slot[(size_t) m] == a)
                LCHECK(std::memcmp(mixed.data() + m * N0, single.data() + m * N0, (size_t) N0 * sizeof(T)) == 0,
                       "mixed batch isa %s M=%lld row %lld (adapter %d): not the row of a call with that adapter alone",
                       peft4j::isa_name(isa), (long long) M, (long long) m, a);
        if (a < 0)
            LCHECK(std::memcmp(single.data(), base[0].data(), single.size() * sizeof(T)) == 0,
                   "isa %s M=%lld: no adapter is not the plain quantized product", peft4j::isa_name(isa), (long long) M);
    }
    // the gated input: gate member 0, up member 2 resized to 20 outputs is not possible, so gate = member 0 and up =
    // member 0 again (same width), and the fused gate_up member 1 (40 = 2·20, no adapters) with member 0's shape
    for (int act = 0; act < 4; act++) {
        std::vector<T> y((size_t) (M * N0)), want((size_t) (M * N0));
        peft4j::QuantGroupMember gu[2] = {L[0], L[0]};
        peft4j::QuantLora lu[2] = {lora[0], lora[0]};
        peft4j::quant_lora_gated_linear<T>(path, gu, lu, true, y.data(), x.data(), M, K, act, nullptr, threads);
        for (int64_t m = 0; m < M; m++)
            peft4j::act_mul(isa, act, want.data() + m * N0, got[0].data() + m * N0, got[0].data() + m * N0, N0);
        LCHECK(std::memcmp(y.data(), want.data(), y.size() * sizeof(T)) == 0,
               "gated act %d isa %s M=%lld: not act(gate)·up of the members' own outputs", act, peft4j::isa_name(isa),
               (long long) M);
        std::vector<T> yf((size_t) (M * 20)), wantf((size_t) (M * 20));
        peft4j::quant_lora_gated_linear<T>(path, &L[1], &lora[1], false, yf.data(), x.data(), M, K, act, nullptr,
                                           threads);
        for (int64_t m = 0; m < M; m++)
            peft4j::act_mul(isa, act, wantf.data() + m * 20, got[1].data() + m * 40, got[1].data() + m * 40 + 20, 20);
        LCHECK(std::memcmp(yf.data(), wantf.data(), yf.size() * sizeof(T)) == 0,
               "fused gate_up act %d isa %s M=%lld: not act(gate)·up of the member's own output", act,
               peft4j::isa_name(isa), (long long) M);
    }
}

}  // namespace

// Returns the number of failed checks; prints a summary line.
int run_qlora_tests() {
    std::mt19937 rng(4321);
    const int before = peft4j::active_isa();
    const bool split_before = peft4j::decode_split_contiguous();
    for (int isa = peft4j::ISA_SCALAR; isa <= peft4j::best_isa(); isa++) {
        peft4j::set_active_isa(isa);
        for (int64_t M : {1, 2, 5, 8, 9, 16})
            for (int threads : {1, 2})
                for (bool contiguous : {false, true}) {  // both decode splits (peft4j_qdecode.h)
                    if (contiguous && (M >= 8 || threads == 1)) continue;
                    peft4j::decode_split_contiguous() = contiguous;
                    check_fused<float>(rng, M, threads);
                    check_fused<uint16_t>(rng, M, threads);
                }
    }
    peft4j::decode_split_contiguous() = split_before;
    peft4j::set_active_isa(before);
    std::printf("qlora tests: %d checks, %d failures\n", lchecks, lfail);
    return lfail;
}
