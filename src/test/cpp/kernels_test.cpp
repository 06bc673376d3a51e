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
    // fused adapted linear: every SIMD path close to the scalar path (summation order differs: float32
    // rounding over <= 70 + 8 products of O(0.1) terms, well under 1e-4 relative), on
    // exact-size heap buffers so ASan catches any read past W, A, B, x or y
    for (int64_t M : {1, 3, 16}) {
        for (int64_t K : {1, 17, 70}) {
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
                    peft4j_adapted_linear_forward(h, Y, X, M, 2);
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
    // bf16 rounding: ties go to even, NaN stays NaN, overflow goes to infinity
    CHECK(peft4j::f32_to_bf16(1.00390625f) == 0x3f80, "tie 1+2^-8 must round down to even 1.0");
    CHECK(peft4j::f32_to_bf16(1.01171875f) == 0x3f82, "tie 1+3*2^-8 must round up to even");
    CHECK((peft4j::f32_to_bf16(__builtin_nanf("")) & 0x7fff) > 0x7f80, "NaN must stay NaN");
    CHECK(peft4j::f32_to_bf16(3.4e38f) == 0x7f80, "3.4e38 rounds to +inf in bf16");
    std::printf("%d passed, %d failed\n", checks + 4 - failures, failures);
    return failures == 0 ? 0 : 1;
}
