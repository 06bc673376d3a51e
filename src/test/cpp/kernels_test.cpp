// Native test of the kernels without the JVM, built by `./cppbuild.sh --asan` with AddressSanitizer and
// UBSan: every SIMD path the CPU supports must equal the scalar path bit for bit, on exact-size heap
// buffers (so any read or write past the end is caught), at odd sizes and unaligned addresses.
#include "peft4j_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

static int failures = 0;

int run_decode_tests();  // decode_test.cpp

#define CHECK(cond, ...)                                  \
    do {                                                  \
        if (!(cond)) {                                    \
            std::fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            std::fprintf(stderr, __VA_ARGS__);            \
            std::fprintf(stderr, "\n");                   \
            failures++;                                   \
        }                                                 \
    } while (0)

template <typename T>
static T* exact_alloc(size_t n, size_t misalign_elems) {
    // new[] of exactly n (+ misalignment) elements: ASan reports any access past the end
    return new T[n + misalign_elems] + misalign_elems;
}

#if defined(__x86_64__)
PEFT4J_BF16_TARGET static void cvt16_ne(const float* f, uint16_t* out) {
    _mm256_storeu_si256((__m256i*) out, peft4j::f32x16_to_bf16_ne(_mm512_loadu_ps(f)));
}
#endif

int run_quant_tests();  // quant_test.cpp
int run_qlora_tests();  // qlora_test.cpp
int run_mixgroup_tests();  // mixgroup_test.cpp

