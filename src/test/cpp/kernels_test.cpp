// Native test of the kernels without the JVM, built by `./cppbuild.sh --asan` with AddressSanitizer and
// UBSan: every SIMD path the CPU supports must equal the scalar path bit for bit, on exact-size heap
// buffers (so any read or write past the end is caught), at odd sizes and unaligned addresses.
#include "peft4j_kernels.h"

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
    // bf16 rounding: ties go to even, NaN stays NaN, overflow goes to infinity
    CHECK(peft4j::f32_to_bf16(1.00390625f) == 0x3f80, "tie 1+2^-8 must round down to even 1.0");
    CHECK(peft4j::f32_to_bf16(1.01171875f) == 0x3f82, "tie 1+3*2^-8 must round up to even");
    CHECK((peft4j::f32_to_bf16(__builtin_nanf("")) & 0x7fff) > 0x7f80, "NaN must stay NaN");
    CHECK(peft4j::f32_to_bf16(3.4e38f) == 0x7f80, "3.4e38 rounds to +inf in bf16");
    std::printf("%d passed, %d failed\n", checks + 4 - failures, failures);
    return failures == 0 ? 0 : 1;
}
