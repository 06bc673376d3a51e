// peft4j native layer: CPU feature detection and the instruction-set level kernels dispatch on.
//
// The library is compiled for baseline x86-64 (no -mavx flags), so it loads on any x86-64 CPU.
// SIMD code lives in functions marked __attribute__((target(...))) and is only called after
// __builtin_cpu_supports() says the CPU (and the OS, through XGETBV) can run it.
// On other architectures (aarch64) only the scalar paths are compiled: x86 intrinsics and their headers sit
// behind `#if defined(__x86_64__)`, and detect_isa() reports ISA_SCALAR (`cppbuild.sh --cross-aarch64` checks it).
#pragma once

// GCC 12's AVX-512 intrinsic headers initialise placeholders from themselves (`__m512 __Y = __Y;`), which
// trips -W(maybe-)uninitialized in every inlined use. The warnings point into the system headers, at
// template instantiation time, so a push/pop around our code cannot silence them: switch them off for the
// translation unit on those compilers only. Our own code is covered by the ASan/UBSan native test.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ <= 12
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <cstdint>
#include <cstring>
#include <atomic>

namespace peft4j {

// Ordered: a higher level may use everything of a lower one. ISA_AVX512_BF16 adds AVX512_BF16's
// VDPBF16PS (bf16 pair dot products into float32; Cooper Lake, Sapphire Rapids, Zen 4 and later), used by the
// bfloat16 kernels where both operands are bfloat16 already (weights x activations, adapter A x activations).
enum Isa : int { ISA_SCALAR = 0, ISA_AVX2 = 1, ISA_AVX512 = 2, ISA_AVX512_BF16 = 3 };

inline const char* isa_name(int isa) {
    switch (isa) {
        case ISA_AVX512_BF16: return "avx512_bf16";
        case ISA_AVX512: return "avx512";
        case ISA_AVX2: return "avx2";
        default: return "scalar";
    }
}

inline int detect_isa() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
            && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
        return __builtin_cpu_supports("avx512bf16") ? ISA_AVX512_BF16 : ISA_AVX512;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        return ISA_AVX2;
    }
#endif
    return ISA_SCALAR;
}

// The best level this CPU supports, computed once.
inline int best_isa() {
    static const int best = detect_isa();
    return best;
}

// The level kernels use now: the best by default, lowered on request (tests run every path,
// PEFT4J_ISA=scalar|avx2|avx512|avx512_bf16 pins one for a whole process).
inline std::atomic<int>& active_isa_slot() {
    static std::atomic<int> slot{-1};
    return slot;
}

inline int active_isa() {
    int v = active_isa_slot().load(std::memory_order_relaxed);
    return v < 0 ? best_isa() : v;
}

// Returns the level actually set: the request clamped to what the CPU supports.
inline int set_active_isa(int requested) {
    int b = best_isa();
    int v = requested < 0 ? b : (requested > b ? b : requested);
    active_isa_slot().store(v, std::memory_order_relaxed);
    return v;
}

// Feature flags as a space-separated list, for the self-check.
inline void cpu_features(char* out, int cap) {
    if (cap <= 0) return;
    out[0] = '\0';
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    struct { const char* name; int on; } f[] = {
        {"sse4.2", __builtin_cpu_supports("sse4.2")},
        {"avx", __builtin_cpu_supports("avx")},
        {"avx2", __builtin_cpu_supports("avx2")},
        {"fma", __builtin_cpu_supports("fma")},
        {"f16c", __builtin_cpu_supports("f16c")},
        {"avx512f", __builtin_cpu_supports("avx512f")},
        {"avx512bw", __builtin_cpu_supports("avx512bw")},
        {"avx512vl", __builtin_cpu_supports("avx512vl")},
        {"avx512dq", __builtin_cpu_supports("avx512dq")},
        {"avx512bf16", __builtin_cpu_supports("avx512bf16")},
        {"avx512vnni", __builtin_cpu_supports("avx512vnni")},
    };
    int used = 0;
    for (auto& e : f) {
        if (!e.on) continue;
        int len = (int) std::strlen(e.name);
        if (used + len + 2 > cap) break;
        if (used > 0) out[used++] = ' ';
        std::memcpy(out + used, e.name, (size_t) len);
        used += len;
        out[used] = '\0';
    }
#endif
}

// bfloat16 <-> float. bf16 is the top half of an IEEE float; rounding is to nearest, ties to even,
// as libtorch's c10::BFloat16 does; NaN stays a (quiet) NaN.
inline float bf16_to_f32(uint16_t h) {
    uint32_t u = ((uint32_t) h) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

inline uint16_t f32_to_bf16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        return (uint16_t) ((u >> 16) | 0x0040u);
    }
    uint32_t rounding_bias = 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t) ((u + rounding_bias) >> 16);
}

}  // namespace peft4j
