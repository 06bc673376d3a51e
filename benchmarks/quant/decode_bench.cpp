// A whole model's quantized decode pass, kernels only: the Linears of 22 TinyLlama layers (q 2048x2048, k and v
// 256x2048 grouped with q, o 2048x2048, gate and up 5632x2048 grouped, down 2048x5632: 545 MB of Q4_0 panels, 1 GB
// of Q8_0, far larger than any L3) at 1 and 4 activation rows, so every weight byte comes from DRAM once per pass as
// in a decode step. Compares how the panels are split among threads and which streams are prefetched, alternating
// in one process (the order rotating by round), median ms per pass and the median of each round's ratio to the
// first row:
//
//   tasks of 4, w         tasks of 4 panels of one member handed out in turn, only the weights prefetched
//   tasks of 4, w+s       the same, the scales prefetched too
//   contiguous, w         each thread a contiguous range of panels (peft4j_qdecode.h), only the weights prefetched
//   contiguous, w+s       the same, the scales prefetched too
//   library, tasks        quant_linear_group / quant_linear_panels with the split set to tasks of 4 (w+s)
//   library, contiguous   the same with the contiguous ranges, the library's default (contiguous, w+s)
//
// The copies (AVX-512 VNNI only) take the prefetches as a run-time switch; the library row shows they time as the
// library does. Weights are random bytes with small fp16 scales (the time does not depend on the values).
// Build and run: benchmarks/quant/run.sh [threads] [rounds] decode [q4|q8]
#include "peft4j_kernels.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace peft4j;

namespace {

double now_ms() {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

#if defined(__x86_64__)
// panel_rows_vnni's decode path with the scales' prefetch as a switch
template <int FMT, int MT>
__attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni"))) void rows_copy(
        const uint8_t* pq, const uint16_t* pd, const QuantActs& a, float (*out)[kPanelRows], bool scales) {
    constexpr int64_t bb = FMT == QF_Q8_0 ? 512 : 256;
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    __m512 acc[MT];
    for (int r = 0; r < MT; r++) acc[r] = _mm512_setzero_ps();
    for (int64_t b = 0; b < a.nb; b++) {
        const uint8_t* blk = pq + b * bb;
        for (int64_t l = 0; l < bb; l += 64) _mm_prefetch((const char*) (blk + kPanelPrefetchBytes + l), _MM_HINT_T0);
        if (scales && (b & 1) == 0)
            _mm_prefetch((const char*) (pd + (b + kPanelPrefetchBytes / bb) * kPanelRows), _MM_HINT_T0);
        __m512i si[MT];
        for (int r = 0; r < MT; r++) {
            const __m512i s = _mm512_set1_epi32(a.s[r * a.nb + b]);
            si[r] = FMT == QF_Q8_0 ? _mm512_slli_epi32(s, 4) : s;
        }
        if (FMT == QF_Q8_0) {
            for (int k4 = 0; k4 < 8; k4++) {
                const __m512i w = _mm512_loadu_si512((const void*) (blk + k4 * 64));
                for (int r = 0; r < MT; r++)
                    si[r] = _mm512_dpbusd_epi32(si[r], w,
                                                _mm512_set1_epi32(load_i32(a.q + r * a.K + b * kQuantBlock + 4 * k4)));
            }
        } else {
            for (int j = 0; j < 4; j++) {
                const __m512i raw = _mm512_loadu_si512((const void*) (blk + j * 64));
                const __m512i lo = _mm512_and_si512(raw, m4);
                const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(raw, 4), m4);
                for (int r = 0; r < MT; r++) {
                    const int8_t* xb = a.q + r * a.K + b * kQuantBlock;
                    si[r] = _mm512_dpbusd_epi32(si[r], lo, _mm512_set1_epi32(load_i32(xb + 4 * j)));
                    si[r] = _mm512_dpbusd_epi32(si[r], hi, _mm512_set1_epi32(load_i32(xb + 4 * (j + 4))));
                }
            }
        }
        const __m512 ws = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*) (pd + b * kPanelRows)));
        for (int r = 0; r < MT; r++)
            acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(si[r]), ws), _mm512_set1_ps(a.d[r * a.nb + b]),
                                     acc[r]);
    }
    for (int r = 0; r < MT; r++) _mm512_storeu_ps(out[r], acc[r]);
}
#endif

