// Native test of the weight-only quantized kernels (peft4j_quant.h), run by kernels_test's main under ASan/UBSan:
// the fp16 conversions, the quantizers' error bounds, and y = x·Wqᵀ + bias on every integer-dot path the CPU has,
// against a double-precision reference on the dequantized weights and dequantized activations (tight), and
// against the unquantized activations within the activation rounding's bound. Exact-size heap buffers, so any
// read or write past an end is caught.
#include "peft4j_kernels.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <mutex>
#include <thread>
#include <cstring>
#include <cstdio>
#include <random>
#include <vector>

namespace {

int qfail = 0;
int qchecks = 0;

#define QCHECK(cond, ...)                                                   \
    do {                                                                    \
        qchecks++;                                                          \
        if (!(cond)) {                                                      \
            std::fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);       \
            std::fprintf(stderr, __VA_ARGS__);                              \
            std::fprintf(stderr, "\n");                                     \
            qfail++;                                                        \
        }                                                                   \
    } while (0)

void check_f16() {
    using peft4j::f16_to_f32;
    using peft4j::f32_to_f16;
    QCHECK(f32_to_f16(1.0f) == 0x3c00, "1.0 -> 0x3c00, got %04x", f32_to_f16(1.0f));
    QCHECK(f32_to_f16(65504.f) == 0x7bff, "65504 is the largest half");
    QCHECK(f32_to_f16(65520.f) == 0x7c00, "65520 rounds to +inf");
    QCHECK(f32_to_f16(-2.f) == 0xc000, "-2");
    QCHECK(f32_to_f16(std::ldexp(1.f, -24)) == 0x0001, "2^-24 is the smallest subnormal");
    QCHECK(f32_to_f16(1.f + std::ldexp(1.f, -11)) == 0x3c00, "tie 1 + 2^-11 rounds to even 1.0");
    QCHECK(f32_to_f16(1.f + 3 * std::ldexp(1.f, -11)) == 0x3c02, "tie 1 + 3·2^-11 rounds up to even");
    // every finite half survives half -> float -> half
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000u; h++) {
        if ((h & 0x7c00u) == 0x7c00u) continue;
        if (f32_to_f16(f16_to_f32((uint16_t) h)) != h) bad++;
    }
    QCHECK(bad == 0, "%d halves do not round trip", bad);
    QCHECK(f16_to_f32(0x0001) == std::ldexp(1.f, -24), "subnormal decode");
}

template <typename T>
T from_f32(float v);
template <>
float from_f32<float>(float v) { return v; }
template <>
uint16_t from_f32<uint16_t>(float v) { return peft4j::f32_to_bf16(v); }