int main() {
    std::mt19937 rng(1234);
    std::normal_distribution<float> normal(0.f, 3.f);
    const int64_t sizes[] = {0, 1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 255, 1000, 4099};
    const int best = peft4j::best_isa();
    std::printf("best isa: %s\n", peft4j::isa_name(best));
    int checks = 0;
    for (int64_t n : sizes) {
        for (size_t mis = 0; mis < 2; mis++) {
            std::vector<float> xs(n), ys(n);
            for (int64_t i = 0; i < n; i++) { xs[i] = normal(rng); ys[i] = normal(rng); }
            // float32 reference on the scalar path
            std::vector<float> ref = ys;
            peft4j::set_active_isa(peft4j::ISA_SCALAR);
            peft4j_axpy_f32(ref.data(), xs.data(), -0.37f, n);
            std::vector<uint16_t> xb(n), yb(n), refb(n);
            for (int64_t i = 0; i < n; i++) { xb[i] = peft4j::f32_to_bf16(xs[i]); yb[i] = peft4j::f32_to_bf16(ys[i]); }
            refb = yb;
            peft4j_axpy_bf16(refb.data(), xb.data(), -0.37f, n);
            for (int isa = peft4j::ISA_SCALAR; isa <= best; isa++) {
                CHECK(peft4j::set_active_isa(isa) == isa, "could not select isa %d", isa);
                float* x = exact_alloc<float>((size_t) n, mis);
                float* y = exact_alloc<float>((size_t) n, mis);
                if (n > 0) std::memcpy(x, xs.data(), sizeof(float) * n);
                if (n > 0) std::memcpy(y, ys.data(), sizeof(float) * n);
                peft4j_axpy_f32(y, x, -0.37f, n);
                CHECK(n == 0 || std::memcmp(y, ref.data(), sizeof(float) * n) == 0,
                      "f32 %s n=%lld misalign=%zu differs from scalar", peft4j::isa_name(isa), (long long) n, mis);
                delete[] (x - mis);
                delete[] (y - mis);

                uint16_t* xh = exact_alloc<uint16_t>((size_t) n, mis);
                uint16_t* yh = exact_alloc<uint16_t>((size_t) n, mis);
                if (n > 0) std::memcpy(xh, xb.data(), sizeof(uint16_t) * n);
                if (n > 0) std::memcpy(yh, yb.data(), sizeof(uint16_t) * n);
                peft4j_axpy_bf16(yh, xh, -0.37f, n);
                CHECK(n == 0 || std::memcmp(yh, refb.data(), sizeof(uint16_t) * n) == 0,
                      "bf16 %s n=%lld misalign=%zu differs from scalar", peft4j::isa_name(isa), (long long) n, mis);
                delete[] (xh - mis);
                delete[] (yh - mis);
                checks += 2;
            }
        }
    }
    // VCVTNEPS2BF16 conversion (avx512_bf16 stores) bit for bit equal to f32_to_bf16: ties, NaNs (quiet, payload
    // kept), infinities, overflow, zeros, denormals (which the instruction alone would flush) and random bits
#if defined(__x86_64__)
    if (best >= peft4j::ISA_AVX512_BF16) {
        std::vector<uint32_t> bits = {0u, 0x80000000u, 0x00000001u, 0x807fffffu, 0x00400000u, 0x007fffffu,
                                      0x00800000u, 0x3f808000u, 0x3f818000u, 0x3f80ffffu, 0x7f7fffffu, 0xff7fffffu,
                                      0x7f800000u, 0xff800000u, 0x7f800001u, 0x7fc00000u, 0xffc12345u, 0x7fbfffffu};
        std::uniform_int_distribution<uint32_t> any;
        for (int i = 0; i < 20000; i++) bits.push_back(any(rng));
        while (bits.size() % 16) bits.push_back(0x3f800000u);
        for (size_t i = 0; i < bits.size(); i += 16) {
            float f[16];
            std::memcpy(f, bits.data() + i, sizeof f);
            uint16_t got[16];
            cvt16_ne(f, got);
            for (int l = 0; l < 16; l++)
                CHECK(got[l] == peft4j::f32_to_bf16(f[l]), "vcvtneps2bf16 of 0x%08x: 0x%04x, f32_to_bf16 0x%04x",
                      bits[i + l], got[l], peft4j::f32_to_bf16(f[l]));
            checks++;
        }
    }
#endif
    // fused adapted linear: every SIMD path close to the scalar path (summation order differs: float32
    // rounding over <= 70 + 8 products of O(0.1) terms, well under 1e-4 relative), on
    // exact-size heap buffers so ASan catches any read past W, A, B, x or y
    // (from 5 rows on AVX-512 the base is the quad kernel: 5, 8, 13 and 16 rows take 2, 2, 4 and 4 blocks of 4 rows,
    // the partial ones zero-padded; K = 7, 17, 70 end on a masked piece of 3, 1, 2 columns; N = 5, 67, 130 end on
    // partial blocks of features)
    for (int64_t M : {1, 3, 5, 8, 13, 16}) {
        for (int64_t K : {1, 7, 17, 70}) {
            for (int64_t N : {1, 5, 67, 130}) {
                const int32_t r[2] = {3, 8};
                const float sc[2] = {0.5f, 2.0f};
                std::vector<float> hw(N * K), hx(M * K), hb(N), ha0(r[0] * K), hb0(N * r[0]), ha1(r[1] * K), hb1(N * r[1]);
                for (auto* v : {&hw, &hx, &hb, &ha0, &hb0, &ha1, &hb1})
                    for (auto& e : *v) e = normal(rng) * 0.3f;
                auto run = [&](int isa, std::vector<float>& out) {
                    peft4j::set_active_isa(isa);
                    float* W = exact_alloc<float>(N * K, 0); std::memcpy(W, hw.data(), sizeof(float) * N * K);
                    float* X = exact_alloc<float>(M * K, 0); std::memcpy(X, hx.data(), sizeof(float) * M * K);
                    float* Bi = exact_alloc<float>(N, 0); std::memcpy(Bi, hb.data(), sizeof(float) * N);
                    float* A0 = exact_alloc<float>(r[0] * K, 0); std::memcpy(A0, ha0.data(), sizeof(float) * r[0] * K);
                    float* B0 = exact_alloc<float>(N * r[0], 0); std::memcpy(B0, hb0.data(), sizeof(float) * N * r[0]);
                    float* A1 = exact_alloc<float>(r[1] * K, 0); std::memcpy(A1, ha1.data(), sizeof(float) * r[1] * K);
                    float* B1 = exact_alloc<float>(N * r[1], 0); std::memcpy(B1, hb1.data(), sizeof(float) * N * r[1]);
                    float* Y = exact_alloc<float>(M * N, 0);
                    int64_t h = peft4j_adapted_linear_create(peft4j::DT_F32, W, Bi, K, N);
                    const int64_t ap[2] = {(int64_t) (intptr_t) A0, (int64_t) (intptr_t) A1};
                    const int64_t bp[2] = {(int64_t) (intptr_t) B0, (int64_t) (intptr_t) B1};
                    peft4j_adapted_linear_set_adapters(h, 2, ap, bp, r, sc);
                    peft4j_adapted_linear_forward(h, Y, X, M, 2, nullptr);
                    peft4j_adapted_linear_destroy(h);
                    out.assign(Y, Y + M * N);
                    for (float* p : {W, X, Bi, A0, B0, A1, B1, Y}) delete[] p;
                };
                std::vector<float> ref, got;
                run(peft4j::ISA_SCALAR, ref);
                for (int isa = peft4j::ISA_AVX2; isa <= best; isa++) {
                    run(isa, got);
                    float worst = 0.f;
                    for (int64_t i = 0; i < M * N; i++) worst = std::max(worst, std::fabs(got[i] - ref[i]) / (1.f + std::fabs(ref[i])));
                    CHECK(worst < 1e-4f, "fused %s M=%lld K=%lld N=%lld differs from scalar by %g",
                          peft4j::isa_name(isa), (long long) M, (long long) K, (long long) N, worst);
                    checks++;
                }
            }
        }
    }
    // fused adapted linear in bfloat16, mixed rows included: every SIMD path (on avx512_bf16 the base and the
    // shrink are VDPBF16PS products of bf16 x with bf16 W and A) within one bf16 rounding of the scalar path,
    // on exact-size heap buffers (odd K exercises the masked tails of the bf16 pair loads; from 5 rows on the base is
    // the quad kernel, whose last piece of 8 columns is masked at K = 1, 17, 70, 1100; below AVX512_BF16 at 5-12 rows x is packed
    // step by step, zero-padded to a multiple of 32 columns, against a masked last step of W; from 13 rows on the
    // base is K-tiled in slices of kDpSlice: K = 1100 has two whole slices and a masked remainder, N = 130 groups
    // of kDpGroup rows and a partial one; at 2-12 rows each register block's rows of W are first read through by
    // touch_lines, whose last load ends exactly at the block's last byte: the exact-size buffers put it against
    // the end of W under --asan)
    for (int64_t M : {1, 2, 3, 4, 5, 8, 9, 12, 13, 16}) {
        for (int64_t K : {1, 17, 70, 1100}) {
            for (int64_t N : {1, 5, 67, 130}) {
                for (int mixed = 0; mixed < 2; mixed++) {
                    const int32_t r[2] = {3, 8};
                    const float sc[2] = {0.5f, 2.0f};
                    std::vector<uint16_t> hw(N * K), hx(M * K), hb(N), ha0(r[0] * K), hb0(N * r[0]), ha1(r[1] * K), hb1(N * r[1]);
                    for (auto* v : {&hw, &hx, &hb, &ha0, &hb0, &ha1, &hb1})
                        for (auto& e : *v) e = peft4j::f32_to_bf16(normal(rng) * 0.3f);
                    std::vector<int32_t> rs(M);
                    for (int64_t m = 0; m < M; m++) rs[m] = (int32_t) (m % 3) - 1;  // -1, 0, 1, -1, ...
                    auto run = [&](int isa, std::vector<float>& out) {
                        peft4j::set_active_isa(isa);
                        auto copy = [](const std::vector<uint16_t>& v) {
                            uint16_t* p = exact_alloc<uint16_t>(v.size(), 0);
                            std::memcpy(p, v.data(), sizeof(uint16_t) * v.size());
                            return p;
                        };
                        uint16_t *W = copy(hw), *X = copy(hx), *Bi = copy(hb), *A0 = copy(ha0), *B0 = copy(hb0),
                                 *A1 = copy(ha1), *B1 = copy(hb1);
                        uint16_t* Y = exact_alloc<uint16_t>(M * N, 0);
                        int64_t h = peft4j_adapted_linear_create(peft4j::DT_BF16, W, Bi, K, N);
                        const int64_t ap[2] = {(int64_t) (intptr_t) A0, (int64_t) (intptr_t) A1};
                        const int64_t bp[2] = {(int64_t) (intptr_t) B0, (int64_t) (intptr_t) B1};
                        peft4j_adapted_linear_set_adapters(h, 2, ap, bp, r, sc);
                        peft4j_adapted_linear_forward(h, Y, X, M, 2, mixed ? rs.data() : nullptr);
                        peft4j_adapted_linear_destroy(h);
                        out.resize(M * N);
                        for (int64_t i = 0; i < M * N; i++) out[i] = peft4j::bf16_to_f32(Y[i]);
                        for (uint16_t* p : {W, X, Bi, A0, B0, A1, B1, Y}) delete[] p;
                    };
                    std::vector<float> ref, got;
                    run(peft4j::ISA_SCALAR, ref);
                    for (int isa = peft4j::ISA_AVX2; isa <= best; isa++) {
                        run(isa, got);
                        float worst = 0.f;
                        for (int64_t i = 0; i < M * N; i++) worst = std::max(worst, std::fabs(got[i] - ref[i]) / (1.f + std::fabs(ref[i])));
                        CHECK(worst <= 0.0079f, "fused bf16 %s M=%lld K=%lld N=%lld mixed=%d differs from scalar by %g",
                              peft4j::isa_name(isa), (long long) M, (long long) K, (long long) N, mixed, worst);
                        checks++;
                    }
                }
            }
        }
    }
    // LoRA delta for any M (with and without a per-row slot index), low-rank merge and IA3 scaling: every ISA
    // against a float64 reference computed here, on exact-size heap buffers. float32 accumulation over at most
    // K = 70 products of O(1) terms: 1e-4 relative is ample; bf16 outputs add half an ulp (2^-8 relative).
    auto rel_err = [](double got, double want) { return std::fabs(got - want) / (1.0 + std::fabs(want)); };
    for (int isa = peft4j::ISA_SCALAR; isa <= best; isa++) {
        peft4j::set_active_isa(isa);
        for (int64_t M : {1, 5, 17, 40}) {
            for (int64_t K : {1, 17, 70}) {
                for (int64_t N : {1, 9, 67, 300}) {
                    for (int mixed = 0; mixed < 2; mixed++) for (int even = 0; even < 2; even++) {
                        // odd ranks keep the float32 expand; all-even ranks take VDPBF16PS's in bf16 on avx512_bf16
                        const int32_t r[3] = {even ? 2 : 1, even ? 6 : 5, even ? 32 : 33};
                        const bool t_in_bf16 = even && isa >= peft4j::ISA_AVX512_BF16;
                        const float sc[3] = {0.5f, -2.0f, 1.25f};
                        std::vector<float> hx(M * K), hy(M * N);
                        std::vector<std::vector<float>> ha(3), hb(3);
                        for (auto& e : hx) e = normal(rng) * 0.3f;
                        for (auto& e : hy) e = normal(rng) * 0.3f;
                        for (int a = 0; a < 3; a++) {
                            ha[a].resize(r[a] * K); hb[a].resize(N * r[a]);
                            for (auto& e : ha[a]) e = normal(rng) * 0.3f;
                            for (auto& e : hb[a]) e = normal(rng) * 0.3f;
                        }
                        std::vector<int32_t> rs(M);
                        for (int64_t m = 0; m < M; m++) rs[m] = (int32_t) (m % 4) - 1;  // -1, 0, 1, 2, -1, ...
                        for (int bf = 0; bf < 2; bf++) {
                            auto q = [&](float v) { return bf ? peft4j::bf16_to_f32(peft4j::f32_to_bf16(v)) : v; };
                            // reference in double from the (rounded) inputs
                            std::vector<double> want(M * N), tabs(M * N);  // tabs: Σ |s·t_j·B_nj|
                            for (int64_t m = 0; m < M; m++)
                                for (int64_t n = 0; n < N; n++) {
                                    double acc = q(hy[m * N + n]), ab = 0;
                                    for (int a = 0; a < 3; a++) {
                                        if (mixed && rs[m] != a) continue;
                                        for (int j = 0; j < r[a]; j++) {
                                            double tj = 0;
                                            for (int64_t k = 0; k < K; k++) tj += (double) q(hx[m * K + k]) * q(ha[a][j * K + k]);
                                            acc += sc[a] * tj * q(hb[a][n * r[a] + j]);
                                            ab += std::fabs(sc[a] * tj * q(hb[a][n * r[a] + j]));
                                        }
                                    }
                                    want[m * N + n] = acc;
                                    tabs[m * N + n] = ab;
                                }
                            std::vector<double> got(M * N);
                            int64_t ap[3], bp[3];
                            if (bf) {
                                uint16_t* X = exact_alloc<uint16_t>(M * K, 0);
                                uint16_t* Y = exact_alloc<uint16_t>(M * N, 0);
                                uint16_t* A[3]; uint16_t* B[3];
                                for (int64_t i = 0; i < M * K; i++) X[i] = peft4j::f32_to_bf16(hx[i]);
                                for (int64_t i = 0; i < M * N; i++) Y[i] = peft4j::f32_to_bf16(hy[i]);
                                for (int a = 0; a < 3; a++) {
                                    A[a] = exact_alloc<uint16_t>(r[a] * K, 0); B[a] = exact_alloc<uint16_t>(N * r[a], 0);
                                    for (int64_t i = 0; i < r[a] * K; i++) A[a][i] = peft4j::f32_to_bf16(ha[a][i]);
                                    for (int64_t i = 0; i < N * r[a]; i++) B[a][i] = peft4j::f32_to_bf16(hb[a][i]);
                                    ap[a] = (int64_t) (intptr_t) A[a]; bp[a] = (int64_t) (intptr_t) B[a];
                                }
                                peft4j_lora_delta(peft4j::DT_BF16, Y, X, M, K, N, 3, ap, bp, r, sc, mixed ? rs.data() : nullptr, 2);
                                for (int64_t i = 0; i < M * N; i++) got[i] = peft4j::bf16_to_f32(Y[i]);
                                delete[] X; delete[] Y;
                                for (int a = 0; a < 3; a++) { delete[] A[a]; delete[] B[a]; }
                            } else {
                                float* X = exact_alloc<float>(M * K, 0); std::memcpy(X, hx.data(), sizeof(float) * M * K);
                                float* Y = exact_alloc<float>(M * N, 0); std::memcpy(Y, hy.data(), sizeof(float) * M * N);
                                float* A[3]; float* B[3];
                                for (int a = 0; a < 3; a++) {
                                    A[a] = exact_alloc<float>(r[a] * K, 0); std::memcpy(A[a], ha[a].data(), sizeof(float) * r[a] * K);
                                    B[a] = exact_alloc<float>(N * r[a], 0); std::memcpy(B[a], hb[a].data(), sizeof(float) * N * r[a]);
                                    ap[a] = (int64_t) (intptr_t) A[a]; bp[a] = (int64_t) (intptr_t) B[a];
                                }
                                peft4j_lora_delta(peft4j::DT_F32, Y, X, M, K, N, 3, ap, bp, r, sc, mixed ? rs.data() : nullptr, 2);
                                for (int64_t i = 0; i < M * N; i++) got[i] = Y[i];
                                delete[] X; delete[] Y;
                                for (int a = 0; a < 3; a++) { delete[] A[a]; delete[] B[a]; }
                            }
                            double worst = 0;
                            // t rounded to bf16 (VDPBF16PS expand) moves each term by at most 2^-9 of itself: allow
                            // twice that bound, Σ |s·t_j·B_nj| / 256
                            for (int64_t i = 0; i < M * N; i++)
                                worst = std::max(worst, rel_err(got[i], want[i]) - (bf ? std::fabs(want[i]) / 256.0 : 0.0)
                                                            - (bf && t_in_bf16 ? tabs[i] / 256.0 / (1.0 + std::fabs(want[i])) : 0.0));
                            CHECK(worst < 1e-4, "lora_delta %s bf16=%d mixed=%d even=%d M=%lld K=%lld N=%lld off by %g",
                                  peft4j::isa_name(isa), bf, mixed, even, (long long) M, (long long) K, (long long) N, worst);
                            checks++;
                        }
                    }
                }
            }
        }
        // low-rank merge W[R,C] += coef·V and scaling by rows / columns, float32 and bf16
        for (int64_t R : {1, 7, 33}) {
            for (int64_t C : {1, 15, 17, 1030}) {
                for (int rr : {1, 3, 16}) {
                    std::vector<float> hw(R * C), coef(R * rr), V(rr * C), lr(R), lc(C);
                    for (auto* v : {&hw, &coef, &V}) for (auto& e : *v) e = normal(rng) * 0.3f;
                    for (auto& e : lr) e = 0.5f + std::fabs(normal(rng));
                    for (auto& e : lc) e = 0.5f + std::fabs(normal(rng));
                    for (int bf = 0; bf < 2; bf++) {
                        auto q = [&](float v) { return bf ? peft4j::bf16_to_f32(peft4j::f32_to_bf16(v)) : v; };
                        void* W = bf ? (void*) exact_alloc<uint16_t>(R * C, 0) : (void*) exact_alloc<float>(R * C, 0);
                        void* D = bf ? (void*) exact_alloc<uint16_t>(R * C, 0) : (void*) exact_alloc<float>(R * C, 0);
                        auto put = [&](void* p, int64_t i, float v) {
                            if (bf) ((uint16_t*) p)[i] = peft4j::f32_to_bf16(v); else ((float*) p)[i] = v; };
                        auto get = [&](void* p, int64_t i) {
                            return bf ? (double) peft4j::bf16_to_f32(((uint16_t*) p)[i]) : (double) ((float*) p)[i]; };
                        for (int64_t i = 0; i < R * C; i++) put(W, i, hw[i]);
                        float* cf = exact_alloc<float>(R * rr, 0); std::memcpy(cf, coef.data(), sizeof(float) * R * rr);
                        float* vf = exact_alloc<float>(rr * C, 0); std::memcpy(vf, V.data(), sizeof(float) * rr * C);
                        peft4j_merge_lowrank(bf, W, R, C, cf, vf, rr, 2);
                        double worst = 0;
                        for (int64_t i = 0; i < R; i++)
                            for (int64_t j = 0; j < C; j++) {
                                double want = q(hw[i * C + j]);
                                for (int k = 0; k < rr; k++) want += (double) coef[i * rr + k] * V[k * C + j];
                                worst = std::max(worst, rel_err(get(W, i * C + j), want) - (bf ? std::fabs(want) / 256.0 : 0.0));
                            }
                        CHECK(worst < 1e-5, "merge_lowrank %s bf16=%d R=%lld C=%lld r=%d off by %g", peft4j::isa_name(isa),
                              bf, (long long) R, (long long) C, rr, worst);
                        // scaling is one rounded multiply or divide per element: exact against the same op here
                        float* lrf = exact_alloc<float>(R, 0); std::memcpy(lrf, lr.data(), sizeof(float) * R);
                        float* lcf = exact_alloc<float>(C, 0); std::memcpy(lcf, lc.data(), sizeof(float) * C);
                        for (int by_rows = 0; by_rows < 2; by_rows++)
                            for (int dv = 0; dv < 2; dv++) {
                                peft4j_scale_matrix(bf, D, W, R, C, by_rows ? lrf : lcf, by_rows, dv, 2);
                                int bad = 0;
                                for (int64_t i = 0; i < R; i++)
                                    for (int64_t j = 0; j < C; j++) {
                                        float w = (float) get(W, i * C + j), f = by_rows ? lr[i] : lc[j];
                                        float want = q(dv ? w / f : w * f);
                                        if ((float) get(D, i * C + j) != want) bad++;
                                    }
                                CHECK(bad == 0, "scale_matrix %s bf16=%d rows=%d div=%d R=%lld C=%lld: %d differ",
                                      peft4j::isa_name(isa), bf, by_rows, dv, (long long) R, (long long) C, bad);
                                checks++;
                            }
                        // in place (dst == src) too
                        peft4j_scale_matrix(bf, W, W, R, C, lcf, 0, 0, 2);
                        if (bf) { delete[] (uint16_t*) W; delete[] (uint16_t*) D; } else { delete[] (float*) W; delete[] (float*) D; }
                        delete[] cf; delete[] vf; delete[] lrf; delete[] lcf;
                        checks++;
                    }
                }
            }
        }
    }
    // decode kernel with a per-row slot index and IA3 scales: each SIMD path against the scalar one
    for (int64_t M : {1, 6, 16}) {
        for (int64_t K : {17, 70}) {
            for (int64_t N : {5, 130}) {
                const int32_t r[2] = {3, 8};
                const float sc[2] = {0.5f, 2.0f};
                std::vector<float> hw(N * K), hx(M * K), ha0(r[0] * K), hb0(N * r[0]), ha1(r[1] * K), hb1(N * r[1]), li(K), lo(N);
                for (auto* v : {&hw, &hx, &ha0, &hb0, &ha1, &hb1, &li, &lo})
                    for (auto& e : *v) e = normal(rng) * 0.3f;
                std::vector<int32_t> rs(M);
                for (int64_t m = 0; m < M; m++) rs[m] = (int32_t) (m % 3) - 1;
                auto run = [&](int isa, std::vector<float>& out, bool ia3) {
                    peft4j::set_active_isa(isa);
                    float* W = exact_alloc<float>(N * K, 0); std::memcpy(W, hw.data(), sizeof(float) * N * K);
                    float* X = exact_alloc<float>(M * K, 0); std::memcpy(X, hx.data(), sizeof(float) * M * K);
                    float* A0 = exact_alloc<float>(r[0] * K, 0); std::memcpy(A0, ha0.data(), sizeof(float) * r[0] * K);
                    float* B0 = exact_alloc<float>(N * r[0], 0); std::memcpy(B0, hb0.data(), sizeof(float) * N * r[0]);
                    float* A1 = exact_alloc<float>(r[1] * K, 0); std::memcpy(A1, ha1.data(), sizeof(float) * r[1] * K);
                    float* B1 = exact_alloc<float>(N * r[1], 0); std::memcpy(B1, hb1.data(), sizeof(float) * N * r[1]);
                    float* Y = exact_alloc<float>(M * N, 0);
                    int64_t h = peft4j_adapted_linear_create(peft4j::DT_F32, W, nullptr, K, N);
                    const int64_t ap[2] = {(int64_t) (intptr_t) A0, (int64_t) (intptr_t) A1};
                    const int64_t bp[2] = {(int64_t) (intptr_t) B0, (int64_t) (intptr_t) B1};
                    if (ia3) peft4j_adapted_linear_set_ia3(h, li.data(), lo.data());
                    else peft4j_adapted_linear_set_adapters(h, 2, ap, bp, r, sc);
                    peft4j_adapted_linear_forward(h, Y, X, M, 2, ia3 ? nullptr : rs.data());
                    peft4j_adapted_linear_destroy(h);
                    out.assign(Y, Y + M * N);
                    for (float* p : {W, X, A0, B0, A1, B1, Y}) delete[] p;
                };
                for (int ia3 = 0; ia3 < 2; ia3++) {
                    // float64 reference
                    std::vector<double> want(M * N);
                    for (int64_t m = 0; m < M; m++)
                        for (int64_t n = 0; n < N; n++) {
                            double acc = 0;
                            for (int64_t k = 0; k < K; k++) acc += (double) hx[m * K + k] * (ia3 ? li[k] : 1.f) * hw[n * K + k];
                            if (ia3) acc *= lo[n];
                            for (int a = 0; a < 2 && !ia3; a++) {
                                if (rs[m] != a) continue;
                                const std::vector<float>& A = a ? ha1 : ha0;
                                const std::vector<float>& B = a ? hb1 : hb0;
                                for (int j = 0; j < r[a]; j++) {
                                    double tj = 0;
                                    for (int64_t k = 0; k < K; k++) tj += (double) hx[m * K + k] * A[j * K + k];
                                    acc += sc[a] * tj * B[n * r[a] + j];
                                }
                            }
                            want[m * N + n] = acc;
                        }
                    for (int isa = peft4j::ISA_SCALAR; isa <= best; isa++) {
                        std::vector<float> got;
                        run(isa, got, ia3 != 0);
                        double worst = 0;
                        for (int64_t i = 0; i < M * N; i++) worst = std::max(worst, rel_err(got[i], want[i]));
                        CHECK(worst < 1e-4, "fused %s ia3=%d mixed M=%lld K=%lld N=%lld off by %g", peft4j::isa_name(isa), ia3,
                              (long long) M, (long long) K, (long long) N, worst);
                        checks++;
                    }
                }
            }
        }
    }
    // DoRA: the decode kernel's pre-bias scale, against a float64 reference, on every ISA path; and the GEMM
    // path's in-place rescale, each SIMD path equal to the scalar one bit for bit
    for (int64_t M : {1, 5, 16}) {
        for (int64_t K : {17, 70}) {
            for (int64_t N : {5, 130}) {
                for (int with_bias = 0; with_bias < 2; with_bias++) {
                    const int32_t r = 4;
                    const float sc = 0.75f;
                    std::vector<float> hw(N * K), hx(M * K), ha(r * K), hb(N * r), hbias(N), ds(N);
                    for (auto* v : {&hw, &hx, &ha, &hb, &hbias})
                        for (auto& e : *v) e = normal(rng) * 0.3f;
                    for (auto& e : ds) e = 0.5f + std::fabs(normal(rng)) * 0.2f;
                    std::vector<double> want(M * N);
                    for (int64_t m = 0; m < M; m++)
                        for (int64_t n = 0; n < N; n++) {
                            double acc = 0;
                            for (int64_t k = 0; k < K; k++) acc += (double) hx[m * K + k] * hw[n * K + k];
                            for (int j = 0; j < r; j++) {
                                double tj = 0;
                                for (int64_t k = 0; k < K; k++) tj += (double) hx[m * K + k] * ha[j * K + k];
                                acc += sc * tj * hb[n * r + j];
                            }
                            want[m * N + n] = ds[n] * acc + (with_bias ? hbias[n] : 0.0);
                        }
                    for (int isa = peft4j::ISA_SCALAR; isa <= best; isa++) {
                        peft4j::set_active_isa(isa);
                        float* W = exact_alloc<float>(N * K, 0); std::memcpy(W, hw.data(), sizeof(float) * N * K);
                        float* X = exact_alloc<float>(M * K, 0); std::memcpy(X, hx.data(), sizeof(float) * M * K);
                        float* A = exact_alloc<float>(r * K, 0); std::memcpy(A, ha.data(), sizeof(float) * r * K);
                        float* B = exact_alloc<float>(N * r, 0); std::memcpy(B, hb.data(), sizeof(float) * N * r);
                        float* Bi = exact_alloc<float>(N, 0); std::memcpy(Bi, hbias.data(), sizeof(float) * N);
                        float* D = exact_alloc<float>(N, 0); std::memcpy(D, ds.data(), sizeof(float) * N);
                        float* Y = exact_alloc<float>(M * N, 0);
                        int64_t h = peft4j_adapted_linear_create(peft4j::DT_F32, W, with_bias ? Bi : nullptr, K, N);
                        const int64_t ap[1] = {(int64_t) (intptr_t) A};
                        const int64_t bp[1] = {(int64_t) (intptr_t) B};
                        peft4j_adapted_linear_set_adapters(h, 1, ap, bp, &r, &sc);
                        peft4j_adapted_linear_set_dora(h, D);
                        delete[] D;  // the state holds a copy
                        peft4j_adapted_linear_forward(h, Y, X, M, 2, nullptr);
                        double worst = 0;
                        for (int64_t i = 0; i < M * N; i++) worst = std::max(worst, rel_err(Y[i], want[i]));
                        CHECK(worst < 1e-4, "fused dora %s bias=%d M=%lld K=%lld N=%lld off by %g", peft4j::isa_name(isa),
                              with_bias, (long long) M, (long long) K, (long long) N, worst);
                        // cleared: the plain adapted output again
                        peft4j_adapted_linear_set_dora(h, nullptr);
                        peft4j_adapted_linear_forward(h, Y, X, M, 2, nullptr);
                        worst = 0;
                        for (int64_t i = 0; i < M * N; i++) {
                            const double b = with_bias ? hbias[i % N] : 0.0;
                            worst = std::max(worst, rel_err(Y[i], (want[i] - b) / ds[i % N] + b));
                        }
                        CHECK(worst < 1e-4, "fused dora cleared %s M=%lld off by %g", peft4j::isa_name(isa), (long long) M, worst);
                        peft4j_adapted_linear_destroy(h);
                        for (float* p : {W, X, A, B, Bi, Y}) delete[] p;
                        checks += 2;
                    }
                }
            }
        }
    }
    for (int64_t M : {1, 3, 40}) {
        for (int64_t N : {1, 17, 130}) {
            for (int bf = 0; bf < 2; bf++) {
                for (int with_bias = 0; with_bias < 2; with_bias++) {
                    std::vector<float> hy(M * N), hbias(N), ds(N);
                    for (auto* v : {&hy, &hbias}) for (auto& e : *v) e = normal(rng);
                    for (auto& e : ds) e = 0.5f + std::fabs(normal(rng)) * 0.2f;
                    std::vector<float> ref;
                    for (int isa = peft4j::ISA_SCALAR; isa <= best; isa++) {
                        peft4j::set_active_isa(isa);
                        float* D = exact_alloc<float>(N, 1); std::memcpy(D, ds.data(), sizeof(float) * N);
                        std::vector<float> got(M * N);
                        if (bf) {
                            uint16_t* Y = exact_alloc<uint16_t>(M * N, 1);
                            uint16_t* Bi = exact_alloc<uint16_t>(N, 1);
                            for (int64_t i = 0; i < M * N; i++) Y[i] = peft4j::f32_to_bf16(hy[i]);
                            for (int64_t i = 0; i < N; i++) Bi[i] = peft4j::f32_to_bf16(hbias[i]);
                            peft4j_dora_rescale(peft4j::DT_BF16, Y, with_bias ? Bi : nullptr, D, M, N, 2);
                            for (int64_t i = 0; i < M * N; i++) got[i] = peft4j::bf16_to_f32(Y[i]);
                            delete[] (Y - 1); delete[] (Bi - 1);
                        } else {
                            float* Y = exact_alloc<float>(M * N, 1); std::memcpy(Y, hy.data(), sizeof(float) * M * N);
                            float* Bi = exact_alloc<float>(N, 1); std::memcpy(Bi, hbias.data(), sizeof(float) * N);
                            peft4j_dora_rescale(peft4j::DT_F32, Y, with_bias ? Bi : nullptr, D, M, N, 2);
                            got.assign(Y, Y + M * N);
                            delete[] (Y - 1); delete[] (Bi - 1);
                        }
                        delete[] (D - 1);
                        if (isa == peft4j::ISA_SCALAR) {
                            ref = got;
                            double worst = 0;
                            for (int64_t i = 0; i < M * N; i++) {
                                const float yin = bf ? peft4j::bf16_to_f32(peft4j::f32_to_bf16(hy[i])) : hy[i];
                                const float b = with_bias ? (bf ? peft4j::bf16_to_f32(peft4j::f32_to_bf16(hbias[i % N]))
                                                                : hbias[i % N]) : 0.f;
                                worst = std::max(worst, rel_err(got[i], (double) ds[i % N] * (yin - b) + b));
                            }
                            CHECK(worst < (bf ? 1e-2 : 1e-5), "dora_rescale scalar bf16=%d M=%lld N=%lld off by %g", bf,
                                  (long long) M, (long long) N, worst);
                        } else {
                            int bad = 0;
                            for (int64_t i = 0; i < M * N; i++) bad += got[i] != ref[i];
                            CHECK(bad == 0, "dora_rescale %s bf16=%d bias=%d M=%lld N=%lld: %d differ from scalar",
                                  peft4j::isa_name(isa), bf, with_bias, (long long) M, (long long) N, bad);
                        }
                        checks++;
                    }
                }
            }
        }
    }
    // bf16 rounding: ties go to even, NaN stays NaN, overflow goes to infinity
    CHECK(peft4j::f32_to_bf16(1.00390625f) == 0x3f80, "tie 1+2^-8 must round down to even 1.0");
    CHECK(peft4j::f32_to_bf16(1.01171875f) == 0x3f82, "tie 1+3*2^-8 must round up to even");
    CHECK((peft4j::f32_to_bf16(__builtin_nanf("")) & 0x7fff) > 0x7f80, "NaN must stay NaN");
    CHECK(peft4j::f32_to_bf16(3.4e38f) == 0x7f80, "3.4e38 rounds to +inf in bf16");
    failures += run_decode_tests();
    failures += run_quant_tests();
    failures += run_qlora_tests();
    failures += run_mixgroup_tests();
    std::printf("%d passed, %d failed\n", checks + 4 - failures, failures);
    return failures == 0 ? 0 : 1;
}