struct Mat {
    int64_t N, K;
    std::vector<uint8_t> pq;
    std::vector<uint16_t> pd;
    std::vector<float> y;
};

}  // namespace

int main(int argc, char** argv) {
    const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
    const int rounds = argc > 2 ? std::atoi(argv[2]) : 9;
    const int fmt = argc > 3 && std::string(argv[3]) == "q8" ? QF_Q8_0 : QF_Q4_0;
    const int path = quant_path();
#if defined(__x86_64__)
    if (path != QP_AVX512_VNNI) {
        std::fprintf(stderr, "decode_bench compares copies of the AVX-512 VNNI kernel; this CPU takes %s\n",
                     quant_path_name(path));
        return 1;
    }
#else
    std::fprintf(stderr, "decode_bench needs x86-64\n");
    return 1;
#endif
    const int64_t H = 2048, KV = 256, I = 5632, layers = 22;
    struct Shape { int64_t N, K; };
    const Shape shapes[7] = {{H, H}, {KV, H}, {KV, H}, {H, H}, {I, H}, {I, H}, {H, I}};
    std::mt19937 rng(1);
    std::vector<Mat> mats;
    double bytes = 0;
    for (int64_t l = 0; l < layers; l++)
        for (Shape s : shapes) {
            Mat m{s.N, s.K, {}, {}, {}};
            m.pq.resize((size_t) panel_bytes(fmt, s.N, s.K));
            m.pd.resize((size_t) (panel_count(s.N) * kPanelRows * s.K / kQuantBlock));
            for (size_t i = 0; i + 4 <= m.pq.size(); i += 4) {
                const uint32_t v = rng();
                std::memcpy(&m.pq[i], &v, 4);
            }
            for (auto& d : m.pd) d = (uint16_t) (0x2000 + (rng() & 0x3ff));
            m.y.resize((size_t) (4 * s.N));
            bytes += (double) m.pq.size() + 2.0 * (double) m.pd.size();
            mats.push_back(std::move(m));
        }
    std::vector<float> xh((size_t) (4 * H)), xi((size_t) (4 * I));
    std::normal_distribution<float> normal(0.f, 1.f);
    for (auto& v : xh) v = normal(rng);
    for (auto& v : xi) v = normal(rng);
    std::printf("decode pass: %s, 22 TinyLlama layers, %.0f MB of panels and scales, %d threads, path %s\n",
                fmt == QF_Q8_0 ? "q8_0" : "q4_0", bytes / 1e6, threads, quant_path_name(path));

    const auto library_pass = [&](int64_t M) {
        for (int64_t l = 0; l < layers; l++) {
            Mat* L = &mats[(size_t) (l * 7)];
            QuantGroupMember qkv[3], gu[2];
            for (int g = 0; g < 3; g++) qkv[g] = {fmt, L[g].pq.data(), L[g].pd.data(), nullptr, L[g].y.data(), L[g].N};
            for (int g = 0; g < 2; g++)
                gu[g] = {fmt, L[4 + g].pq.data(), L[4 + g].pd.data(), nullptr, L[4 + g].y.data(), L[4 + g].N};
            quant_linear_group<float>(path, qkv, 3, xh.data(), M, H, threads);
            quant_linear_panels<float>(path, fmt, L[3].pq.data(), L[3].pd.data(), nullptr, xh.data(), L[3].y.data(), M,
                                       H, H, threads);
            quant_linear_group<float>(path, gu, 2, xh.data(), M, H, threads);
            quant_linear_panels<float>(path, fmt, L[6].pq.data(), L[6].pd.data(), nullptr, xi.data(), L[6].y.data(), M,
                                       I, H, threads);
        }
    };
    // one region over the members' panels, as the library's group does, split and prefetches as asked
    const auto copy_group = [&](Mat** ms, int n, const float* x, int64_t M, int64_t K, bool contiguous, bool scales) {
        QuantScratch& sc = quant_scratch();
        const QuantActs acts = sc.acts(M, K);
        for (int64_t r = 0; r < M; r++) sc.quantize_row(x, r, K);
        std::vector<int64_t> at((size_t) n + 1, 0);
        for (int g = 0; g < n; g++) at[(size_t) g + 1] = at[(size_t) g] + panel_count(ms[g]->N);
        const int64_t nb = K / kQuantBlock, bb = panel_block_bytes(fmt);
        const auto unit = [&](int64_t u) {
            int g = 0;
            while (u >= at[(size_t) g + 1]) g++;
            Mat& m = *ms[g];
            const int64_t p = u - at[(size_t) g];
            float out[4][kPanelRows];
            const uint8_t* q = m.pq.data() + p * nb * bb;
            const uint16_t* d = m.pd.data() + p * nb * kPanelRows;
#if defined(__x86_64__)
            if (fmt == QF_Q4_0) {
                if (M == 1) rows_copy<QF_Q4_0, 1>(q, d, acts, out, scales);
                else rows_copy<QF_Q4_0, 4>(q, d, acts, out, scales);
            } else {
                if (M == 1) rows_copy<QF_Q8_0, 1>(q, d, acts, out, scales);
                else rows_copy<QF_Q8_0, 4>(q, d, acts, out, scales);
            }
#endif
            for (int64_t r = 0; r < M; r++)
                for (int l = 0; l < kPanelRows; l++) m.y[(size_t) (r * m.N + p * kPanelRows + l)] = out[r][l];
        };
        if (contiguous) {
            contiguous_for(at[(size_t) n], threads, unit);
            return;
        }
        std::vector<int64_t> tf((size_t) n + 1, 0);
        for (int g = 0; g < n; g++) tf[(size_t) g + 1] = tf[(size_t) g] + (panel_count(ms[g]->N) + 3) / 4;
        const std::function<void(int64_t)> task = [&](int64_t t) {
            int g = 0;
            while (t >= tf[(size_t) g + 1]) g++;
            const int64_t lt = t - tf[(size_t) g], P = panel_count(ms[g]->N);
            for (int64_t p = lt * 4; p < std::min(P, lt * 4 + 4); p++) unit(at[(size_t) g] + p);
        };
        ThreadPool::instance().parallel_for(tf[(size_t) n], threads, task);
    };
    const auto copy_pass = [&](int64_t M, bool contiguous, bool scales) {
        for (int64_t l = 0; l < layers; l++) {
            Mat* L = &mats[(size_t) (l * 7)];
            Mat* qkv[3] = {&L[0], &L[1], &L[2]};
            Mat* o[1] = {&L[3]};
            Mat* gu[2] = {&L[4], &L[5]};
            Mat* down[1] = {&L[6]};
            copy_group(qkv, 3, xh.data(), M, H, contiguous, scales);
            copy_group(o, 1, xh.data(), M, H, contiguous, scales);
            copy_group(gu, 2, xh.data(), M, H, contiguous, scales);
            copy_group(down, 1, xi.data(), M, I, contiguous, scales);
        }
    };
    struct Variant { const char* name; int kind; bool contiguous, scales; };  // kind 0 library, 1 copy
    const std::vector<Variant> vs = {{"tasks of 4, w", 1, false, false},
                                     {"tasks of 4, w+s", 1, false, true},
                                     {"contiguous, w", 1, true, false},
                                     {"contiguous, w+s", 1, true, true},
                                     {"library, tasks", 0, false, true},
                                     {"library, contiguous", 0, true, true}};
    const bool split = decode_split_contiguous();
    std::printf("%-4s %-20s %9s %7s %16s\n", "M", "split, prefetch", "ms/pass", "GB/s", "ratio (median)");
    for (int64_t M : {1, 4}) {
        std::vector<std::vector<double>> t(vs.size()), ratio(vs.size());
        for (int round = -1; round < rounds; round++) {
            std::vector<double> tr(vs.size());
            for (size_t k = 0; k < vs.size(); k++) {
                const size_t i = (k + (size_t) (round + 1)) % vs.size();
                const double t0 = now_ms();
                decode_split_contiguous() = vs[i].kind == 0 ? vs[i].contiguous : split;
                if (vs[i].kind == 0) library_pass(M);
                else copy_pass(M, vs[i].contiguous, vs[i].scales);
                tr[i] = now_ms() - t0;
            }
            if (round < 0) continue;  // warm-up
            for (size_t i = 0; i < vs.size(); i++) {
                t[i].push_back(tr[i]);
                ratio[i].push_back(tr[i] / tr[0]);
            }
        }
        for (size_t i = 0; i < vs.size(); i++)
            std::printf("%-4lld %-20s %9.2f %7.1f %16.3f\n", (long long) M, vs[i].name, median(t[i]),
                        bytes / median(t[i]) / 1e6, median(ratio[i]));
    }
    return 0;
}
