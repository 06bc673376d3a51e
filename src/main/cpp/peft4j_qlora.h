// LoRA on weight-only quantized Linears at decode sizes (M <= kMaxDecodeRows), fused into the quantized product:
//
//   y_g[M, N_g] = T(x·Ŵ_gᵀ + Σ_a s_a·(x·A_aᵀ)·B_aᵀ + bias_g)    for every member g of a group over one x
//
// in one native call and one parallel region. x is quantized once for the panels (as quant_linear_group does); the
// shrinks t_a = s_a·(x·A_aᵀ) (x and A widened to float32, float32 sums: the delta stays in the adapters' precision)
// are the region's first tasks; each panel task, after its integer products, waits for its member's shrinks (a spin
// of at most one shrink task: they are handed out before any panel), adds t·B_aᵀ to its tile's 16 output rows in
// float32 (B's 16 rows transposed in registers), adds the bias and rounds once into y. A separate delta call (lora_delta) would be a second region, a second pass over y
// and a transpose of all of B per call; here the delta costs the shrink and ~r FMAs per 16 outputs.
//
// Mixed batch: row_slot null (every adapter of a member on every row) or M entries, row m getting adapter
// row_slot[m] of each member only (-1: none), as lora_delta's per-row slot.
//
// Each output's float32 sum is formed by one thread in a fixed order (the panel's blocks, then the adapters in
// order), and t does not depend on the rows around it, so a member's output is the same bit for bit in any group,
// alone (n = 1), with any thread count, and whether the batch is mixed or not for the rows that use its adapters.
#pragma once

#include "peft4j_lora_delta.h"
#include "peft4j_qgroup.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <vector>

