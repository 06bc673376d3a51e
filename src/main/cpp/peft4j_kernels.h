// The C entry points Java binds to (dev.peft4j.kernels.NativeKernels). Plain functions over raw
// pointers and sizes: libtorch ships no headers, so tensors cross as data pointers that Java has
// already checked for dtype, device, contiguity and size.
#pragma once

#include "peft4j_cpu.h"
#include "peft4j_axpy.h"
#include "peft4j_lora_linear.h"

inline int peft4j_best_isa() { return peft4j::best_isa(); }
inline int peft4j_active_isa() { return peft4j::active_isa(); }
inline int peft4j_set_active_isa(int isa) { return peft4j::set_active_isa(isa); }
inline const char* peft4j_isa_name(int isa) { return peft4j::isa_name(isa); }
inline void peft4j_cpu_features(char* out, int cap) { peft4j::cpu_features(out, cap); }

// An empty call, to measure the cost of crossing into native code.
inline void peft4j_noop() {}

inline void peft4j_axpy_f32(float* y, const float* x, float alpha, int64_t n) {
    peft4j::axpy_f32(y, x, alpha, n);
}

inline void peft4j_axpy_bf16(uint16_t* y, const uint16_t* x, float alpha, int64_t n) {
    peft4j::axpy_bf16(y, x, alpha, n);
}

// ---- fused adapted Linear (decode) ----
// A handle owns the native per-layer state; the tensors it points at are owned (kept alive) by Java.
inline int64_t peft4j_adapted_linear_create(int dtype, const void* W, const void* bias, int64_t K, int64_t N) {
    auto* s = new peft4j::AdaptedLinear();
    s->dtype = dtype;
    s->W = W;
    s->bias = bias;
    s->K = K;
    s->N = N;
    return (int64_t) (intptr_t) s;
}

inline void peft4j_adapted_linear_set_adapters(int64_t handle, int32_t n, const int64_t* a_ptrs,
                                               const int64_t* b_ptrs, const int32_t* ranks, const float* scales) {
    auto* s = (peft4j::AdaptedLinear*) (intptr_t) handle;
    s->adapters.clear();
    s->total_rank = 0;
    for (int32_t i = 0; i < n; i++) {
        s->adapters.push_back({(const void*) (intptr_t) a_ptrs[i], (const void*) (intptr_t) b_ptrs[i], ranks[i],
                               scales[i]});
        s->total_rank += ranks[i];
    }
}

inline void peft4j_adapted_linear_forward(int64_t handle, void* y, const void* x, int64_t m, int32_t threads) {
    auto* s = (peft4j::AdaptedLinear*) (intptr_t) handle;
    if (s->dtype == peft4j::DT_BF16) {
        peft4j::adapted_linear_forward<uint16_t>(*s, (uint16_t*) y, (const uint16_t*) x, m, threads);
    } else {
        peft4j::adapted_linear_forward<float>(*s, (float*) y, (const float*) x, m, threads);
    }
}

inline void peft4j_adapted_linear_destroy(int64_t handle) {
    delete (peft4j::AdaptedLinear*) (intptr_t) handle;
}
