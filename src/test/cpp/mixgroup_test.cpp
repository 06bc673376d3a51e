// Native test of the mixed-batch group entries (peft4j_mixgroup.h): each layer of the group, with its own per-row
// adapter index, equals that layer's own mixed forward bit for bit, on every ISA path the CPU has, at 1 and 2
// threads, 1-16 rows; the gated form equals the layers' mixed forwards then act_mul; and the index is not ignored.
#include "peft4j_kernels.h"

#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

namespace {

int failures = 0;
int checks = 0;

#define MCHECK(cond, ...)                                             \
    do {                                                              \
        checks++;                                                     \
        if (!(cond)) {                                                \
            std::fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            std::fprintf(stderr, __VA_ARGS__);                        \
            std::fprintf(stderr, "\n");                               \
            failures++;                                               \
        }                                                             \
    } while (0)

void put(float* p, float v) { *p = v; }
void put(uint16_t* p, float v) { *p = peft4j::f32_to_bf16(v); }

template <typename T>
struct Layer {
    std::vector<T> W;
    std::vector<std::vector<T>> A, B;
    int64_t N = 0;
    int32_t n_ad = 0;
    int64_t h = 0;
};

template <typename T>
Layer<T> make_layer(std::mt19937& rng, int dt, int64_t K, int64_t N, int32_t n_ad) {
    std::normal_distribution<float> normal(0.f, 1.f);
    Layer<T> L;
    L.N = N;
    L.n_ad = n_ad;
    L.W.resize((size_t) (N * K));
    for (auto& v : L.W) put(&v, normal(rng));
    L.h = peft4j_adapted_linear_create(dt, L.W.data(), nullptr, K, N);
    if (n_ad > 0) {
        std::vector<int64_t> ap, bp;
        std::vector<int32_t> rs;
        std::vector<float> ss;
        for (int32_t a = 0; a < n_ad; a++) {
            const int32_t r = 3 + 2 * a;
            L.A.emplace_back((size_t) (r * K));
            L.B.emplace_back((size_t) (N * r));
            for (auto& v : L.A.back()) put(&v, normal(rng));
            for (auto& v : L.B.back()) put(&v, normal(rng));
            ap.push_back((int64_t) (intptr_t) L.A.back().data());
            bp.push_back((int64_t) (intptr_t) L.B.back().data());
            rs.push_back(r);
            ss.push_back(0.5f + a);
        }
        peft4j_adapted_linear_set_adapters(L.h, n_ad, ap.data(), bp.data(), rs.data(), ss.data());
    }
    return L;
}

template <typename T>
void test_mixed_group(std::mt19937& rng, const char* name) {
    const int best = peft4j::best_isa();
    const int dt = sizeof(T) == 4 ? peft4j::DT_F32 : peft4j::DT_BF16;
    const int64_t K = 67;
    // q with two adapters, k without any, v with three; gate / up of one width; a fused gate_up with two
    std::vector<Layer<T>> L;
    L.push_back(make_layer<T>(rng, dt, K, 96, 2));
    L.push_back(make_layer<T>(rng, dt, K, 33, 0));
    L.push_back(make_layer<T>(rng, dt, K, 96, 3));
    Layer<T> gu = make_layer<T>(rng, dt, K, 2 * 40, 2);
    const int64_t I = 40;
    std::normal_distribution<float> normal(0.f, 1.f);
    for (int64_t M : {1, 3, 5, 16}) {
        std::vector<T> x((size_t) (M * K));
        for (auto& v : x) put(&v, normal(rng));
        // per layer, per row: -1 (the base) or one of its adapters; row 0 of q on adapter 1 so the index matters
        std::vector<int32_t> slots((size_t) (3 * M));
        for (int g = 0; g < 3; g++)
            for (int64_t m = 0; m < M; m++)
                slots[(size_t) (g * M + m)] = L[(size_t) g].n_ad == 0
                                                  ? -1
                                                  : (int32_t) ((m + g) % (L[(size_t) g].n_ad + 1)) - 1;
        slots[0] = 1;
        for (int isa = peft4j::ISA_SCALAR; isa <= best; isa++) {
            peft4j::set_active_isa(isa);
            for (int threads : {1, 2}) {
                for (int with_slots : {1, 0}) {
                    std::vector<int32_t> has = {with_slots, with_slots, 1};
                    std::vector<std::vector<T>> sep(3), grp(3);
                    int64_t ys[3], hs[3];
                    for (int g = 0; g < 3; g++) {
                        sep[(size_t) g].resize((size_t) (M * L[(size_t) g].N));
                        grp[(size_t) g].resize((size_t) (M * L[(size_t) g].N));
                        const int32_t* rs = has[(size_t) g] ? slots.data() + g * M : nullptr;
                        peft4j_adapted_linear_forward(L[(size_t) g].h, sep[(size_t) g].data(), x.data(), M, threads,
                                                      rs);
                        ys[g] = (int64_t) (intptr_t) grp[(size_t) g].data();
                        hs[g] = L[(size_t) g].h;
                    }
                    peft4j_adapted_linear_forward_group_mixed(3, hs, ys, x.data(), M, slots.data(), has.data(),
                                                              threads);
                    for (int g = 0; g < 3; g++)
                        MCHECK(std::memcmp(sep[(size_t) g].data(), grp[(size_t) g].data(),
                                           sizeof(T) * M * L[(size_t) g].N) == 0,
                               "%s mixed group layer %d %s M=%lld threads=%d slots=%d differs from its own forward",
                               name, g, peft4j::isa_name(isa), (long long) M, threads, has[(size_t) g]);
                    // gated (gate q, up v), each with its own index
                    std::vector<T> gated((size_t) (M * 96)), want((size_t) (M * 96));
                    std::vector<int32_t> gslots(slots.begin(), slots.begin() + M);
                    gslots.insert(gslots.end(), slots.begin() + 2 * M, slots.begin() + 3 * M);
                    int32_t ghas[2] = {has[0], has[2]};
                    peft4j_gated_linear_mixed(L[0].h, L[2].h, gated.data(), x.data(), M, peft4j::ACT_SILU,
                                              gslots.data(), ghas, threads);
                    for (int64_t m = 0; m < M; m++)
                        peft4j_act_mul(dt, peft4j::ACT_SILU, want.data() + m * 96, sep[0].data() + m * 96,
                                       sep[2].data() + m * 96, 96);
                    MCHECK(std::memcmp(gated.data(), want.data(), sizeof(T) * M * 96) == 0,
                           "%s mixed gated_linear %s M=%lld threads=%d slots=%d differs from the separate ops", name,
                           peft4j::isa_name(isa), (long long) M, threads, with_slots);
                }
                // the fused gate_up with its index
                std::vector<T> g2((size_t) (M * 2 * I)), fused((size_t) (M * I)), want2((size_t) (M * I));
                std::vector<int32_t> fs((size_t) M);
                for (int64_t m = 0; m < M; m++) fs[(size_t) m] = (int32_t) (m % 3) - 1;
                peft4j_adapted_linear_forward(gu.h, g2.data(), x.data(), M, threads, fs.data());
                for (int64_t m = 0; m < M; m++)
                    peft4j_act_mul(dt, peft4j::ACT_GELU_TANH, want2.data() + m * I, g2.data() + m * 2 * I,
                                   g2.data() + m * 2 * I + I, I);
                int32_t fhas[2] = {1, 0};
                peft4j_gated_linear_mixed(gu.h, 0, fused.data(), x.data(), M, peft4j::ACT_GELU_TANH, fs.data(), fhas,
                                          threads);
                MCHECK(std::memcmp(fused.data(), want2.data(), sizeof(T) * M * I) == 0,
                       "%s mixed gated_linear (fused gate_up) %s M=%lld threads=%d differs from the separate ops",
                       name, peft4j::isa_name(isa), (long long) M, threads);
            }
            // the index is not ignored: row 0 of q on adapter 1 differs from it on adapter 0
            std::vector<int32_t> other(slots);
            other[0] = 0;
            std::vector<T> a((size_t) (M * 96)), b((size_t) (M * 96));
            int64_t ya = (int64_t) (intptr_t) a.data(), yb = (int64_t) (intptr_t) b.data();
            int32_t one = 1;
            peft4j_adapted_linear_forward_group_mixed(1, &L[0].h, &ya, x.data(), M, slots.data(), &one, 2);
            peft4j_adapted_linear_forward_group_mixed(1, &L[0].h, &yb, x.data(), M, other.data(), &one, 2);
            MCHECK(std::memcmp(a.data(), b.data(), sizeof(T) * 96) != 0,
                   "%s mixed group %s M=%lld: row 0 equal on adapters 0 and 1 (the index is ignored)", name,
                   peft4j::isa_name(isa), (long long) M);
            MCHECK(M == 1 || std::memcmp(a.data() + 96, b.data() + 96, sizeof(T) * (M - 1) * 96) == 0,
                   "%s mixed group %s M=%lld: rows past 0 changed with row 0's adapter", name, peft4j::isa_name(isa),
                   (long long) M);
        }
    }
    for (auto& l : L) peft4j_adapted_linear_destroy(l.h);
    peft4j_adapted_linear_destroy(gu.h);
}

}  // namespace

// Returns the number of failures; prints a summary line.
int run_mixgroup_tests() {
    std::mt19937 rng(7);
    test_mixed_group<float>(rng, "f32");
    test_mixed_group<uint16_t>(rng, "bf16");
    peft4j::set_active_isa(-1);
    std::printf("mixed-batch group kernels: %d checks, %d failed\n", checks, failures);
    return failures;
}