template <typename T>
void check_linear(int fmt, std::mt19937& rng, int64_t M, int64_t K, int64_t N, bool with_bias, int path, int threads,
                  bool panels = false) {
    std::normal_distribution<float> normal(0.f, 1.f);
    const int64_t nb = K / 32, rb = peft4j::quant_row_bytes(fmt, K);
    std::vector<T> W((size_t) (N * K));
    for (auto& w : W) w = from_f32<T>(normal(rng) * 0.05f);
    // one block of zeros and one with a single outlier: the d = 0 and clamp cases
    for (int64_t k = 0; k < 32 && N > 0; k++) W[(size_t) k] = from_f32<T>(0.f);
    if (N > 1) W[(size_t) (K + 3)] = from_f32<T>(-4.f);
    auto* qs = new uint8_t[(size_t) (N * rb)];
    auto* d = new uint16_t[(size_t) (N * nb)];
    peft4j::quantize_matrix<T>(fmt, W.data(), N, K, qs, d, threads);
    // the quantizer's error bound: |w - deq| <= d/2 (Q8_0), <= |d| (Q4_0, whose top level 16 is clamped to 15)
    std::vector<float> deq((size_t) (N * K));
    for (int64_t n = 0; n < N; n++) peft4j::dequantize_row(fmt, qs + n * rb, d + n * nb, K, deq.data() + n * K);
    int over = 0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < K; k++) {
            const float dd = std::fabs(peft4j::f16_to_f32(d[n * nb + k / 32]));
            const float w = peft4j::to_f32(W[(size_t) (n * K + k)]);
            // d itself is rounded to fp16: allow its relative error (2^-11) times the block's range
            const float bound = (fmt == peft4j::QF_Q8_0 ? 0.5f : 1.0f) * dd + dd * 128.f * 0.0005f + 1e-7f;
            if (std::fabs(w - deq[(size_t) (n * K + k)]) > bound) over++;
        }
    QCHECK(over == 0, "fmt %d: %d weights beyond the quantizer's error bound", fmt, over);
    // dequantize_matrix equals dequantize_row (rounded to T)
    auto* Wd = new T[(size_t) (N * K)];
    peft4j::dequantize_matrix<T>(fmt, qs, d, N, K, Wd, threads);
    int mism = 0;
    for (int64_t i = 0; i < N * K; i++)
        if (peft4j::to_f32(Wd[i]) != peft4j::to_f32(from_f32<T>(deq[(size_t) i]))) mism++;
    QCHECK(mism == 0, "dequantize_matrix differs from dequantize_row at %d entries", mism);
    delete[] Wd;

    auto* x = new T[(size_t) (M * K)];
    for (int64_t i = 0; i < M * K; i++) x[i] = from_f32<T>(normal(rng));
    T* bias = nullptr;
    if (with_bias) {
        bias = new T[(size_t) N];
        for (int64_t i = 0; i < N; i++) bias[i] = from_f32<T>(normal(rng));
    }
    auto* y = new T[(size_t) (M * N)];
    if (panels) {
        // the panel layout: packing the canonical blocks equals quantizing straight to panels, unpacking gives the
        // canonical blocks back, and dequantizing the panels equals dequantizing the canonical rows
        const int64_t pbytes = peft4j::panel_bytes(fmt, N, K), pscales = peft4j::panel_count(N) * 16 * nb;
        auto* pq = new uint8_t[(size_t) pbytes];
        auto* pd = new uint16_t[(size_t) pscales];
        auto* pq2 = new uint8_t[(size_t) pbytes];
        auto* pd2 = new uint16_t[(size_t) pscales];
        peft4j::pack_matrix(fmt, qs, d, N, K, pq, pd, threads);
        peft4j::quantize_matrix_panels<T>(fmt, W.data(), N, K, pq2, pd2, threads);
        QCHECK(std::memcmp(pq, pq2, (size_t) pbytes) == 0 && std::memcmp(pd, pd2, (size_t) pscales * 2) == 0,
               "fmt %d N=%lld K=%lld: quantize_matrix_panels differs from pack_matrix(quantize_matrix)", fmt,
               (long long) N, (long long) K);
        auto* qs2 = new uint8_t[(size_t) (N * rb)];
        auto* d2 = new uint16_t[(size_t) (N * nb)];
        peft4j::unpack_matrix(fmt, pq, pd, N, K, qs2, d2, threads);
        QCHECK(std::memcmp(qs, qs2, (size_t) (N * rb)) == 0 && std::memcmp(d, d2, (size_t) (N * nb) * 2) == 0,
               "fmt %d N=%lld K=%lld: unpack_matrix(pack_matrix) is not the identity", fmt, (long long) N,
               (long long) K);
        auto* Wp = new T[(size_t) (N * K)];
        peft4j::dequantize_matrix_panels<T>(fmt, pq, pd, N, K, Wp, threads);
        int pm = 0;
        for (int64_t i = 0; i < N * K; i++)
            if (peft4j::to_f32(Wp[i]) != peft4j::to_f32(from_f32<T>(deq[(size_t) i]))) pm++;
        QCHECK(pm == 0, "dequantize_matrix_panels differs from dequantize_row at %d entries", pm);
        peft4j::quant_linear_panels<T>(path, fmt, pq, pd, bias, x, y, M, K, N, threads);
        delete[] Wp;
        delete[] d2;
        delete[] qs2;
        delete[] pd2;
        delete[] pq2;
        delete[] pd;
        delete[] pq;
    } else {
        peft4j::quant_linear<T>(path, fmt, qs, d, bias, x, y, M, K, N, threads);
    }
    // references: the activations quantized as the kernel does (tight), and unquantized (within the bound)
    std::vector<int8_t> xq((size_t) K);
    std::vector<float> dx((size_t) nb);
    std::vector<int32_t> sx((size_t) nb);
    double worst_tight = 0, worst_loose = 0;
    for (int64_t r = 0; r < M; r++) {
        peft4j::quantize_act_row(x + r * K, K, xq.data(), dx.data(), sx.data());
        for (int64_t n = 0; n < N; n++) {
            double ref = 0, mag = 0, ref_x = 0, act_bound = 0;
            for (int64_t k = 0; k < K; k++) {
                const double w = deq[(size_t) (n * K + k)];
                const double xv = (double) xq[(size_t) k] * dx[(size_t) (k / 32)];
                ref += w * xv;
                mag += std::fabs(w * xv);
                // Q4_0's −8 offset is summed in int32 per lane of the canonical kernel and only cancels in float32
                // across lanes: its terms count towards the magnitudes rounded
                if (fmt == peft4j::QF_Q4_0)
                    mag += 8.0 * std::fabs(peft4j::f16_to_f32(d[n * nb + k / 32]) * xv);
                ref_x += w * peft4j::to_f32(x[r * K + k]);
                act_bound += std::fabs(w) * dx[(size_t) (k / 32)] * 0.5;
            }
            const double b = bias ? peft4j::to_f32(bias[n]) : 0.0;
            const double got = peft4j::to_f32(y[r * N + n]);
            const double out_round = sizeof(T) == 2 ? std::fabs(ref + b) * (1.0 / 256) : 0.0;  // bf16 output
            const double tight = mag * 1e-5 + out_round + 1e-6;
            const double e1 = std::fabs(got - (ref + b));
            const double e2 = std::fabs(got - (ref_x + b));
            worst_tight = std::max(worst_tight, e1 / tight);
            worst_loose = std::max(worst_loose, e2 / (act_bound + tight));
        }
    }
    QCHECK(worst_tight <= 1.0, "%s fmt %d dtype %zu path %s M=%lld K=%lld N=%lld: %.3g of the tight tolerance vs the "
           "dequantized reference", panels ? "panels" : "canonical", fmt, sizeof(T), peft4j::quant_path_name(path), (long long) M, (long long) K,
           (long long) N, worst_tight);
    QCHECK(worst_loose <= 1.0, "%s fmt %d path %s M=%lld: %.3g of the activation-rounding bound vs unquantized x",
           panels ? "panels" : "canonical", fmt,
           peft4j::quant_path_name(path), (long long) M, worst_loose);
    delete[] y;
    delete[] bias;
    delete[] x;
    delete[] d;
    delete[] qs;
}

