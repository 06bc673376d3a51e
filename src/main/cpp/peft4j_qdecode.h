// How the quantized products at decode sizes (fewer than 8 activation rows, peft4j_qpanel.h, peft4j_qgroup.h,
// peft4j_qlora.h) split their panels among threads.
//
// At a few rows each panel's bytes are read once, from DRAM, so the product runs at the speed each core streams
// them. Tasks of a few panels handed out in turn give each thread a stream that jumps at every task, and the
// software prefetches running ahead of the kernel fetch the other thread's panels at the end of each. Here every
// thread owns one contiguous range of the units (the panels of a group's members one after another) and walks it
// in address order; a thread whose range runs out splits off the back half of the largest range left and walks
// that forward, so a core slowed by another process still hands its work to the others, and every stolen piece
// streams in order too. The callers form each panel's outputs in one panel_rows call, so their results do not
// depend on the split.
//
// Which split runs: the contiguous ranges, unless PEFT4J_DECODE_SPLIT=tasks (tasks of 4 panels handed out in turn).
// On the 2-core Zen 5 this runs on, quiet, benchmarks/quant/run.sh's decode pass streams an INT4 model's panels at
// 1 row 8 % faster this way (33 against 30 GB/s) and ties or wins at 4 rows and for INT8.
#pragma once

#include "peft4j_threads.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <cstdint>
#include <functional>
#include <memory>

namespace peft4j {

// true: the decode products split their panels in contiguous ranges (unless PEFT4J_DECODE_SPLIT=tasks, read once)
inline bool& decode_split_contiguous() {
    static bool contiguous = [] {
        const char* v = std::getenv("PEFT4J_DECODE_SPLIT");
        return v == nullptr || std::strcmp(v, "tasks") != 0;
    }();
    return contiguous;
}

// Units [0, n) cut into `parts` contiguous ranges, one per thread; each thread takes its range's units from the
// front, in order. A thread whose range is empty takes the back half of the largest range left (front and back
// packed in one 64-bit word, split by CAS) and walks that half forward as its own, so a stolen range still streams
// in address order.
class ContiguousRanges {
  public:
    ContiguousRanges(int64_t n, int parts) : parts_(parts), slot_(new Slot[(size_t) parts]) {
        for (int r = 0; r < parts; r++) {
            const int64_t b = n * r / parts, e = n * (r + 1) / parts;
            slot_[(size_t) r].fb.store(pack(b, e), std::memory_order_relaxed);
        }
    }

    // the next unit for the thread owning range r: its front, else the start of a stolen half; -1 when all are taken
    int64_t next(int r) {
        for (;;) {
            std::atomic<uint64_t>& own = slot_[(size_t) r].fb;
            uint64_t cur = own.load(std::memory_order_relaxed);
            while (front(cur) < back(cur))
                if (own.compare_exchange_weak(cur, pack(front(cur) + 1, back(cur)), std::memory_order_relaxed))
                    return front(cur);
            if (!steal(r)) return -1;
        }
    }

  private:
    static uint64_t pack(int64_t f, int64_t b) { return ((uint64_t) f << 32) | (uint64_t) b; }
    static int64_t front(uint64_t v) { return (int64_t) (v >> 32); }
    static int64_t back(uint64_t v) { return (int64_t) (v & 0xffffffffu); }

    // moves the back half of the largest other range into range r (empty, so only its owner writes it now)
    bool steal(int r) {
        for (;;) {
            int victim = -1;
            int64_t most = 0;
            uint64_t seen = 0;
            for (int v = 0; v < parts_; v++) {
                if (v == r) continue;
                const uint64_t cur = slot_[(size_t) v].fb.load(std::memory_order_relaxed);
                if (back(cur) - front(cur) > most) {
                    most = back(cur) - front(cur);
                    victim = v;
                    seen = cur;
                }
            }
            if (victim < 0) return false;
            const int64_t mid = front(seen) + most / 2;  // the victim keeps [front, mid), at least nothing
            if (slot_[(size_t) victim].fb.compare_exchange_strong(seen, pack(front(seen), mid),
                                                                  std::memory_order_relaxed)) {
                slot_[(size_t) r].fb.store(pack(mid, back(seen)), std::memory_order_relaxed);
                return true;
            }
        }
    }

    struct alignas(64) Slot {
        std::atomic<uint64_t> fb{0};
    };
    int parts_;
    std::unique_ptr<Slot[]> slot_;
};

// Runs first(i) for every i in [0, n_first), then unit(u) for every u in [0, n), on up to `threads` threads: each
// thread takes first tasks from a shared counter until none is left, then walks its own contiguous range of the
// units. n must stay below 2^32.
template <typename F0, typename F>
inline void contiguous_for_after(int64_t n_first, const F0& first, int64_t n, int threads, const F& unit) {
    const int64_t most = std::max<int64_t>(n, n_first);
    if (most <= 0) return;
    const int parts = (int) std::max<int64_t>(1, std::min<int64_t>(threads, most));
    if (parts == 1) {
        for (int64_t i = 0; i < n_first; i++) first(i);
        for (int64_t u = 0; u < n; u++) unit(u);
        return;
    }
    ContiguousRanges ranges(n, parts);
    std::atomic<int64_t> next_first{0};
    const std::function<void(int64_t)> member = [&](int64_t m) {
        for (int64_t i; (i = next_first.fetch_add(1, std::memory_order_relaxed)) < n_first;) first(i);
        for (int64_t u; (u = ranges.next((int) m)) >= 0;) unit(u);
    };
    ThreadPool::instance().parallel_for(parts, parts, member);
}

// Runs unit(u) for every u in [0, n) on up to `threads` threads, each walking its own contiguous range first.
template <typename F>
inline void contiguous_for(int64_t n, int threads, const F& unit) {
    contiguous_for_after(0, [](int64_t) {}, n, threads, unit);
}

}  // namespace peft4j
