// The C entry points Java binds to (dev.peft4j.kernels.NativeKernels). Plain functions over raw
// pointers and sizes: libtorch ships no headers, so tensors cross as data pointers that Java has
// already checked for dtype, device, contiguity and size.
#pragma once

#include "peft4j_cpu.h"
#include "peft4j_threads.h"
#include "peft4j_axpy.h"
#include "peft4j_lora_linear.h"
#include "peft4j_lora_delta.h"
#include "peft4j_dora.h"
#include "peft4j_decode.h"
#include "peft4j_quant.h"
#include "peft4j_qpanel.h"
#include "peft4j_qgroup.h"
#include "peft4j_qlora.h"
#include "peft4j_mixgroup.h"

inline int peft4j_best_isa() { return peft4j::best_isa(); }
inline int peft4j_active_isa() { return peft4j::active_isa(); }
inline int peft4j_set_active_isa(int isa) { return peft4j::set_active_isa(isa); }
inline const char* peft4j_isa_name(int isa) { return peft4j::isa_name(isa); }
inline void peft4j_cpu_features(char* out, int cap) { peft4j::cpu_features(out, cap); }

// "openmp" when the kernels' parallel loops run on libtorch's OpenMP team, "own" on peft4j's pool.
inline const char* peft4j_thread_pool_kind() { return peft4j::ThreadPool::instance().kind(); }

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

// row_slot: null, or m entries (adapter index per row, -1 for the base layer alone)
inline void peft4j_adapted_linear_forward(int64_t handle, void* y, const void* x, int64_t m, int32_t threads,
                                          const int32_t* row_slot) {
    auto* s = (peft4j::AdaptedLinear*) (intptr_t) handle;
    if (s->dtype == peft4j::DT_BF16) {
        peft4j::adapted_linear_forward<uint16_t>(*s, (uint16_t*) y, (const uint16_t*) x, m, threads, row_slot);
    } else {
        peft4j::adapted_linear_forward<float>(*s, (float*) y, (const float*) x, m, threads, row_slot);
    }
}

// IA3 vectors (float32, already folded over the active adapters), copied: in_scale K entries or null,
// out_scale N entries or null
inline void peft4j_adapted_linear_set_ia3(int64_t handle, const float* in_scale, const float* out_scale) {
    auto* s = (peft4j::AdaptedLinear*) (intptr_t) handle;
    if (in_scale) s->in_scale.assign(in_scale, in_scale + s->K); else s->in_scale.clear();
    if (out_scale) s->out_scale.assign(out_scale, out_scale + s->N); else s->out_scale.clear();
}

// ---- LoRA delta for any M: y[M,N] += Σ s·(x·Aᵀ)·Bᵀ, per-row slot optional ----
inline void peft4j_lora_delta(int dtype, void* y, const void* x, int64_t m, int64_t k, int64_t n, int32_t n_slots,
                              const int64_t* a_ptrs, const int64_t* b_ptrs, const int32_t* ranks,
                              const float* scales, const int32_t* row_slot, int32_t threads) {
    std::vector<peft4j::LoraSlot> slots;
    slots.reserve((size_t) n_slots);
    for (int32_t i = 0; i < n_slots; i++)
        slots.push_back({(const void*) (intptr_t) a_ptrs[i], (const void*) (intptr_t) b_ptrs[i], ranks[i], scales[i]});
    if (dtype == peft4j::DT_BF16) {
        peft4j::lora_delta<uint16_t>((uint16_t*) y, (const uint16_t*) x, m, k, n, slots.data(), n_slots, row_slot,
                                     threads);
    } else {
        peft4j::lora_delta<float>((float*) y, (const float*) x, m, k, n, slots.data(), n_slots, row_slot, threads);
    }
}