// The group of quantized Linears over one x (peft4j_qgroup.h): each member's output equals its own
// quant_linear_panels bit for bit (x quantized once, panels split among threads differently), and the gated input
// equals the members' own outputs through act_mul row by row; exact-size buffers for ASan.
template <typename T>
void check_group(std::mt19937& rng, int path, int64_t M, int threads) {
    const int64_t K = 64;
    const int fmts[3] = {peft4j::QF_Q8_0, peft4j::QF_Q4_0, peft4j::QF_Q8_0};
    const int64_t Ns[3] = {20, 20, 40};  // 20: a padded tail panel; the third as a fused gate_up of 2·20
    std::normal_distribution<float> nd(0.f, 1.f);
    std::vector<std::vector<uint8_t>> pq(3);
    std::vector<std::vector<uint16_t>> pd(3);
    std::vector<std::vector<T>> bias(3), own(3), got(3);
    std::vector<T> x((size_t) (M * K));
    for (auto& v : x) v = from_f32<T>(nd(rng));
    std::vector<peft4j::QuantGroupMember> L(3);
    for (int g = 0; g < 3; g++) {
        const int64_t N = Ns[g];
        std::vector<T> W((size_t) (N * K));
        for (auto& v : W) v = from_f32<T>(nd(rng) * 0.2f);
        pq[g].resize((size_t) peft4j::panel_bytes(fmts[g], N, K));
        pd[g].resize((size_t) (peft4j::panel_count(N) * 16 * (K / 32)));
        peft4j::quantize_matrix_panels<T>(fmts[g], W.data(), N, K, pq[g].data(), pd[g].data(), threads);
        if (g != 1) {
            bias[g].resize((size_t) N);
            for (auto& v : bias[g]) v = from_f32<T>(nd(rng));
        }
        own[g].resize((size_t) (M * N));
        got[g].resize((size_t) (M * N));
        peft4j::quant_linear_panels<T>(path, fmts[g], pq[g].data(), pd[g].data(), g != 1 ? bias[g].data() : nullptr,
                                       x.data(), own[g].data(), M, K, N, 1);
        L[(size_t) g] = {fmts[g], pq[g].data(), pd[g].data(), g != 1 ? (const void*) bias[g].data() : nullptr,
                         got[g].data(), N};
    }
    peft4j::quant_linear_group<T>(path, L.data(), 3, x.data(), M, K, threads);
    for (int g = 0; g < 3; g++)
        QCHECK(std::memcmp(own[g].data(), got[g].data(), own[g].size() * sizeof(T)) == 0,
               "group member %d path %s M=%lld threads %d dtype %zu: not the layer's own output", g,
               peft4j::quant_path_name(path), (long long) M, threads, sizeof(T));
    const int isa = peft4j::active_isa();
    for (int act = 0; act < 4; act++) {
        // gate and up: members 0 and 1; fused gate_up: member 2
        std::vector<T> y((size_t) (M * 20)), want((size_t) (M * 20));
        peft4j::quant_gated_linear<T>(path, L[0], &L[1], y.data(), x.data(), M, K, act, threads);
        for (int64_t m = 0; m < M; m++)
            peft4j::act_mul(isa, act, want.data() + m * 20, own[0].data() + m * 20, own[1].data() + m * 20, 20);
        QCHECK(std::memcmp(y.data(), want.data(), y.size() * sizeof(T)) == 0,
               "gated act %d path %s M=%lld: not act(gate)·up of the layers' own outputs", act,
               peft4j::quant_path_name(path), (long long) M);
        peft4j::quant_gated_linear<T>(path, L[2], nullptr, y.data(), x.data(), M, K, act, threads);
        for (int64_t m = 0; m < M; m++)
            peft4j::act_mul(isa, act, want.data() + m * 20, own[2].data() + m * 40, own[2].data() + m * 40 + 20, 20);
        QCHECK(std::memcmp(y.data(), want.data(), y.size() * sizeof(T)) == 0,
               "fused gated act %d path %s M=%lld: not act(gate)·up of the layer's own output", act,
               peft4j::quant_path_name(path), (long long) M);
    }
}

