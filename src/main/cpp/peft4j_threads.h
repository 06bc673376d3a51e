// A small persistent thread pool for the kernels: parallel_for(n, fn) runs fn(i) for i in [0, n) on the
// caller plus (threads - 1) workers. Workers sleep on a condition variable between calls (no spinning that
// would steal the cores libtorch's OpenMP pool needs). One parallel region at a time: callers serialise.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
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

  private:
    ThreadPool() = default;

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
