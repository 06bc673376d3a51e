// Where the kernels' parallel loops run: parallel_for(n, fn) runs fn(i) for i in [0, n) on the caller plus
// (threads - 1) helpers, tasks handed out one at a time.
//
// The helpers are libtorch's own OpenMP team when its runtime (libgomp, loaded by the PyTorch presets before
// any kernel runs) is in the process: a layer's kernel runs between libtorch's GEMMs, and by default libgomp's
// threads spin for a while after each of them; a second pool's worker then has to share a core with a spinning
// OpenMP thread (on 2 cores: 3 runnable threads), and LoraDeltaBench's paired bf16 prefill ratios, default
// environment, come out higher on our own pool than on libtorch's team (PEFT4J_POOL=own to compare). Handing
// the loop to the same team (GOMP_parallel, resolved at run time: libtorch ships no headers and this library
// does not link OpenMP itself) lets those spinning threads pick it up at once.
//
// Without libgomp in the process (the native test) or with PEFT4J_POOL=own, a small persistent pool of our own:
// workers sleep on a condition variable between calls; one parallel region at a time, callers serialise.
#pragma once

#include <dlfcn.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <cstdlib>
#include <cstring>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace peft4j {

class ThreadPool {
  public:
    static ThreadPool& instance() {
        static ThreadPool pool;
        return pool;
    }

    // Runs fn(task) for task in [0, n_tasks) using up to `threads` threads (the caller included).
    void parallel_for(int64_t n_tasks, int threads, const std::function<void(int64_t)>& fn) {
        if (n_tasks <= 0) return;
        if (threads <= 1 || n_tasks == 1) {
            for (int64_t i = 0; i < n_tasks; i++) fn(i);
            return;
        }
        if (omp_parallel_) {
            OmpLoop loop{&fn, n_tasks, {0}};
            omp_parallel_(&OmpLoop::run, &loop, (unsigned) std::min<int64_t>(threads, n_tasks), 0u);
            return;
        }
        std::lock_guard<std::mutex> region(region_mutex_);
        ensure_workers(threads - 1);
        int helpers = (int) std::min<int64_t>(threads - 1, n_tasks - 1);
        {
            std::lock_guard<std::mutex> lk(mutex_);
            fn_ = &fn;
            n_tasks_ = n_tasks;
            next_.store(0, std::memory_order_relaxed);
            active_helpers_ = helpers;
            pending_ = helpers;
            generation_++;
        }
        cv_.notify_all();
        run_tasks();
        std::unique_lock<std::mutex> lk(mutex_);
        done_cv_.wait(lk, [this] { return pending_ == 0; });
        fn_ = nullptr;
    }

    ~ThreadPool() {
        {
            std::lock_guard<std::mutex> lk(mutex_);
            stop_ = true;
            generation_++;
        }
        cv_.notify_all();
        for (auto& t : workers_) t.join();
    }

    // A loop of one phase: n tasks, fn(i) for each.
    struct Phase {
        int64_t n;
        const std::function<void(int64_t)>* fn;
    };

    // Runs the phases in order in one parallel region: phase p + 1's tasks start once every task of phase p has
    // finished. A thread out of phase-p tasks spins (a few µs: until the last one running completes) instead of
    // the region ending and a new one starting: each region's fork and join wake the helpers, which with
    // OMP_WAIT_POLICY=passive sleep in between (DecodeBench's hollow bf16 step, all wake-ups: 10.2 ms passive,
    // 2.2 ms with a short spin), and the join waits for a helper even when it got no task. A helper that wakes
    // late finds the early phases done and joins the current one.
    void parallel_phases(int threads, std::initializer_list<Phase> phases) {
        struct State {
            std::atomic<int64_t> next{0}, done{0};
        };
        const size_t np = phases.size();
        std::unique_ptr<State[]> st(new State[np]);
        const Phase* ph = phases.begin();
        const std::function<void(int64_t)> member = [&](int64_t) {
            for (size_t p = 0; p < np; p++) {
                for (;;) {
                    const int64_t i = st[p].next.fetch_add(1, std::memory_order_relaxed);
                    if (i >= ph[p].n) break;
                    (*ph[p].fn)(i);
                    st[p].done.fetch_add(1, std::memory_order_release);
                }
                while (st[p].done.load(std::memory_order_acquire) < ph[p].n) cpu_relax();
            }
        };
        int64_t most = 0;
        for (const Phase& q : phases) most = std::max(most, q.n);
        const int members = (int) std::min<int64_t>(threads, std::max<int64_t>(1, most));
        parallel_for(members, members, member);
    }

    // "openmp" when the loops run on libtorch's OpenMP team, "own" on this pool's threads
    const char* kind() const { return omp_parallel_ ? "openmp" : "own"; }

    // a spin-wait's pause
    static void cpu_relax() {
#if defined(__x86_64__)
        _mm_pause();
#else
        std::this_thread::yield();
#endif
    }

  private:
    using GompParallel = void (*)(void (*)(void*), void*, unsigned, unsigned);

    struct OmpLoop {
        const std::function<void(int64_t)>* fn;
        int64_t n;
        std::atomic<int64_t> next;
        static void run(void* p) {
            auto* l = (OmpLoop*) p;
            for (;;) {
                int64_t i = l->next.fetch_add(1, std::memory_order_relaxed);
                if (i >= l->n) break;
                (*l->fn)(i);
            }
        }
    };

    ThreadPool() {
        const char* mode = std::getenv("PEFT4J_POOL");
        if (mode != nullptr && std::strcmp(mode, "own") == 0) return;
        // RTLD_NOLOAD: only a libgomp already in the process (libtorch's); never load one of our own
        if (void* h = dlopen("libgomp.so.1", RTLD_NOW | RTLD_NOLOAD)) omp_parallel_ = (GompParallel) dlsym(h, "GOMP_parallel");
    }

    GompParallel omp_parallel_ = nullptr;

    void ensure_workers(int n) {
        while ((int) workers_.size() < n) {
            int id = (int) workers_.size();
            workers_.emplace_back([this, id] { worker_loop(id); });
        }
    }

    void run_tasks() {
        for (;;) {
            int64_t i = next_.fetch_add(1, std::memory_order_relaxed);
            if (i >= n_tasks_) break;
            (*fn_)(i);
        }
    }

    void worker_loop(int id) {
        uint64_t seen = 0;
        for (;;) {
            {
                std::unique_lock<std::mutex> lk(mutex_);
                cv_.wait(lk, [&] { return stop_ || generation_ != seen; });
                if (stop_) return;
                seen = generation_;
                if (id >= active_helpers_) continue;  // not needed for this region
            }
            run_tasks();
            {
                std::lock_guard<std::mutex> lk(mutex_);
                if (--pending_ == 0) done_cv_.notify_one();
            }
        }
    }

    std::mutex region_mutex_;
    std::mutex mutex_;
    std::condition_variable cv_;
    std::condition_variable done_cv_;
    std::vector<std::thread> workers_;
    const std::function<void(int64_t)>* fn_ = nullptr;
    int64_t n_tasks_ = 0;
    std::atomic<int64_t> next_{0};
    int active_helpers_ = 0;
    int pending_ = 0;
    uint64_t generation_ = 0;
    bool stop_ = false;
};

}  // namespace peft4j