// contiguous_for / contiguous_for_after (peft4j_qdecode.h): every first task and every unit runs exactly once, all
// first tasks start before any unit, each thread walks units in increasing order within every piece it owns (a
// thread's units are a few increasing runs, at most one per steal), and a thread stalled on its first unit has its
// range taken over by the others.
void check_contiguous() {
    for (int threads : {1, 2, 3, 4}) {
        for (int64_t n : {0, 1, 2, 3, 7, 100, 1000}) {
            for (bool stall : {false, true}) {
                if (stall && (threads == 1 || n < 100)) continue;
                std::vector<std::atomic<int>> seen((size_t) n), first_seen(5);
                for (auto& v : seen) v.store(0);
                for (auto& v : first_seen) v.store(0);
                std::atomic<int64_t> units_started{0}, firsts_after_units{0};
                std::mutex mu;
                std::vector<std::pair<std::thread::id, int64_t>> order;  // (thread, unit) in the order they ran
                peft4j::contiguous_for_after(
                        5,
                        [&](int64_t i) {
                            if (units_started.load() > 0) firsts_after_units++;
                            first_seen[(size_t) i]++;
                        },
                        n, threads, [&](int64_t u) {
                            units_started++;
                            seen[(size_t) u]++;
                            {
                                std::lock_guard<std::mutex> lk(mu);
                                order.emplace_back(std::this_thread::get_id(), u);
                            }
                            if (stall && u == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
                        });
                int bad = 0;
                for (auto& v : seen) bad += v.load() != 1;
                for (auto& v : first_seen) bad += v.load() != 1;
                QCHECK(bad == 0, "contiguous_for threads %d n %lld: %d units not run exactly once", threads,
                       (long long) n, bad);
                QCHECK(firsts_after_units.load() == 0, "contiguous_for_after: a first task ran after a unit");
                // per thread: count the descents in its sequence of units (each starts a stolen piece)
                std::vector<std::pair<std::thread::id, int64_t>> last;
                int descents = 0;
                for (const auto& e : order) {
                    auto it = std::find_if(last.begin(), last.end(), [&](const auto& l) { return l.first == e.first; });
                    if (it == last.end()) last.push_back(e);
                    else {
                        descents += e.second < it->second;
                        it->second = e.second;
                    }
                }
                QCHECK(descents <= 2 * threads * 32, "contiguous_for threads %d n %lld: %d descents", threads,
                       (long long) n, descents);
                if (!stall && n >= 100)
                    QCHECK(last.size() <= (size_t) threads, "more threads than asked for");
                int64_t by_others_of_range0 = 0;
                std::thread::id staller;
                for (const auto& e : order)
                    if (e.second == 0) staller = e.first;
                for (const auto& e : order)
                    if (stall && e.second > 0 && e.second < n / threads && e.first != staller)
                        by_others_of_range0++;
                if (stall)
                    QCHECK(by_others_of_range0 > 0,
                           "contiguous_for threads %d n %lld: the stalled thread's range was not taken over", threads,
                           (long long) n);
            }
        }
    }
}
#if defined(__x86_64__)
// The prefill tile (panel_span at 8 rows and more on the VNNI path: tiles of kTileRows rows × kTilePanels panels,
// the activations quantized by quantize_act_row_avx512) equals the per-panel row tiles of panel_rows_vnni on the
// scalar quantizer's activations bit for bit, whatever panels a call covers; and quantize_act_row_avx512 equals
// quantize_act_row, ties (v·id exactly k + 1/2), all-zero blocks and bfloat16 input included.
template <typename T>
void check_prefill_tile(std::mt19937& rng, int fmt, int64_t M, int64_t K, int64_t N) {
    std::normal_distribution<float> nd(0.f, 1.f);
    const int64_t nb = K / 32, P = peft4j::panel_count(N);
    std::vector<T> W((size_t) (N * K)), x((size_t) (M * K)), bias((size_t) N);
    for (auto& v : W) v = from_f32<T>(nd(rng) * 0.1f);
    for (auto& v : x) v = from_f32<T>(nd(rng));
    for (auto& v : bias) v = from_f32<T>(nd(rng));
    // row 0: a block of zeros, and a block whose amax is 127 (id = 1) holding halves: every v·id a tie
    for (int64_t k = 0; k < 32; k++) x[(size_t) k] = from_f32<T>(0.f);
    if (K >= 64)
        for (int64_t k = 32; k < 64; k++) x[(size_t) k] = from_f32<T>(k == 32 ? 127.f : (float) (k % 9) - 4.5f);
    std::vector<uint8_t> pq((size_t) peft4j::panel_bytes(fmt, N, K));
    std::vector<uint16_t> pd((size_t) (P * 16 * nb));
    peft4j::quantize_matrix_panels<T>(fmt, W.data(), N, K, pq.data(), pd.data(), 1);

    std::vector<int8_t> q1((size_t) (M * K)), q2((size_t) (M * K));
    std::vector<float> d1((size_t) (M * nb)), d2((size_t) (M * nb));
    std::vector<int32_t> s1((size_t) (M * nb)), s2((size_t) (M * nb));
    for (int64_t r = 0; r < M; r++) {
        peft4j::quantize_act_row(x.data() + r * K, K, q1.data() + r * K, d1.data() + r * nb, s1.data() + r * nb);
        peft4j::quantize_act_row_avx512(x.data() + r * K, K, q2.data() + r * K, d2.data() + r * nb,
                                        s2.data() + r * nb);
    }
    QCHECK(q1 == q2 && std::memcmp(d1.data(), d2.data(), d1.size() * 4) == 0 && s1 == s2,
           "quantize_act_row_avx512 differs from quantize_act_row (dtype %zu K=%lld)", sizeof(T), (long long) K);

    const peft4j::QuantActs acts{q1.data(), d1.data(), s1.data(), K, nb};
    const int path = peft4j::QP_AVX512_VNNI;
    std::vector<T> rows((size_t) (M * N)), tile((size_t) (M * N)), odd((size_t) (M * N)), full((size_t) (M * N));
    for (int64_t p = 0; p < P; p++)
        peft4j::panel_span_rows<T>(path, fmt, pq.data(), pd.data(), bias.data(), acts, rows.data(), M, N, p, p + 1);
    peft4j::panel_span<T>(path, fmt, pq.data(), pd.data(), bias.data(), acts, tile.data(), M, N, 0, P);
    // spans starting at odd panels: the pairs fall on other panels
    peft4j::panel_span<T>(path, fmt, pq.data(), pd.data(), bias.data(), acts, odd.data(), M, N, 0, 1);
    peft4j::panel_span<T>(path, fmt, pq.data(), pd.data(), bias.data(), acts, odd.data(), M, N, 1, P);
    peft4j::quant_linear_panels<T>(path, fmt, pq.data(), pd.data(), bias.data(), x.data(), full.data(), M, K, N, 2);
    const size_t bytes = rows.size() * sizeof(T);
    QCHECK(std::memcmp(rows.data(), tile.data(), bytes) == 0 && std::memcmp(rows.data(), odd.data(), bytes) == 0 &&
                   std::memcmp(rows.data(), full.data(), bytes) == 0,
           "prefill tile differs from the row tiles: fmt %d dtype %zu M=%lld K=%lld N=%lld", fmt, sizeof(T),
           (long long) M, (long long) K, (long long) N);
}
#endif

}  // namespace

