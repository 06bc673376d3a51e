// The panel kernels (peft4j_qpanel.h) against the canonical-layout kernels (peft4j_quant.h) on the same weights and
// activations, alternating, one process: y = x·Ŵᵀ for an [N, K] weight at M activation rows, float32 activations,
// on the path the CPU's best ISA takes. Prints the median ms per call of each and their ratio (panels / canonical).
// Build and run: benchmarks/quant/run.sh [threads] [rounds] [stream | gemm [M ...]]
// The TinyLlama MLP weights (5.8 MB at Q4_0, 11.5 MB at Q8_0) stay in a Zen 4 L3 (32 MB) across calls, so the default
// shapes time the kernel on cached weights. `stream` times M = 1 and 4 on an up projection 8 times wider (46 / 92 MB,
// larger than the L3) instead: weights streamed from DRAM once per call, as a whole model's decode step does.
#include "peft4j_kernels.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <ctime>
#include <vector>

namespace {

double now_ms() {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// CPU time of the calling thread: with 1 thread, the time the kernel actually ran, whatever else the machine runs
double thread_cpu_ms() {
    timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

}  // namespace

// `gemm` mode: the panel product alone (activations quantized once, outside the timing) at M >= 8, the row-tile
// kernel (panel_span_rows: 8 rows × 1 panel per pass, one panel per task) against the prefill tile (panel_span:
// kTileRows × kTilePanels panels), alternating, TinyLlama's projection shapes. Prints the median ms per call of
// each and their ratio (tile / rows), then the best round of each, its GOPS (2·M·N·K / time) and their ratio (on a
// loaded machine the best rounds are the ones other processes disturbed least). With 1 thread the times are the
// thread's CPU time, so other processes on the machine do not count.
int gemm_mode(int threads, int rounds, const std::vector<int64_t>& Ms) {
    const int path = peft4j::quant_path();
    // 1 thread: thread CPU time (robust on a loaded machine); more: wall time
    double (*tick)() = threads == 1 ? thread_cpu_ms : now_ms;
    std::printf("gemm: path %s, %d threads, %d rounds (alternating); ms per call (%s; median), GOPS = 2·M·N·K / time\n",
                peft4j::quant_path_name(path), threads, rounds, threads == 1 ? "thread CPU time" : "wall time");
    std::printf("%-5s %5s %5s %4s %9s %9s %7s | %9s %9s %7s %7s %7s\n", "fmt", "N", "K", "M", "rows ms", "tile ms",
                "ratio", "rows best", "tile best", "rows", "tile", "ratio");
    std::mt19937 rng(1);
    std::normal_distribution<float> normal(0.f, 1.f);
    struct Shape { int64_t N, K; };
    for (int fmt : {peft4j::QF_Q4_0, peft4j::QF_Q8_0}) {
        for (Shape s : {Shape{2048, 2048}, Shape{256, 2048}, Shape{5632, 2048}, Shape{2048, 5632}}) {
            std::vector<float> W((size_t) (s.N * s.K));
            for (auto& w : W) w = normal(rng) * 0.05f;
            const int64_t nb = s.K / 32, P = peft4j::panel_count(s.N);
            std::vector<uint8_t> pq((size_t) peft4j::panel_bytes(fmt, s.N, s.K));
            std::vector<uint16_t> pd((size_t) (P * 16 * nb));
            peft4j::quantize_matrix_panels<float>(fmt, W.data(), s.N, s.K, pq.data(), pd.data(), threads);
            for (int64_t M : Ms) {
                std::vector<float> x((size_t) (M * s.K)), y((size_t) (M * s.N)), y2((size_t) (M * s.N));
                for (auto& v : x) v = normal(rng);
                peft4j::QuantScratch& sc = peft4j::quant_scratch();
                const peft4j::QuantActs acts = sc.acts(M, s.K);
                for (int64_t r = 0; r < M; r++) sc.quantize_row(x.data(), r, s.K);
                const int64_t per = peft4j::kPanelsPerTask;
                const std::function<void(int64_t)> rows = [&](int64_t p) {
                    peft4j::panel_span_rows<float>(path, fmt, pq.data(), pd.data(), nullptr, acts, y.data(), M, s.N, p,
                                                   p + 1);
                };
                const std::function<void(int64_t)> tile = [&](int64_t t) {
                    peft4j::panel_span<float>(path, fmt, pq.data(), pd.data(), nullptr, acts, y2.data(), M, s.N,
                                              t * per, std::min(P, (t + 1) * per));
                };
                const int reps = std::max<int64_t>(1, 256 / M);
                // QUANT_BENCH_ONLY=rows|tile: time one kernel (for perf stat); the other runs once, for the check
                const char* only = std::getenv("QUANT_BENCH_ONLY");
                const bool run_rows = only == nullptr || std::string(only) != "tile";
                const bool run_tile = only == nullptr || std::string(only) != "rows";
                std::vector<double> tr, tt;
                for (int round = -1; round < rounds; round++) {
                    double t0 = tick();
                    for (int i = 0; i < (run_rows || round < 0 ? reps : 0); i++)
                        peft4j::ThreadPool::instance().parallel_for(P, threads, rows);
                    double t1 = tick();
                    for (int i = 0; i < (run_tile || round < 0 ? reps : 0); i++)
                        peft4j::ThreadPool::instance().parallel_for((P + per - 1) / per, threads, tile);
                    double t2 = tick();
                    if (round >= 0) {
                        tr.push_back((t1 - t0) / reps);
                        tt.push_back((t2 - t1) / reps);
                    }
                }
                for (size_t i = 0; i < y.size(); i++)
                    if (y[i] != y2[i]) {
                        std::fprintf(stderr, "tile differs from rows at %zu: %.9g vs %.9g\n", i, y[i], y2[i]);
                        return 1;
                    }
                const double a = median(tr), b = median(tt), ops = 2.0 * M * s.N * s.K;
                const double a1 = *std::min_element(tr.begin(), tr.end()), b1 = *std::min_element(tt.begin(), tt.end());
                std::printf("%-5s %5lld %5lld %4lld %9.3f %9.3f %7.3f | %9.3f %9.3f %7.0f %7.0f %7.3f\n",
                            fmt == peft4j::QF_Q8_0 ? "q8_0" : "q4_0", (long long) s.N, (long long) s.K, (long long) M,
                            a, b, b / a, a1, b1, ops / a1 / 1e6, ops / b1 / 1e6, b1 / a1);
            }
        }
    }
    return 0;
}

int main(int argc, char** argv) {
    const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
    const int rounds = argc > 2 ? std::atoi(argv[2]) : 7;
    if (argc > 3 && std::string(argv[3]) == "gemm") {
        std::vector<int64_t> Ms;
        for (int i = 4; i < argc; i++) Ms.push_back(std::atoll(argv[i]));
        if (Ms.empty()) Ms = {16, 64, 128, 512};
        return gemm_mode(threads, rounds, Ms);
    }
    const bool stream = argc > 3 && std::string(argv[3]) == "stream";
    const int path = peft4j::quant_path();
    std::printf("path %s, %d threads, %d rounds (alternating); ms per call, median\n", peft4j::quant_path_name(path),
                threads, rounds);
    std::printf("%-5s %-6s %5s %5s %4s %11s %11s %8s\n", "fmt", "", "N", "K", "M", "canonical", "panels", "ratio");
    std::mt19937 rng(1);
    std::normal_distribution<float> normal(0.f, 1.f);
    struct Shape { int64_t N, K; const char* name; };
    for (int fmt : {peft4j::QF_Q8_0, peft4j::QF_Q4_0}) {
        const std::vector<Shape> shapes = stream ? std::vector<Shape>{Shape{8 * 5632, 2048, "up×8"}}
                                                 : std::vector<Shape>{Shape{5632, 2048, "up"}, Shape{2048, 5632, "down"}};
        for (Shape s : shapes) {
            std::vector<float> W((size_t) (s.N * s.K));
            for (auto& w : W) w = normal(rng) * 0.05f;
            const int64_t nb = s.K / 32;
            std::vector<uint8_t> qs((size_t) (s.N * peft4j::quant_row_bytes(fmt, s.K)));
            std::vector<uint16_t> d((size_t) (s.N * nb));
            peft4j::quantize_matrix<float>(fmt, W.data(), s.N, s.K, qs.data(), d.data(), threads);
            std::vector<uint8_t> pq((size_t) peft4j::panel_bytes(fmt, s.N, s.K));
            std::vector<uint16_t> pd((size_t) (peft4j::panel_count(s.N) * 16 * nb));
            peft4j::pack_matrix(fmt, qs.data(), d.data(), s.N, s.K, pq.data(), pd.data(), threads);
            for (int64_t M : stream ? std::vector<int64_t>{1, 4} : std::vector<int64_t>{1, 128}) {
                std::vector<float> x((size_t) (M * s.K)), y((size_t) (M * s.N)), y2((size_t) (M * s.N));
                for (auto& v : x) v = normal(rng);
                const int reps = stream ? 5 : M == 1 ? 20 : 1;
                std::vector<double> tc, tp;
                for (int round = -1; round < rounds; round++) {
                    double t0 = now_ms();
                    for (int i = 0; i < reps; i++)
                        peft4j::quant_linear<float>(path, fmt, qs.data(), d.data(), nullptr, x.data(), y.data(), M,
                                                    s.K, s.N, threads);
                    double t1 = now_ms();
                    for (int i = 0; i < reps; i++)
                        peft4j::quant_linear_panels<float>(path, fmt, pq.data(), pd.data(), nullptr, x.data(),
                                                           y2.data(), M, s.K, s.N, threads);
                    double t2 = now_ms();
                    if (round >= 0) {
                        tc.push_back((t1 - t0) / reps);
                        tp.push_back((t2 - t1) / reps);
                    }
                }
                double worst = 0, scale = 0;
                for (size_t i = 0; i < y.size(); i++) {
                    worst = std::max(worst, (double) std::fabs(y[i] - y2[i]));
                    scale = std::max(scale, (double) std::fabs(y[i]));
                }
                if (worst > 1e-3 * scale) {
                    std::fprintf(stderr, "the two kernels disagree: %g (outputs up to %g)\n", worst, scale);
                    return 1;
                }
                const double c = median(tc), p = median(tp);
                std::printf("%-5s %-6s %5lld %5lld %4lld %11.3f %11.3f %8.3f\n", fmt == peft4j::QF_Q8_0 ? "q8_0" : "q4_0",
                            s.name, (long long) s.N, (long long) s.K, (long long) M, c, p, p / c);
            }
        }
    }
    return 0;
}
