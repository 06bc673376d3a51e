// Several quantized Linears over the same input at decode sizes (a layer's q, k, v; its gate and up), in one
// parallel region: x is quantized once (llama.cpp's Q8_0 of each row and its per-block sums, as quant_linear_panels
// does), then every member's panels run as tasks of one region through the same panel_span as each layer's own
// product (below 8 rows, unless PEFT4J_DECODE_SPLIT=tasks: as one run of units split in contiguous ranges,
// peft4j_qdecode.h). Each output row sums its blocks in one panel_rows call, whatever thread runs it, so every
// member's output equals its own quant_linear_panels bit for bit.
#pragma once

#include "peft4j_decode.h"
#include "peft4j_qpanel.h"

#include <vector>

namespace peft4j {

// One member: its panels (fmt QF_Q8_0 / QF_Q4_0), N outputs, bias (N entries or null) and output y [M, N].
struct QuantGroupMember {
    int fmt;
    const void* pq;
    const uint16_t* pd;
    const void* bias;
    void* y;
    int64_t N;
};

template <typename T>
inline void quant_linear_group(int path, const QuantGroupMember* L, int n, const T* x, int64_t M, int64_t K,
                               int threads) {
    if (M <= 0 || n <= 0) return;
    QuantScratch& sc = quant_scratch();
    const QuantActs acts = sc.acts(M, K);
    for (int64_t r = 0; r < M; r++)
        sc.quantize_row(x, r, K);
    if (M < 8 && decode_split_contiguous()) {
        // decode: the members' panels one after another as one run of units, each thread a contiguous range
        std::vector<int64_t> at((size_t) n + 1, 0);
        for (int g = 0; g < n; g++) at[(size_t) g + 1] = at[(size_t) g] + panel_count(L[g].N);
        contiguous_for(at[(size_t) n], threads, [&](int64_t u) {
            int g = 0;
            while (u >= at[(size_t) g + 1]) g++;
            const QuantGroupMember& m = L[g];
            const int64_t p = u - at[(size_t) g];
            panel_span(path, m.fmt, m.pq, m.pd, (const T*) m.bias, acts, (T*) m.y, M, m.N, p, p + 1);
        });
        return;
    }
    // task t of member g covers its panels t·per .. (from 8 rows on, pairs of panels: the prefill tile's 2 panels)
    const int64_t per = M >= 8 ? kPanelsPerTask : 4;
    std::vector<int64_t> first((size_t) n + 1, 0);
    for (int g = 0; g < n; g++) first[(size_t) g + 1] = first[(size_t) g] + (panel_count(L[g].N) + per - 1) / per;
    const std::function<void(int64_t)> task = [&](int64_t t) {
        int g = 0;
        while (t >= first[(size_t) g + 1]) g++;
        const QuantGroupMember& m = L[g];
        const int64_t P = panel_count(m.N), lt = t - first[(size_t) g];
        panel_span(path, m.fmt, m.pq, m.pd, (const T*) m.bias, acts, (T*) m.y, M, m.N, lt * per,
                   std::min(P, (lt + 1) * per));
    };
    ThreadPool::instance().parallel_for(first[(size_t) n], threads, task);
}

// A gated MLP's input half over quantized projections: y[M, I] = T(T(act(x·Gᵀ)) · (x·Uᵀ)), gate and up in one
// region (up null: gate is a fused [2I, K] gate_up projection, its first I outputs the gate's), then act_mul.
template <typename T>
inline void quant_gated_linear(int path, const QuantGroupMember& gate, const QuantGroupMember* up, T* y, const T* x,
                               int64_t M, int64_t K, int act, int threads) {
    const int64_t I = up != nullptr ? gate.N : gate.N / 2;
    thread_local std::vector<T> scratch;
    scratch.resize((size_t) (2 * M * I));
    T* g = scratch.data();
    T* u = scratch.data() + M * I;
    QuantGroupMember members[2] = {gate, up != nullptr ? *up : gate};
    members[0].y = g;
    members[1].y = u;
    quant_linear_group<T>(path, members, up != nullptr ? 2 : 1, x, M, K, threads);
    const int isa = active_isa();
    for (int64_t m = 0; m < M; m++) {
        const T* gm = up != nullptr ? g + m * I : g + m * 2 * I;
        const T* um = up != nullptr ? u + m * I : g + m * 2 * I + I;
        act_mul(isa, act, y + m * I, gm, um, I);
    }
}

inline std::vector<QuantGroupMember> quant_members(int32_t n, const int32_t* fmts, const int64_t* pqs,
                                                   const int64_t* pds, const int64_t* biases, const int64_t* ys,
                                                   const int64_t* ns) {
    std::vector<QuantGroupMember> L((size_t) n);
    for (int32_t g = 0; g < n; g++)
        L[(size_t) g] = {fmts[g], (const void*) (intptr_t) pqs[g], (const uint16_t*) (intptr_t) pds[g],
                         (const void*) (intptr_t) biases[g], ys != nullptr ? (void*) (intptr_t) ys[g] : nullptr, ns[g]};
    return L;
}

}  // namespace peft4j

// ---- C entry points (dev.peft4j.kernels.NativeKernels) ----
// n members of one dtype (DT_F32 / DT_BF16) and input width K (a multiple of 32), x [m, K]: member g has format
// fmts[g], panels pqs[g] / pds[g], bias biases[g] (0: none) and ns[g] outputs into ys[g] [m, ns[g]].
inline void peft4j_quant_linear_group(int32_t dtype, int32_t n, const int32_t* fmts, const int64_t* pqs,
                                      const int64_t* pds, const int64_t* biases, const int64_t* ys, const int64_t* ns,
                                      const void* x, int64_t m, int64_t k, int32_t threads) {
    const std::vector<peft4j::QuantGroupMember> L = peft4j::quant_members(n, fmts, pqs, pds, biases, ys, ns);
    const int path = peft4j::quant_path();
    if (dtype == peft4j::DT_BF16)
        peft4j::quant_linear_group<uint16_t>(path, L.data(), n, (const uint16_t*) x, m, k, threads);
    else peft4j::quant_linear_group<float>(path, L.data(), n, (const float*) x, m, k, threads);
}

// y[m, I] = act(x·Gᵀ + bg) · (x·Uᵀ + bu): members as above, n = 2 (gate, up) or 1 (a fused gate_up of 2I outputs);
// act: 0 silu, 1 gelu, 2 gelu_tanh, 3 relu
inline void peft4j_quant_gated_linear(int32_t dtype, int32_t n, const int32_t* fmts, const int64_t* pqs,
                                      const int64_t* pds, const int64_t* biases, const int64_t* ns, void* y,
                                      const void* x, int64_t m, int64_t k, int32_t act, int32_t threads) {
    const std::vector<peft4j::QuantGroupMember> L = peft4j::quant_members(n, fmts, pqs, pds, biases, nullptr, ns);
    const int path = peft4j::quant_path();
    const peft4j::QuantGroupMember* up = n > 1 ? &L[1] : nullptr;
    if (dtype == peft4j::DT_BF16)
        peft4j::quant_gated_linear<uint16_t>(path, L[0], up, (uint16_t*) y, (const uint16_t*) x, m, k, act, threads);
    else peft4j::quant_gated_linear<float>(path, L[0], up, (float*) y, (const float*) x, m, k, act, threads);
}