// Returns the number of failed checks; prints a summary line.
int run_quant_tests() {
    check_contiguous();
    check_f16();
    std::mt19937 rng(77);
    std::vector<int> paths = {peft4j::QP_SCALAR};
    if (peft4j::best_isa() >= peft4j::ISA_AVX2) paths.push_back(peft4j::QP_AVX2);
    if (peft4j::best_isa() >= peft4j::ISA_AVX512 && peft4j::cpu_has_vnni()) paths.push_back(peft4j::QP_AVX512_VNNI);
    for (int path : paths) {
        for (int fmt : {peft4j::QF_Q8_0, peft4j::QF_Q4_0}) {
            for (int64_t M : {1, 2, 3, 4, 5, 16, 17}) {
                for (int64_t K : {32, 96, 320}) {
                    for (int64_t N : {1, 17}) {
                        check_linear<float>(fmt, rng, M, K, N, (M + N) % 2 == 0, path, M % 2 == 0 ? 2 : 1);
                        check_linear<uint16_t>(fmt, rng, M, K, N, (M + N) % 2 == 1, path, 2);
                    }
                }
            }
            // the panel kernels: every register-tile height and its remainders (tiles of 8 / 4 rows below 8 rows
            // and on AVX2, of 6 rows × 2 panels from 8 rows on VNNI), N not a multiple of the 16-row panel (a padded
            // tail panel: alone, 1 or 33, or in a pair, 20), one and several blocks
            for (int64_t M : {1, 2, 3, 4, 5, 8, 9, 13, 16, 17, 128}) {
                for (int64_t K : {32, 160}) {
                    for (int64_t N : {1, 20, 33}) {
                        check_linear<float>(fmt, rng, M, K, N, (M + N) % 2 == 0, path, M % 2 == 0 ? 2 : 1, true);
                        check_linear<uint16_t>(fmt, rng, M, K, N, (M + N) % 2 == 1, path, 2, true);
                    }
                }
            }
        }
    }
#if defined(__x86_64__)
    if (peft4j::best_isa() >= peft4j::ISA_AVX512 && peft4j::cpu_has_vnni()) {
        // every tile height 1 .. 6 as the last tile (8 .. 13 rows) and full tiles (24, 67), panels: one (padded),
        // a pair with a padded tail, a pair and a single, several pairs
        for (int fmt : {peft4j::QF_Q8_0, peft4j::QF_Q4_0})
            for (int64_t M : {8, 9, 10, 11, 12, 13, 24, 67})
                for (int64_t N : {5, 20, 48, 80}) {
                    check_prefill_tile<float>(rng, fmt, M, 96, N);
                    check_prefill_tile<uint16_t>(rng, fmt, M, 64, N);
                }
    }
#endif
    // both decode splits (peft4j_qdecode.h): the panels' tasks and the contiguous ranges
    const bool split_before = peft4j::decode_split_contiguous();
    for (bool contiguous : {false, true}) {
        peft4j::decode_split_contiguous() = contiguous;
        for (int path : paths) {
            for (int64_t M : {1, 3, 9, 16}) {
                for (int threads : {1, 2}) {
                    check_group<float>(rng, path, M, threads);
                    check_group<uint16_t>(rng, path, M, threads);
                }
            }
        }
    }
    peft4j::decode_split_contiguous() = split_before;
    // the active ISA level picks the path
    const int before = peft4j::active_isa();
    peft4j::set_active_isa(peft4j::ISA_SCALAR);
    QCHECK(peft4j::quant_path() == peft4j::QP_SCALAR, "scalar ISA must take the scalar path");
    if (peft4j::best_isa() >= peft4j::ISA_AVX2) {
        peft4j::set_active_isa(peft4j::ISA_AVX2);
        QCHECK(peft4j::quant_path() == peft4j::QP_AVX2, "AVX2 ISA must take the AVX2 path");
    }
    peft4j::set_active_isa(before);
    std::printf("quant: paths");
    for (int p : paths) std::printf(" %s", peft4j::quant_path_name(p));
    std::printf("; %d checks, %d failed\n", qchecks, qfail);
    return qfail;
}