namespace peft4j {

// The adapters of one quantized member (n = 0: none).
struct QuantLora {
    const LoraSlot* slots;  // A [r, K], B [N, r], in the activations' dtype
    int n;
};

// acc[row ? row[i] : i][l] += Σ_j T[i·r + j]·B[(n0 + l)·r + j] for i < rows, l < valid (<= 16), j < r: scalar
template <typename TY>
inline void qlora_expand_scalar(const float* T, int64_t rows, const int32_t* row, const TY* B, int64_t r, int64_t n0,
                                int valid, float (*acc)[kPanelRows]) {
    for (int64_t i = 0; i < rows; i++) {
        float* dst = acc[row ? row[i] : i];
        for (int l = 0; l < valid; l++) {
            float s = 0.f;
            for (int64_t j = 0; j < r; j++) s += T[i * r + j] * load_scalar(B, (n0 + l) * r + j);
            dst[l] += s;
        }
    }
}

#if defined(__x86_64__)
// The same on AVX2: per half of the panel (8 outputs) and 8 ranks, B's 8 x 8 block widened into bt[j][l] once,
// then each row adds Σ_j T[i, j]·bt[j] to its 8 outputs (one broadcast and FMA per rank).
template <typename TY>
__attribute__((target("avx2,fma"))) inline void qlora_expand_avx2(const float* T, int64_t rows, const int32_t* row,
                                                                   const TY* B, int64_t r, int64_t n0, int valid,
                                                                   float (*acc)[kPanelRows]) {
    for (int h = 0; h < 2; h++) {
        const int nb = std::min(8, valid - 8 * h);
        if (nb <= 0) break;
        for (int64_t j0 = 0; j0 < r; j0 += 8) {
            const int jb = (int) std::min<int64_t>(8, r - j0);
            alignas(32) float bt[8][8];
            for (int j = 0; j < 8; j++)
                for (int l = 0; l < 8; l++)
                    bt[j][l] = l < nb && j < jb ? load_scalar(B, (n0 + 8 * h + l) * r + j0 + j) : 0.f;
            for (int64_t i = 0; i < rows; i++) {
                float* dst = acc[row ? row[i] : i] + 8 * h;
                __m256 v = _mm256_loadu_ps(dst);
                for (int j = 0; j < jb; j++)
                    v = _mm256_fmadd_ps(_mm256_set1_ps(T[i * r + j0 + j]), _mm256_load_ps(bt[j]), v);
                _mm256_storeu_ps(dst, v);
            }
        }
    }
}
#endif

template <typename TY>
inline void qlora_expand(int isa, const float* T, int64_t rows, const int32_t* row, const TY* B, int64_t r,
                         int64_t n0, int valid, float (*acc)[kPanelRows]) {
#if defined(__x86_64__)
    if (isa >= ISA_AVX512) {
        expand_block_avx512<TY>(T, rows, row, B, r, n0, n0 + valid, &acc[0][0], kPanelRows);
        return;
    }
    if (isa == ISA_AVX2) {
        qlora_expand_avx2<TY>(T, rows, row, B, r, n0, valid, acc);
        return;
    }
#endif
    qlora_expand_scalar<TY>(T, rows, row, B, r, n0, valid, acc);
}

template <typename T>
inline void quant_lora_group(int path, const QuantGroupMember* L, const QuantLora* lora, int n, const T* x,
                             int64_t M, int64_t K, const int32_t* row_slot, int threads) {
    if (M <= 0 || n <= 0) return;
    const int isa = active_isa();
    const int64_t nb = K / kQuantBlock;
    QuantScratch& sc = quant_scratch();
    const QuantActs acts = sc.acts(M, K);
    for (int64_t r = 0; r < M; r++)
        sc.quantize_row(x, r, K);
    // t: per (member, adapter) a [M, r] float32 block (a mixed batch's rows on another adapter left unused)
    thread_local std::vector<float> xf_tls, t_tls;
    thread_local std::vector<int64_t> t_at_tls;
    std::vector<int64_t>& t_at = t_at_tls;  // first t entry of member g's adapter a: t_at[adapter_at[g] + a]
    std::vector<int> adapter_at((size_t) n + 1, 0);
    for (int g = 0; g < n; g++) adapter_at[(size_t) g + 1] = adapter_at[(size_t) g] + lora[g].n;
    const int n_ad = adapter_at[(size_t) n];
    t_at.assign((size_t) n_ad + 1, 0);
    struct Shrink { int g, a; int64_t j0; };
    constexpr int64_t kShrinkRanks = 8;
    std::vector<Shrink> shrinks;
    for (int g = 0; g < n; g++)
        for (int a = 0; a < lora[g].n; a++) {
            const int i = adapter_at[(size_t) g] + a;
            const int64_t r = lora[g].slots[a].r;
            t_at[(size_t) i + 1] = t_at[(size_t) i] + M * r;
            bool used = row_slot == nullptr;
            for (int64_t m = 0; m < M && !used; m++) used = row_slot[m] == a;
            if (used)
                for (int64_t j0 = 0; j0 < r; j0 += kShrinkRanks) shrinks.push_back({g, a, j0});
        }
    std::vector<float>& t = t_tls;
    t.resize((size_t) std::max<int64_t>(1, t_at[(size_t) n_ad]));
    const float* xf = (const float*) x;
    if (n_ad > 0 && !std::is_same<T, float>::value) {
        xf_tls.resize((size_t) (M * K));
        for (int64_t i = 0; i < M * K; i++) xf_tls[(size_t) i] = load_scalar(x, i);
        xf = xf_tls.data();
    }
    const std::function<void(int64_t)> shrink = [&](int64_t ti) {
        const Shrink& s = shrinks[(size_t) ti];
        const LoraSlot& ad = lora[s.g].slots[s.a];
        const int64_t r = ad.r, j1 = std::min<int64_t>(r, s.j0 + kShrinkRanks);
        float* ta = t.data() + t_at[(size_t) (adapter_at[(size_t) s.g] + s.a)];
        for (int64_t m = 0; m < M; m++) {
            if (row_slot != nullptr && row_slot[m] != s.a) continue;
            // one row at a time in a mixed batch, all rows at once otherwise: the same sums per row either way
            const int64_t rows = row_slot != nullptr ? 1 : M;
            rows_times_rowsT<T>(isa, xf + m * K, rows, (const T*) ad.A, s.j0, j1, K, ta + m * r + s.j0, r);
            for (int64_t i = m; i < m + rows; i++)
                for (int64_t j = s.j0; j < j1; j++) ta[i * r + j] *= ad.scale;
            if (row_slot == nullptr) break;
        }
    };
    // shrink tasks of each member, and how many have finished (A is read from memory: r·K elements per adapter, a
    // few µs each at decode sizes, too long to leave to the caller alone before the region)
    std::vector<int64_t> shrink_need((size_t) n, 0);
    for (const Shrink& sh : shrinks) shrink_need[(size_t) sh.g]++;
    std::unique_ptr<std::atomic<int64_t>[]> shrink_done(new std::atomic<int64_t>[(size_t) n]);
    for (int g = 0; g < n; g++) shrink_done[(size_t) g].store(0, std::memory_order_relaxed);
    const int64_t per = M >= 8 ? 1 : 4;  // panels per task, as quant_linear_group
    std::vector<int64_t> first((size_t) n + 1, 0);
    for (int g = 0; g < n; g++) first[(size_t) g + 1] = first[(size_t) g] + (panel_count(L[g].N) + per - 1) / per;
    const int tile = panel_tile_rows(path);
    // member g's panels p0 .. p1 − 1
    const auto panels_of = [&](int g, int64_t p0, int64_t p1) {
        const QuantGroupMember& mb = L[g];
        const QuantLora& lo = lora[g];
        const T* bias = (const T*) mb.bias;
        T* y = (T*) mb.y;
        const int64_t N = mb.N, bb = panel_block_bytes(mb.fmt);
        float out[8][kPanelRows];
        int32_t rowmap[8];
        bool ready = false;
        thread_local std::vector<float> gathered;
        for (int64_t p = p0; p < p1; p++) {
            const uint8_t* q = (const uint8_t*) mb.pq + p * nb * bb;
            const uint16_t* d = mb.pd + p * nb * kPanelRows;
            const int rows = panel_rows(p, N);
            const int64_t n0 = p * kPanelRows;
            for (int64_t r0 = 0; r0 < M; r0 += tile) {
                const int mt = (int) std::min<int64_t>(tile, M - r0);
                panel_rows(path, mb.fmt, mt, q, d, acts, r0, out);
                if (lo.n > 0 && !ready) {
                    while (shrink_done[(size_t) g].load(std::memory_order_acquire) < shrink_need[(size_t) g])
                        ThreadPool::cpu_relax();
                    ready = true;
                }
                for (int a = 0; a < lo.n; a++) {
                    const LoraSlot& ad = lo.slots[a];
                    const float* ta = t.data() + t_at[(size_t) (adapter_at[(size_t) g] + a)];
                    if (row_slot == nullptr) {
                        qlora_expand<T>(isa, ta + r0 * ad.r, mt, nullptr, (const T*) ad.B, ad.r, n0, rows, out);
                        continue;
                    }
                    int cnt = 0;
                    if ((int64_t) gathered.size() < mt * ad.r) gathered.resize((size_t) (mt * ad.r));
                    for (int i = 0; i < mt; i++)
                        if (row_slot[r0 + i] == a) {
                            std::copy(ta + (r0 + i) * ad.r, ta + (r0 + i + 1) * ad.r, gathered.data() + cnt * ad.r);
                            rowmap[cnt++] = i;
                        }
                    if (cnt > 0) qlora_expand<T>(isa, gathered.data(), cnt, rowmap, (const T*) ad.B, ad.r, n0, rows, out);
                }
                for (int r = 0; r < mt; r++)
                    for (int l = 0; l < rows; l++)
                        store_f32(y + (r0 + r) * N + n0 + l,
                                  out[r][l] + (bias != nullptr ? to_f32(bias[n0 + l]) : 0.f));
            }
        }
    };
    // one region: the shrink tasks first, then the panels; a panel task waits for its member's shrinks only before
    // its first expand, after its first tile's integer products, so the threads read A while others stream panels
    const int64_t n_shrink = (int64_t) shrinks.size();
    const auto shrink_task = [&](int64_t i) {
        shrink(i);
        shrink_done[(size_t) shrinks[(size_t) i].g].fetch_add(1, std::memory_order_release);
    };
    if (M < 8 && decode_split_contiguous()) {
        // decode: the members' panels one after another as one run of units, each thread a contiguous range
        std::vector<int64_t> at((size_t) n + 1, 0);
        for (int g = 0; g < n; g++) at[(size_t) g + 1] = at[(size_t) g] + panel_count(L[g].N);
        contiguous_for_after(n_shrink, shrink_task, at[(size_t) n], threads, [&](int64_t u) {
            int g = 0;
            while (u >= at[(size_t) g + 1]) g++;
            panels_of(g, u - at[(size_t) g], u - at[(size_t) g] + 1);
        });
        return;
    }
    const std::function<void(int64_t)> panels = [&](int64_t task) {
        int g = 0;
        while (task >= first[(size_t) g + 1]) g++;
        const int64_t p0 = (task - first[(size_t) g]) * per;
        panels_of(g, p0, std::min(panel_count(L[g].N), p0 + per));
    };
    const std::function<void(int64_t)> task = [&](int64_t i) {
        if (i < n_shrink) {
            shrink_task(i);
        } else {
            panels(i - n_shrink);
        }
    };
    ThreadPool::instance().parallel_for(n_shrink + first[(size_t) n], threads, task);
}

// A gated MLP's input half over quantized projections with LoRA: quant_gated_linear with the adapters of
// quant_lora_group (gate: members 0, up: member 1, or null for a fused gate_up of 2I outputs in member 0).
template <typename T>
inline void quant_lora_gated_linear(int path, const QuantGroupMember* L, const QuantLora* lora, bool has_up, T* y,
                                    const T* x, int64_t M, int64_t K, int act, const int32_t* row_slot, int threads) {
    const int64_t I = has_up ? L[0].N : L[0].N / 2;
    thread_local std::vector<T> scratch;
    scratch.resize((size_t) (2 * M * I));
    T* g = scratch.data();
    T* u = scratch.data() + M * I;
    QuantGroupMember members[2] = {L[0], has_up ? L[1] : L[0]};
    members[0].y = g;
    members[1].y = u;
    quant_lora_group<T>(path, members, lora, has_up ? 2 : 1, x, M, K, row_slot, threads);
    const int isa = active_isa();
    for (int64_t m = 0; m < M; m++) {
        const T* gm = has_up ? g + m * I : g + m * 2 * I;
        const T* um = has_up ? u + m * I : g + m * 2 * I + I;
        act_mul(isa, act, y + m * I, gm, um, I);
    }
}

// The adapters of n members from the C entry points' flat arrays: member g's nls[g] adapters one after another.
inline std::vector<LoraSlot> quant_lora_slots(int32_t n, const int32_t* nls, const int64_t* as, const int64_t* bs,
                                              const int32_t* rs, const float* ss, std::vector<QuantLora>& lora) {
    int32_t total = 0;
    for (int32_t g = 0; g < n; g++) total += nls[g];
    std::vector<LoraSlot> slots((size_t) total);
    for (int32_t i = 0; i < total; i++)
        slots[(size_t) i] = {(const void*) (intptr_t) as[i], (const void*) (intptr_t) bs[i], rs[i], ss[i]};
    lora.resize((size_t) n);
    for (int32_t g = 0, at = 0; g < n; at += nls[g], g++) lora[(size_t) g] = {slots.data() + at, nls[g]};
    return slots;
}

}  // namespace peft4j