// ---- W[R, C] += Σ_j coef[row, j]·V[j, :] in place (coef [R, r], V [r, C], float32) ----
inline void peft4j_merge_lowrank(int dtype, void* w, int64_t rows, int64_t cols, const float* coef, const float* v,
                                 int32_t r, int32_t threads) {
    if (dtype == peft4j::DT_BF16) peft4j::merge_lowrank<uint16_t>((uint16_t*) w, rows, cols, coef, v, r, threads);
    else peft4j::merge_lowrank<float>((float*) w, rows, cols, coef, v, r, threads);
}

// ---- dst = src ⊙ l (or ⊘ l) by rows (l: rows entries) or columns (l: cols entries); dst may be src ----
inline void peft4j_scale_matrix(int dtype, void* dst, const void* src, int64_t rows, int64_t cols, const float* l,
                                int32_t by_rows, int32_t divide, int32_t threads) {
    if (dtype == peft4j::DT_BF16)
        peft4j::scale_matrix<uint16_t>((uint16_t*) dst, (const uint16_t*) src, rows, cols, l, by_rows != 0,
                                       divide != 0, threads);
    else
        peft4j::scale_matrix<float>((float*) dst, (const float*) src, rows, cols, l, by_rows != 0, divide != 0,
                                    threads);
}

inline void peft4j_adapted_linear_destroy(int64_t handle) {
    delete (peft4j::AdaptedLinear*) (intptr_t) handle;
}

// ---- decode step ops (peft4j_decode.h); dtype 0 float32, 1 bfloat16 ----
inline void peft4j_rms_norm(int dtype, void* y, const void* x, const void* w, int64_t rows, int64_t dim, float eps,
                            int32_t unit_offset) {
    if (dtype == peft4j::DT_BF16)
        peft4j::rms_norm<uint16_t>((uint16_t*) y, (const uint16_t*) x, (const uint16_t*) w, rows, dim, eps,
                                   unit_offset != 0);
    else peft4j::rms_norm<float>((float*) y, (const float*) x, (const float*) w, rows, dim, eps, unit_offset != 0);
}

inline void peft4j_add_rms_norm(int dtype, void* r, const void* a, void* y, const void* w, int64_t rows, int64_t dim,
                                float eps, int32_t unit_offset) {
    if (dtype == peft4j::DT_BF16)
        peft4j::add_rms_norm<uint16_t>((uint16_t*) r, (const uint16_t*) a, (uint16_t*) y, (const uint16_t*) w, rows,
                                       dim, eps, unit_offset != 0);
    else peft4j::add_rms_norm<float>((float*) r, (const float*) a, (float*) y, (const float*) w, rows, dim, eps,
                                     unit_offset != 0);
}

inline void peft4j_rope(int dtype, void* x, int64_t rows, int64_t heads, int64_t dim, const int64_t* pos,
                        const float* inv_freq, int64_t rot, float attn_scaling) {
    if (dtype == peft4j::DT_BF16)
        peft4j::rope<uint16_t>((uint16_t*) x, rows, heads, dim, pos, inv_freq, rot, attn_scaling);
    else peft4j::rope<float>((float*) x, rows, heads, dim, pos, inv_freq, rot, attn_scaling);
}

inline void peft4j_decode_attention(int dtype, const void* q, const void* k, const void* v, void* kc, void* vc,
                                    int64_t max_len, const int32_t* slot, const int64_t* past, int64_t rows,
                                    int64_t heads, int64_t kv_heads, int64_t dim, int64_t window, float scale,
                                    void* out, int32_t threads, float softcap) {
    if (dtype == peft4j::DT_BF16)
        peft4j::decode_attention<uint16_t>((const uint16_t*) q, (const uint16_t*) k, (const uint16_t*) v,
                                           (uint16_t*) kc, (uint16_t*) vc, max_len, slot, past, rows, heads, kv_heads,
                                           dim, window, scale, (uint16_t*) out, threads, softcap);
    else
        peft4j::decode_attention<float>((const float*) q, (const float*) k, (const float*) v, (float*) kc,
                                        (float*) vc, max_len, slot, past, rows, heads, kv_heads, dim, window, scale,
                                        (float*) out, threads, softcap);
}

