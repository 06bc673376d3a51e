// The C entry points Java binds to (dev.peft4j.kernels.NativeKernels). Plain functions over raw
// pointers and sizes: libtorch ships no headers, so tensors cross as data pointers that Java has
// already checked for dtype, device, contiguity and size.
#pragma once

#include "peft4j_cpu.h"
#include "peft4j_axpy.h"

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