// ---- C entry points (dev.peft4j.kernels.NativeKernels) ----
// Members as peft4j_quant_linear_group, member g with nls[g] LoRA adapters (0: none): the adapters of all members
// one after another in as / bs (addresses of A [r, k] and B [ns[g], r] in dtype), rs (ranks), ss (scales).
// row_slot: null, or m entries (adapter index of each member per row, -1: none). m <= 16.
inline void peft4j_quant_lora_group(int32_t dtype, int32_t n, const int32_t* fmts, const int64_t* pqs,
                                    const int64_t* pds, const int64_t* biases, const int64_t* ys, const int64_t* ns,
                                    const int32_t* nls, const int64_t* as, const int64_t* bs, const int32_t* rs,
                                    const float* ss, const int32_t* row_slot, const void* x, int64_t m, int64_t k,
                                    int32_t threads) {
    const std::vector<peft4j::QuantGroupMember> L = peft4j::quant_members(n, fmts, pqs, pds, biases, ys, ns);
    std::vector<peft4j::QuantLora> lora;
    const std::vector<peft4j::LoraSlot> slots = peft4j::quant_lora_slots(n, nls, as, bs, rs, ss, lora);
    const int path = peft4j::quant_path();
    if (dtype == peft4j::DT_BF16)
        peft4j::quant_lora_group<uint16_t>(path, L.data(), lora.data(), n, (const uint16_t*) x, m, k, row_slot,
                                           threads);
    else peft4j::quant_lora_group<float>(path, L.data(), lora.data(), n, (const float*) x, m, k, row_slot, threads);
}