// RoPE on q and k in place, then peft4j_decode_attention: a layer's attention core in one call
inline void peft4j_decode_rope_attention(int dtype, void* q, void* k, const void* v, void* kc, void* vc,
                                         int64_t max_len, const int32_t* slot, const int64_t* past, int64_t rows,
                                         int64_t heads, int64_t kv_heads, int64_t dim, int64_t window, float scale,
                                         void* out, int32_t threads, float softcap, const float* inv_freq, int64_t rot,
                                         float attn_scaling) {
    if (dtype == peft4j::DT_BF16)
        peft4j::decode_rope_attention<uint16_t>((uint16_t*) q, (uint16_t*) k, (const uint16_t*) v, (uint16_t*) kc,
                                                (uint16_t*) vc, max_len, slot, past, rows, heads, kv_heads, dim,
                                                window, scale, (uint16_t*) out, threads, softcap, inv_freq, rot,
                                                attn_scaling);
    else
        peft4j::decode_rope_attention<float>((float*) q, (float*) k, (const float*) v, (float*) kc, (float*) vc,
                                             max_len, slot, past, rows, heads, kv_heads, dim, window, scale,
                                             (float*) out, threads, softcap, inv_freq, rot, attn_scaling);
}

// ---- several adapted Linears over the same x in one parallel region (a layer's q, k, v) ----
// handles: n adapted-linear handles of one dtype and input width; ys: n output pointers ([m, N_g] each)
inline void peft4j_adapted_linear_forward_group(int32_t n, const int64_t* handles, const int64_t* ys, const void* x,
                                                int64_t m, int32_t threads) {
    std::vector<const peft4j::AdaptedLinear*> layers((size_t) n);
    for (int32_t g = 0; g < n; g++) layers[(size_t) g] = (const peft4j::AdaptedLinear*) (intptr_t) handles[g];
    if (n == 0) return;
    if (layers[0]->dtype == peft4j::DT_BF16) {
        std::vector<uint16_t*> out((size_t) n);
        for (int32_t g = 0; g < n; g++) out[(size_t) g] = (uint16_t*) (intptr_t) ys[g];
        peft4j::adapted_linear_forward_group<uint16_t>(layers.data(), out.data(), n, (const uint16_t*) x, m, threads);
    } else {
        std::vector<float*> out((size_t) n);
        for (int32_t g = 0; g < n; g++) out[(size_t) g] = (float*) (intptr_t) ys[g];
        peft4j::adapted_linear_forward_group<float>(layers.data(), out.data(), n, (const float*) x, m, threads);
    }
}

// ---- a gated MLP's input half: y[m, I] = act(x·Gᵀ) · (x·Uᵀ), gate and up in one region (up 0: gate is a fused
// [2I, K] gate_up projection); act: 0 silu, 1 gelu, 2 gelu_tanh, 3 relu ----
inline void peft4j_gated_linear(int64_t gate, int64_t up, void* y, const void* x, int64_t m, int32_t act,
                                int32_t threads) {
    auto* g = (const peft4j::AdaptedLinear*) (intptr_t) gate;
    auto* u = (const peft4j::AdaptedLinear*) (intptr_t) up;
    if (g->dtype == peft4j::DT_BF16)
        peft4j::gated_linear<uint16_t>(g, u, (uint16_t*) y, (const uint16_t*) x, m, act, threads);
    else peft4j::gated_linear<float>(g, u, (float*) y, (const float*) x, m, act, threads);
}

// y[n] = act(g) · u elementwise, each rounded to the dtype as libtorch's two ops round (the native test's and the
// Java test's direct handle on the activation)
inline void peft4j_act_mul(int dtype, int32_t act, void* y, const void* g, const void* u, int64_t n) {
    const int isa = peft4j::active_isa();
    if (dtype == peft4j::DT_BF16)
        peft4j::act_mul<uint16_t>(isa, act, (uint16_t*) y, (const uint16_t*) g, (const uint16_t*) u, n);
    else peft4j::act_mul<float>(isa, act, (float*) y, (const float*) g, (const float*) u, n);
}
