// Native test of the decode-step kernels (peft4j_decode.h) on every ISA path the CPU has, against float64
// references, on exact-size heap buffers (AddressSanitizer catches any access past the end).
#include "peft4j_kernels.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

namespace {

int failures = 0;
int checks = 0;

#define DCHECK(cond, ...)                                             \
    do {                                                              \
        checks++;                                                     \
        if (!(cond)) {                                                \
            std::fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            std::fprintf(stderr, __VA_ARGS__);                        \
            std::fprintf(stderr, "\n");                               \
            failures++;                                               \
        }                                                             \
    } while (0)

float get(const float* p, int64_t i) { return p[i]; }
float get(const uint16_t* p, int64_t i) { return peft4j::bf16_to_f32(p[i]); }
void put(float* p, int64_t i, float v) { p[i] = v; }
void put(uint16_t* p, int64_t i, float v) { p[i] = peft4j::f32_to_bf16(v); }

// relative error against the float64 reference, measured on the scale of the row (max |ref|)
template <typename T>
double worst_err(const T* got, const std::vector<double>& ref) {
    double scale = 1e-30, worst = 0;
    for (double r : ref) scale = std::max(scale, std::fabs(r));
    for (size_t i = 0; i < ref.size(); i++) worst = std::max(worst, std::fabs(get(got, (int64_t) i) - ref[i]) / scale);
    return worst;
}

template <typename T>
void test_norms(std::mt19937& rng, double tol, const char* name) {
    std::normal_distribution<float> normal(0.f, 2.f);
    const int best = peft4j::best_isa();
    for (int64_t dim : {1, 7, 16, 33, 100, 2048}) {
        for (int64_t rows : {1, 3}) {
            const int64_t n = rows * dim;
            std::vector<T> x0(n), a0(n), w0(dim);
            for (int64_t i = 0; i < n; i++) { put(x0.data(), i, normal(rng)); put(a0.data(), i, normal(rng)); }
            for (int64_t i = 0; i < dim; i++) put(w0.data(), i, normal(rng));
            // references: y = w·(x·rsqrt(mean x² + eps)); r = x + a then the same
            std::vector<double> ry(n), rr(n), rry(n);
            for (int64_t r = 0; r < rows; r++) {
                double ss = 0, ss2 = 0;
                for (int64_t i = 0; i < dim; i++) {
                    double v = get(x0.data(), r * dim + i);
                    ss += v * v;
                    // the residual as the kernel keeps it: the float32 sum rounded to T
                    double s = peft4j::round_to(T(), get(x0.data(), r * dim + i) + get(a0.data(), r * dim + i));
                    rr[r * dim + i] = s;
                    ss2 += s * s;
                }
                double inv = 1 / std::sqrt(ss / dim + 1e-5), inv2 = 1 / std::sqrt(ss2 / dim + 1e-5);
                for (int64_t i = 0; i < dim; i++) {
                    ry[r * dim + i] = get(w0.data(), i) * get(x0.data(), r * dim + i) * inv;
                    rry[r * dim + i] = get(w0.data(), i) * rr[r * dim + i] * inv2;
                }
            }
            for (int isa = peft4j::ISA_SCALAR; isa <= best; isa++) {
                peft4j::set_active_isa(isa);
                T* x = new T[n];
                T* y = new T[n];
                T* a = new T[n];
                T* w = new T[dim];
                std::copy(x0.begin(), x0.end(), x);
                std::copy(a0.begin(), a0.end(), a);
                std::copy(w0.begin(), w0.end(), w);
                peft4j::rms_norm(y, x, w, rows, dim, 1e-5f);
                double e = worst_err(y, ry);
                DCHECK(e < tol, "%s rms_norm %s dim=%lld rows=%lld off by %g", name, peft4j::isa_name(isa),
                       (long long) dim, (long long) rows, e);
                peft4j::add_rms_norm(x, a, y, w, rows, dim, 1e-5f);
                bool exact = true;  // the residual add is one rounding of the float32 sum
                for (int64_t i = 0; i < n; i++) {
                    T want;
                    put(&want, 0, get(x0.data(), i) + get(a0.data(), i));
                    exact &= std::memcmp(&want, x + i, sizeof(T)) == 0;
                }
                DCHECK(exact, "%s add_rms_norm %s dim=%lld: residual not T(x + a)", name, peft4j::isa_name(isa),
                       (long long) dim);
                e = worst_err(y, rry);
                DCHECK(e < tol, "%s add_rms_norm %s dim=%lld rows=%lld off by %g", name, peft4j::isa_name(isa),
                       (long long) dim, (long long) rows, e);
                // Gemma's (1 + w) norm, in place (q / k norms run it so), and fused with the add
                std::vector<double> gy(n), gry(n);
                for (int64_t r = 0; r < rows; r++) {
                    double ss = 0, ss2 = 0;
                    for (int64_t i = 0; i < dim; i++) {
                        const double v = get(x0.data(), r * dim + i);
                        ss += v * v;
                        ss2 += rr[r * dim + i] * rr[r * dim + i];
                    }
                    const double inv = 1 / std::sqrt(ss / dim + 1e-5), inv2 = 1 / std::sqrt(ss2 / dim + 1e-5);
                    for (int64_t i = 0; i < dim; i++) {
                        const double wi = 1 + (double) get(w0.data(), i);
                        gy[r * dim + i] = get(x0.data(), r * dim + i) * inv * wi;
                        gry[r * dim + i] = rr[r * dim + i] * inv2 * wi;
                    }
                }
                T* g = new T[n];
                std::copy(x0.begin(), x0.end(), g);
                peft4j::rms_norm(g, g, w, rows, dim, 1e-5f, true);
                e = worst_err(g, gy);
                DCHECK(e < tol, "%s gemma rms_norm in place %s dim=%lld rows=%lld off by %g", name,
                       peft4j::isa_name(isa), (long long) dim, (long long) rows, e);
                std::copy(x0.begin(), x0.end(), g);
                peft4j::add_rms_norm(g, a, y, w, rows, dim, 1e-5f, true);
                e = worst_err(y, gry);
                DCHECK(e < tol, "%s gemma add_rms_norm %s dim=%lld rows=%lld off by %g", name,
                       peft4j::isa_name(isa), (long long) dim, (long long) rows, e);
                delete[] g;
                delete[] x;
                delete[] y;
                delete[] a;
                delete[] w;
            }
        }
    }
}

template <typename T>
void test_rope(std::mt19937& rng, double tol, const char* name) {
    std::normal_distribution<float> normal(0.f, 1.f);
    for (int64_t dim : {2, 10, 64}) {
        const int64_t rows = 3, heads = 5, half = dim / 2, n = rows * heads * dim;
        std::vector<float> inv(half);
        for (int64_t j = 0; j < half; j++) inv[j] = (float) (1.0 / std::pow(10000.0, 2.0 * j / dim));
        const int64_t pos[rows] = {0, 7, 1000};
        std::vector<T> x0(n);
        for (int64_t i = 0; i < n; i++) put(x0.data(), i, normal(rng));
        T* x = new T[n];
        std::copy(x0.begin(), x0.end(), x);
        peft4j::rope(x, rows, heads, dim, pos, inv.data());
        std::vector<double> ref(n);
        for (int64_t i = 0; i < rows; i++)
            for (int64_t h = 0; h < heads; h++)
                for (int64_t j = 0; j < half; j++) {
                    const int64_t o = (i * heads + h) * dim;
                    double f = (double) (float) ((float) pos[i] * inv[j]);
                    double x1 = get(x0.data(), o + j), x2 = get(x0.data(), o + j + half);
                    ref[o + j] = x1 * std::cos(f) - x2 * std::sin(f);
                    ref[o + j + half] = x2 * std::cos(f) + x1 * std::sin(f);
                }
        double e = worst_err(x, ref);
        DCHECK(e < tol, "%s rope dim=%lld off by %g", name, (long long) dim, e);
        bool identity = std::memcmp(x, x0.data(), sizeof(T) * heads * dim) == 0;
        DCHECK(identity, "%s rope dim=%lld: position 0 must leave x as it is", name, (long long) dim);
        delete[] x;
    }
}

// the leading rot dims of each head rotate with tables scaled by 1.25 (Phi-3's long-RoPE factor), the rest stay
template <typename T>
void test_partial_rope(std::mt19937& rng, double tol, const char* name) {
    std::normal_distribution<float> normal(0.f, 1.f);
    const int64_t rows = 2, heads = 3, dim = 12, rot = 8, half = rot / 2, n = rows * heads * dim;
    const float scaling = 1.25f;
    std::vector<float> inv(half);
    for (int64_t j = 0; j < half; j++) inv[j] = (float) (1.0 / std::pow(10000.0, 2.0 * j / rot));
    const int64_t pos[rows] = {3, 517};
    std::vector<T> x0(n);
    for (int64_t i = 0; i < n; i++) put(x0.data(), i, normal(rng));
    T* x = new T[n];
    std::copy(x0.begin(), x0.end(), x);
    peft4j::rope(x, rows, heads, dim, pos, inv.data(), rot, scaling);
    std::vector<double> ref(n);
    for (int64_t i = 0; i < rows; i++)
        for (int64_t h = 0; h < heads; h++) {
            const int64_t o = (i * heads + h) * dim;
            for (int64_t j = 0; j < half; j++) {
                double f = (double) (float) ((float) pos[i] * inv[j]);
                double c = std::cos(f) * scaling, sn = std::sin(f) * scaling;
                double x1 = get(x0.data(), o + j), x2 = get(x0.data(), o + j + half);
                ref[o + j] = x1 * c - x2 * sn;
                ref[o + j + half] = x2 * c + x1 * sn;
            }
            for (int64_t j = rot; j < dim; j++) ref[o + j] = get(x0.data(), o + j);
        }
    double e = worst_err(x, ref);
    DCHECK(e < tol, "%s partial scaled rope off by %g", name, e);
    bool kept = true;
    for (int64_t i = 0; i < rows * heads; i++) kept &= std::memcmp(x + i * dim + rot, x0.data() + i * dim + rot, sizeof(T) * (dim - rot)) == 0;
    DCHECK(kept, "%s partial rope: the dims past rot must stay as they are", name);
    delete[] x;
}

template <typename T>
void test_attention(std::mt19937& rng, double tol, const char* name) {
    std::normal_distribution<float> normal(0.f, 1.f);
    const int best = peft4j::best_isa();
    struct Case { int64_t heads, kv, dim, window; double softcap; };
    for (Case c : {Case{4, 2, 8, 0, 0}, Case{8, 1, 64, 0, 0}, Case{6, 3, 18, 5, 0}, Case{4, 4, 33, 0, 0},
                   Case{32, 4, 64, 0, 0}, Case{4, 2, 16, 6, 0.5}, Case{8, 4, 32, 0, 2.0}, Case{10, 2, 80, 0, 0},
                   Case{3, 1, 37, 7, 0}, Case{14, 2, 136, 0, 0}}) {
        const int64_t slots = 3, max_len = 300, rows = 2;
        const int32_t slot[rows] = {2, 0};
        const int64_t past[rows] = {c.kv == 4 && c.heads == 32 ? 299 : 11, 0};
        const int64_t cache_n = slots * c.kv * max_len * c.dim;
        std::vector<T> kc0(cache_n), vc0(cache_n), q(rows * c.heads * c.dim), k(rows * c.kv * c.dim), v(k.size());
        for (int64_t i = 0; i < cache_n; i++) { put(kc0.data(), i, normal(rng)); put(vc0.data(), i, normal(rng)); }
        for (size_t i = 0; i < q.size(); i++) put(q.data(), (int64_t) i, normal(rng));
        for (size_t i = 0; i < k.size(); i++) { put(k.data(), (int64_t) i, normal(rng)); put(v.data(), (int64_t) i, normal(rng)); }
        // reference: the cache with the new rows written, then softmax attention in float64
        std::vector<T> kw = kc0, vw = vc0;
        for (int64_t i = 0; i < rows; i++)
            for (int64_t h = 0; h < c.kv; h++)
                for (int64_t d = 0; d < c.dim; d++) {
                    int64_t at = ((slot[i] * c.kv + h) * max_len + past[i]) * c.dim + d;
                    kw[at] = k[(i * c.kv + h) * c.dim + d];
                    vw[at] = v[(i * c.kv + h) * c.dim + d];
                }
        std::vector<double> ref(q.size());
        const double scale = 1 / std::sqrt((double) c.dim);
        const int64_t G = c.heads / c.kv;
        for (int64_t i = 0; i < rows; i++)
            for (int64_t hq = 0; hq < c.heads; hq++) {
                const int64_t h = hq / G, lo = c.window > 0 ? std::max<int64_t>(0, past[i] + 1 - c.window) : 0;
                std::vector<double> s;
                double mx = -1e300;
                for (int64_t p = lo; p <= past[i]; p++) {
                    double dot = 0;
                    for (int64_t d = 0; d < c.dim; d++)
                        dot += (double) get(q.data(), (i * c.heads + hq) * c.dim + d)
                               * get(kw.data(), ((slot[i] * c.kv + h) * max_len + p) * c.dim + d);
                    const double sc = c.softcap > 0 ? c.softcap * std::tanh(dot * scale / c.softcap) : dot * scale;
                    s.push_back(sc);
                    mx = std::max(mx, sc);
                }
                double sum = 0;
                for (double& e : s) sum += (e = std::exp(e - mx));
                for (int64_t d = 0; d < c.dim; d++) {
                    double o = 0;
                    for (int64_t p = lo; p <= past[i]; p++)
                        o += s[p - lo] / sum * get(vw.data(), ((slot[i] * c.kv + h) * max_len + p) * c.dim + d);
                    ref[(i * c.heads + hq) * c.dim + d] = o;
                }
            }
        for (int isa = peft4j::ISA_SCALAR; isa <= best; isa++) {
            peft4j::set_active_isa(isa);
            for (int threads : {1, 2}) {
                T* kc = new T[cache_n];
                T* vc = new T[cache_n];
                T* out = new T[q.size()];
                std::copy(kc0.begin(), kc0.end(), kc);
                std::copy(vc0.begin(), vc0.end(), vc);
                peft4j::decode_attention(q.data(), k.data(), v.data(), kc, vc, max_len, slot, past, rows, c.heads,
                                         c.kv, c.dim, c.window, (float) scale, out, threads, (float) c.softcap);
                DCHECK(std::memcmp(kc, kw.data(), sizeof(T) * cache_n) == 0
                           && std::memcmp(vc, vw.data(), sizeof(T) * cache_n) == 0,
                       "%s attention %s: the cache must change at the new positions only", name,
                       peft4j::isa_name(isa));
                double e = worst_err(out, ref);
                DCHECK(e < tol, "%s attention %s threads=%d heads=%lld kv=%lld dim=%lld window=%lld softcap=%g off by %g",
                       name, peft4j::isa_name(isa), threads, (long long) c.heads, (long long) c.kv, (long long) c.dim,
                       (long long) c.window, c.softcap, e);
                delete[] kc;
                delete[] vc;
                delete[] out;
            }
        }
    }
}

// decode_rope_attention must equal rope(q), rope(k), then decode_attention, bit for bit, on every ISA path: full and
// partial rotary dims, with and without the attention scaling, the per-thread tables reused for a repeated step and
// rebuilt when the positions change; and a NaN in one head's query makes that head's output NaN, the others finite
template <typename T>
void test_rope_attention(std::mt19937& rng, const char* name) {
    std::normal_distribution<float> normal(0.f, 1.f);
    const int best = peft4j::best_isa();
    const int64_t heads = 8, kv = 2, dim = 32, slots = 2, max_len = 40, rows = 2;
    const int32_t slot[rows] = {1, 0};
    const int64_t cache_n = slots * kv * max_len * dim;
    std::vector<T> kc0(cache_n), vc0(cache_n), q0(rows * heads * dim), k0(rows * kv * dim), v0(k0.size());
    for (int64_t i = 0; i < cache_n; i++) { put(kc0.data(), i, normal(rng)); put(vc0.data(), i, normal(rng)); }
    for (size_t i = 0; i < q0.size(); i++) put(q0.data(), (int64_t) i, normal(rng));
    for (size_t i = 0; i < k0.size(); i++) { put(k0.data(), (int64_t) i, normal(rng)); put(v0.data(), (int64_t) i, normal(rng)); }
    struct Rope { int64_t rot; float scaling; int64_t past0, past1; };
    for (int isa = peft4j::ISA_SCALAR; isa <= best; isa++) {
        peft4j::set_active_isa(isa);
        for (Rope r : {Rope{0, 1.f, 17, 3}, Rope{0, 1.f, 17, 3}, Rope{0, 1.f, 18, 4}, Rope{16, 1.19f, 18, 4},
                       Rope{16, 1.19f, 39, 0}}) {
            const int64_t half = (r.rot > 0 ? r.rot : dim) / 2;
            std::vector<float> inv(half);
            for (int64_t j = 0; j < half; j++) inv[j] = (float) std::pow(10000.0, -2.0 * j / (2.0 * half));
            const int64_t past[rows] = {r.past0, r.past1};
            std::vector<T> qa = q0, ka = k0, qb = q0, kb = k0, kca = kc0, vca = vc0, kcb = kc0, vcb = vc0;
            std::vector<T> outa(q0.size()), outb(q0.size());
            peft4j::rope(qa.data(), rows, heads, dim, past, inv.data(), r.rot, r.scaling);
            peft4j::rope(ka.data(), rows, kv, dim, past, inv.data(), r.rot, r.scaling);
            peft4j::decode_attention(qa.data(), ka.data(), v0.data(), kca.data(), vca.data(), max_len, slot, past,
                                     rows, heads, kv, dim, 0, 0.25f, outa.data(), 2);
            T* out = new T[q0.size()];  // exact size: ASan sees any write past it
            peft4j::decode_rope_attention(qb.data(), kb.data(), v0.data(), kcb.data(), vcb.data(), max_len, slot,
                                          past, rows, heads, kv, dim, 0, 0.25f, out, 2, 0.f, inv.data(), r.rot,
                                          r.scaling);
            DCHECK(std::memcmp(qa.data(), qb.data(), sizeof(T) * qa.size()) == 0
                       && std::memcmp(ka.data(), kb.data(), sizeof(T) * ka.size()) == 0
                       && std::memcmp(kca.data(), kcb.data(), sizeof(T) * cache_n) == 0
                       && std::memcmp(vca.data(), vcb.data(), sizeof(T) * cache_n) == 0
                       && std::memcmp(outa.data(), out, sizeof(T) * q0.size()) == 0,
                   "%s rope_attention %s rot=%lld past=%lld,%lld differs from rope, rope, attention", name,
                   peft4j::isa_name(isa), (long long) r.rot, (long long) r.past0, (long long) r.past1);
            delete[] out;
        }
        // a NaN in query head 3 of row 0: that head's output is NaN, every other finite
        std::vector<T> q = q0, k = k0, kc = kc0, vc = vc0, out(q0.size());
        put(q.data(), 3 * dim + 5, std::nanf(""));
        const int64_t past[rows] = {9, 30};
        peft4j::decode_attention(q.data(), k.data(), v0.data(), kc.data(), vc.data(), max_len, slot, past, rows, heads,
                                 kv, dim, 0, 0.25f, out.data(), 1);
        bool ok = true;
        for (int64_t i = 0; i < rows * heads; i++)
            for (int64_t d = 0; d < dim; d++) ok &= std::isnan(get(out.data(), i * dim + d)) == (i == 3);
        DCHECK(ok, "%s attention %s: a NaN query must make its own head NaN and no other", name, peft4j::isa_name(isa));
    }
}

double act_ref(int act, double x) {
    switch (act) {
        case peft4j::ACT_SILU: return x / (1 + std::exp(-x));
        case peft4j::ACT_GELU: return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
        case peft4j::ACT_GELU_TANH: return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
        default: return x > 0 ? x : 0;
    }
}

// y = T(T(act(g))·u) on every ISA path against float64 (the activation rounded to T as the kernel's contract says):
// float32 within 4e-6 relative (the exp polynomial, the division), bf16 within one bf16 ulp (a tie of the
// intermediate rounding may go the other way), each plus a few float32 ulps of |g·u|; extremes (±100, ±20, 0) must
// stay finite
template <typename T>
void test_act_mul(std::mt19937& rng, double rel, const char* name) {
    std::normal_distribution<float> normal(0.f, 3.f);
    const int best = peft4j::best_isa();
    const int dt = sizeof(T) == 4 ? peft4j::DT_F32 : peft4j::DT_BF16;
    for (int act = 0; act < 4; act++) {
        for (int64_t n : {1, 7, 8, 16, 17, 100, 5632}) {
            std::vector<T> g0(n), u0(n);
            for (int64_t i = 0; i < n; i++) {
                float v = normal(rng);
                if (i % 29 == 3) v = (i % 2 ? 100.f : -100.f);
                if (i % 31 == 5) v = (i % 2 ? 20.f : -20.f);
                if (i % 37 == 6) v = 0.f;
                put(g0.data(), i, v);
                put(u0.data(), i, normal(rng));
            }
            std::vector<double> ref(n);
            for (int64_t i = 0; i < n; i++)
                ref[i] = (double) peft4j::round_to(T(), (float) act_ref(act, get(g0.data(), i))) * get(u0.data(), i);
            for (int isa = peft4j::ISA_SCALAR; isa <= best; isa++) {
                peft4j::set_active_isa(isa);
                T* g = new T[n];
                T* u = new T[n];
                T* y = new T[n];
                std::copy(g0.begin(), g0.end(), g);
                std::copy(u0.begin(), u0.end(), u);
                peft4j_act_mul(dt, act, y, g, u, n);
                double worst = 0;
                bool finite = true;
                for (int64_t i = 0; i < n; i++) {
                    const double got = get(y, i);
                    finite &= std::isfinite(got);
                    // relative, plus a few float32 ulps of |g·u|: 0.5·x·(1 + tanh) cancels for negative x in any
                    // float32 evaluation (libtorch's too), so a tiny result carries the absolute error of its terms
                    const double allowed = rel * std::fabs(ref[i])
                                           + 5e-7 * std::fabs(get(g0.data(), i) * get(u0.data(), i)) + 1e-37;
                    worst = std::max(worst, std::fabs(got - ref[i]) / allowed * rel);
                }
                DCHECK(finite && worst <= rel, "%s act_mul act=%d %s n=%lld: relative error %g (finite %d)", name, act,
                       peft4j::isa_name(isa), (long long) n, worst, (int) finite);
                delete[] g;
                delete[] u;
                delete[] y;
            }
        }
    }
}

// The group of adapted Linears in one region, and the gated MLP input built on it, equal the layers run one call at a
// time (then act_mul) bit for bit, on every ISA path, at 1 and 2 threads, 1-16 rows, with and without adapters
template <typename T>
void test_group(std::mt19937& rng, const char* name) {
    std::normal_distribution<float> normal(0.f, 1.f);
    const int best = peft4j::best_isa();
    const int dt = sizeof(T) == 4 ? peft4j::DT_F32 : peft4j::DT_BF16;
    const int64_t K = 67;
    const int64_t Ns[3] = {130, 33, 64};
    std::vector<std::vector<T>> W(3), A(3), B(3);
    const int32_t ranks[3] = {4, 0, 9};
    std::vector<int64_t> h(3);
    for (int g = 0; g < 3; g++) {
        W[g].resize(Ns[g] * K);
        for (auto& v : W[g]) put(&v, 0, normal(rng));
        h[g] = peft4j_adapted_linear_create(dt, W[g].data(), nullptr, K, Ns[g]);
        if (ranks[g] > 0) {
            A[g].resize(ranks[g] * K);
            B[g].resize(Ns[g] * ranks[g]);
            for (auto& v : A[g]) put(&v, 0, normal(rng));
            for (auto& v : B[g]) put(&v, 0, normal(rng));
            const int64_t ap = (int64_t) (intptr_t) A[g].data(), bp = (int64_t) (intptr_t) B[g].data();
            const float sc = 0.5f;
            peft4j_adapted_linear_set_adapters(h[g], 1, &ap, &bp, &ranks[g], &sc);
        }
    }
    // a fused gate_up of 2·I outputs for the one-handle form of gated_linear
    const int64_t I = 40;
    std::vector<T> GU(2 * I * K);
    for (auto& v : GU) put(&v, 0, normal(rng));
    const int64_t hgu = peft4j_adapted_linear_create(dt, GU.data(), nullptr, K, 2 * I);
    for (int64_t M : {1, 3, 5, 16}) {
        std::vector<T> x(M * K);
        for (auto& v : x) put(&v, 0, normal(rng));
        for (int isa = peft4j::ISA_SCALAR; isa <= best; isa++) {
            peft4j::set_active_isa(isa);
            for (int threads : {1, 2}) {
                std::vector<std::vector<T>> sep(3), grp(3);
                int64_t ys[3];
                for (int g = 0; g < 3; g++) {
                    sep[g].resize(M * Ns[g]);
                    grp[g].resize(M * Ns[g]);
                    peft4j_adapted_linear_forward(h[g], sep[g].data(), x.data(), M, threads, nullptr);
                    ys[g] = (int64_t) (intptr_t) grp[g].data();
                }
                peft4j_adapted_linear_forward_group(3, h.data(), ys, x.data(), M, threads);
                for (int g = 0; g < 3; g++)
                    DCHECK(std::memcmp(sep[g].data(), grp[g].data(), sizeof(T) * M * Ns[g]) == 0,
                           "%s group layer %d %s M=%lld threads=%d differs from its own forward", name, g,
                           peft4j::isa_name(isa), (long long) M, threads);
                // gated, two handles (layers 2 and 0 have different N: use 0 and a twin of it as gate / up)
                std::vector<T> gated(M * Ns[0]), want(M * Ns[0]);
                peft4j_gated_linear(h[0], h[0], gated.data(), x.data(), M, peft4j::ACT_SILU, threads);
                for (int64_t m = 0; m < M; m++)
                    peft4j_act_mul(dt, peft4j::ACT_SILU, want.data() + m * Ns[0], sep[0].data() + m * Ns[0],
                                   sep[0].data() + m * Ns[0], Ns[0]);
                DCHECK(std::memcmp(gated.data(), want.data(), sizeof(T) * M * Ns[0]) == 0,
                       "%s gated_linear (gate, up) %s M=%lld threads=%d differs from the separate ops", name,
                       peft4j::isa_name(isa), (long long) M, threads);
                // gated, one fused handle: row m's first I outputs are its gate, the next I its up
                std::vector<T> gu(M * 2 * I), fused(M * I), want2(M * I);
                peft4j_adapted_linear_forward(hgu, gu.data(), x.data(), M, threads, nullptr);
                for (int64_t m = 0; m < M; m++)
                    peft4j_act_mul(dt, peft4j::ACT_GELU_TANH, want2.data() + m * I, gu.data() + m * 2 * I,
                                   gu.data() + m * 2 * I + I, I);
                peft4j_gated_linear(hgu, 0, fused.data(), x.data(), M, peft4j::ACT_GELU_TANH, threads);
                DCHECK(std::memcmp(fused.data(), want2.data(), sizeof(T) * M * I) == 0,
                       "%s gated_linear (fused gate_up) %s M=%lld threads=%d differs from the separate ops", name,
                       peft4j::isa_name(isa), (long long) M, threads);
            }
        }
    }
    for (int g = 0; g < 3; g++) peft4j_adapted_linear_destroy(h[g]);
    peft4j_adapted_linear_destroy(hgu);
}

}  // namespace

// Returns the number of failures; prints a summary line.
int run_decode_tests() {
    std::mt19937 rng(99);
    test_norms<float>(rng, 2e-6, "f32");
    test_norms<uint16_t>(rng, 1e-2, "bf16");
    test_rope<float>(rng, 2e-6, "f32");
    test_rope<uint16_t>(rng, 2e-2, "bf16");
    test_partial_rope<float>(rng, 2e-6, "f32");
    test_partial_rope<uint16_t>(rng, 2e-2, "bf16");
    test_attention<float>(rng, 2e-6, "f32");
    test_attention<uint16_t>(rng, 1e-2, "bf16");
    test_rope_attention<float>(rng, "f32");
    test_rope_attention<uint16_t>(rng, "bf16");
    test_act_mul<float>(rng, 4e-6, "f32");
    test_act_mul<uint16_t>(rng, 1.0 / 128, "bf16");
    test_group<float>(rng, "f32");
    test_group<uint16_t>(rng, "bf16");
    peft4j::set_active_isa(-1);
    std::printf("decode kernels: %d checks, %d failed\n", checks, failures);
    return failures;
}
