// DoRA's magnitude scale on the adapted Linear (PEFT's tuners/lora/dora.py, eval mode, no dropout):
//
//   y = ds ⊙ (x·Wᵀ + Σ s·(x·Aᵀ)·Bᵀ) + bias,   ds = m / ‖W + s·B·A‖ (per output feature, the norm detached)
//
// PEFT writes it as result + (ds − 1)·(result − bias) + ds·s·lora(x); the bias is not scaled. The decode kernel
// applies ds on its write of each output (finish_row); the GEMM path (libtorch's base forward, then the LoRA
// delta added in place) rescales its finished output here.
#pragma once

#include "peft4j_lora_linear.h"
#include "peft4j_threads.h"

#include <algorithm>
#include <cstdint>
#include <vector>

namespace peft4j {

// y[M,N] ← ds ⊙ (y − bias) + bias, in place, float32 math, rounded once into y; bias may be null
template <typename TY>
inline void dora_rescale(TY* y, const TY* bias, const float* ds, int64_t M, int64_t N, int threads) {
    const int isa = active_isa();
    const int64_t rows_per_task = std::max<int64_t>(1, (int64_t) 65536 / std::max<int64_t>(1, N));
    const int64_t tasks = (M + rows_per_task - 1) / rows_per_task;
    ThreadPool::instance().parallel_for(tasks, threads, [&](int64_t t) {
        thread_local std::vector<float> acc;
        acc.resize((size_t) N);
        const int64_t m1 = std::min(M, (t + 1) * rows_per_task);
        for (int64_t m = t * rows_per_task; m < m1; m++) {
            TY* row = y + m * N;
            for (int64_t j = 0; j < N; j++) acc[(size_t) j] = load_scalar(row, j) - (bias ? load_scalar(bias, j) : 0.f);
            finish_row<TY>(isa, row, acc.data(), N, bias, nullptr, ds);
        }
    });
}

}  // namespace peft4j

// DoRA scale of a fused adapted Linear (float32, N entries, copied), or null to clear it
inline void peft4j_adapted_linear_set_dora(int64_t handle, const float* scale) {
    auto* s = (peft4j::AdaptedLinear*) (intptr_t) handle;
    if (scale) s->dora_scale.assign(scale, scale + s->N); else s->dora_scale.clear();
}

// y[m, n] ← scale ⊙ (y − bias) + bias in place (dtype: 0 float32, 1 bfloat16; bias null for none)
inline void peft4j_dora_rescale(int dtype, void* y, const void* bias, const float* scale, int64_t m, int64_t n,
                                int32_t threads) {
    if (dtype == peft4j::DT_BF16) {
        peft4j::dora_rescale<uint16_t>((uint16_t*) y, (const uint16_t*) bias, scale, m, n, threads);
    } else {
        peft4j::dora_rescale<float>((float*) y, (const float*) bias, scale, m, n, threads);
    }
}