// y[m, I] = act(gate) · up with the members' LoRA as above: n = 2 (gate, up) or 1 (a fused gate_up of 2I outputs);
// act: 0 silu, 1 gelu, 2 gelu_tanh, 3 relu
inline void peft4j_quant_lora_gated_linear(int32_t dtype, int32_t n, const int32_t* fmts, const int64_t* pqs,
                                           const int64_t* pds, const int64_t* biases, const int64_t* ns,
                                           const int32_t* nls, const int64_t* as, const int64_t* bs, const int32_t* rs,
                                           const float* ss, void* y, const void* x, int64_t m, int64_t k, int32_t act,
                                           int32_t threads) {
    const std::vector<peft4j::QuantGroupMember> L = peft4j::quant_members(n, fmts, pqs, pds, biases, nullptr, ns);
    std::vector<peft4j::QuantLora> lora;
    const std::vector<peft4j::LoraSlot> slots = peft4j::quant_lora_slots(n, nls, as, bs, rs, ss, lora);
    const int path = peft4j::quant_path();
    if (dtype == peft4j::DT_BF16)
        peft4j::quant_lora_gated_linear<uint16_t>(path, L.data(), lora.data(), n > 1, (uint16_t*) y,
                                                  (const uint16_t*) x, m, k, act, nullptr, threads);
    else peft4j::quant_lora_gated_linear<float>(path, L.data(), lora.data(), n > 1, (float*) y, (const float*) x, m,
                                                k, act, nullptr, threads);
}
