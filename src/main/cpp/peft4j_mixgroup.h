// A mixed batch (PEFT's adapter_names: one adapter per row) through the grouped decode projections: the group of
// adapted Linears and the gated MLP input of peft4j_decode.h, each layer with its own per-row adapter index, so a
// serving step whose rows carry different adapters still runs a layer's q, k, v (and gate, up) in one region.
// The per-row index is AdaptedLinearRun's (row m gets adapter row_slot[m] of that layer only, -1: the base alone),
// so every ISA path of the single-layer mixed forward is the path here, and a member equals its own mixed forward
// bit for bit.
#ifndef PEFT4J_MIXGROUP_H
#define PEFT4J_MIXGROUP_H

#include <cstdint>
#include <vector>

#include "peft4j_decode.h"
#include "peft4j_lora_linear.h"

// ---- C entry points (dev.peft4j.kernels.NativeKernels) ----
// peft4j_adapted_linear_forward_group with per-row adapters: row_slots holds n blocks of m entries, block g the
// adapter index of each row for layer g (-1: none); has_slot[g] == 0: layer g takes every adapter on every row.
inline void peft4j_adapted_linear_forward_group_mixed(int32_t n, const int64_t* handles, const int64_t* ys,
                                                      const void* x, int64_t m, const int32_t* row_slots,
                                                      const int32_t* has_slot, int32_t threads) {
    if (n <= 0) return;
    std::vector<const peft4j::AdaptedLinear*> layers((size_t) n);
    std::vector<const int32_t*> slots((size_t) n);
    for (int32_t g = 0; g < n; g++) {
        layers[(size_t) g] = (const peft4j::AdaptedLinear*) (intptr_t) handles[g];
        slots[(size_t) g] = has_slot[g] != 0 ? row_slots + (int64_t) g * m : nullptr;
    }
    if (layers[0]->dtype == peft4j::DT_BF16) {
        std::vector<uint16_t*> out((size_t) n);
        for (int32_t g = 0; g < n; g++) out[(size_t) g] = (uint16_t*) (intptr_t) ys[g];
        peft4j::adapted_linear_forward_group<uint16_t>(layers.data(), out.data(), n, (const uint16_t*) x, m, threads,
                                                       slots.data());
    } else {
        std::vector<float*> out((size_t) n);
        for (int32_t g = 0; g < n; g++) out[(size_t) g] = (float*) (intptr_t) ys[g];
        peft4j::adapted_linear_forward_group<float>(layers.data(), out.data(), n, (const float*) x, m, threads,
                                                    slots.data());
    }
}

// peft4j_gated_linear with per-row adapters: row_slots holds the gate's m entries, then (up != 0) the up's m;
// has_slot[0] / has_slot[1] == 0: that member takes every adapter on every row.
inline void peft4j_gated_linear_mixed(int64_t gate, int64_t up, void* y, const void* x, int64_t m, int32_t act,
                                      const int32_t* row_slots, const int32_t* has_slot, int32_t threads) {
    auto* g = (const peft4j::AdaptedLinear*) (intptr_t) gate;
    auto* u = (const peft4j::AdaptedLinear*) (intptr_t) up;
    const int32_t* gs = has_slot[0] != 0 ? row_slots : nullptr;
    const int32_t* us = u != nullptr && has_slot[1] != 0 ? row_slots + m : nullptr;
    if (g->dtype == peft4j::DT_BF16)
        peft4j::gated_linear<uint16_t>(g, u, (uint16_t*) y, (const uint16_t*) x, m, act, threads, gs, us);
    else peft4j::gated_linear<float>(g, u, (float*) y, (const float*) x, m, act, threads, gs, us);
}

#endif
