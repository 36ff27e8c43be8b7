// How many OpenMP threads a kernel's parallel region gets, on a machine others may be using.
//
// Why: a parallel region ends when its last thread arrives. When another process holds one of the
// two cores, the helper thread woken for a region waits for that core (up to a scheduler slice,
// milliseconds) before it even starts, and the thread that started the region waits for it at the
// closing barrier; a kernel of 50 us then takes a few ms, and 2 threads run a training step
// several times slower than 1 (bench/NOTES.md, "Busy machine"). Dynamic worksharing (the kernels'
// loops deal chunks, so an arriving thread takes what is left) cannot help a thread that never
// arrives, so the team itself shrinks while helpers arrive late:
//
//   - the regions that carry most of the work (GEMM, convolution tasks) time each helper's arrival
//     from the moment the region starts, and how long the starting thread waits at the region's
//     end for the others once its own share is done (RegionClock: a steady_clock read per thread);
//   - the region is *late* when that lost time (arrival delay + end wait) is over kLateNs (200 us;
//     a futex wake-up on an idle core takes ~5-50 us) and over a quarter of the region's wall time,
//     i.e. when the second thread bought less than about 1.5x. The second condition keeps long
//     regions from counting: on a virtual machine a core is taken away for 0.2-2 ms a few times a
//     second (the hypervisor's own work), and half of the 15 ms GEMMs of 1024^3 had an end wait
//     over 200 us on a quiet machine, which alone shrank every region to one thread (training
//     0.55x torch instead of 0.91x; bench/NOTES.md, "Busy machine", section 5); the last 16 timed
//     regions are kept as bits;
//   - while 3 or more of them are late, team_threads() answers 1, and every kProbeEvery-th
//     region is run with the full team again (a probe); a probe whose helpers arrive on time
//     clears the history (the machine is free again), a late one keeps the team at 1;
//   - a region whose caller expects it to take over kBigRegionNs on one thread (team_threads'
//     argument: a GEMM's flops at a conservative single-core rate) keeps the full team even then.
//     A helper that arrives late there costs at most its delay (the others take over its share),
//     a few percent of such a region, while one thread would give up the whole second core; it
//     counts in the history as any region but never clears it.
//
// And a region too small to pay for its helper runs alone, loaded machine or not. The helper sleeps
// between regions (OMP_WAIT_POLICY=passive, pyneural/_threads.py), and whichever thread reaches the
// closing barrier first sleeps there, so a region pays up to two futex wake-ups: on this project's
// 2-vCPU virtual machines an empty 2-thread region took 70-80 us once the helper had gone to sleep
// (0.6 us with spinning helpers), the MLP's 32 x 512 x 512 GEMM (157 us on one thread) took 131-194
// us on two, and a whole MLP training step was slower on two threads than on one. The timed regions
// keep an estimate of that cost, the handoff: twice the helper's arrival delay (a wake-up at the
// start, and typically one at the end; the starting thread's wait at the end is not used, it also
// holds whatever work the helper still had), averaged over recent regions, each sample clamped so
// one hypervisor hiccup does not swamp it, and the estimate capped at kBigRegionNs / kWorthHandoff,
// so a big region always keeps its team and goes on measuring. team_threads(work) answers 1 when a
// region's estimated single-thread work is under kWorthHandoff handoffs: two threads take about half
// the work plus a handoff, so they win from about 2 handoffs of real work, and the estimates
// (flops_ns) are conservative, 2-3x the real time.
//
// And before any helper is late: the kernel says how many threads are runnable (Linux,
// /proc/loadavg, read at most every kLoadSampleNs by the thread starting a region, whose helpers
// sleep between regions, so what it counts beyond itself runs elsewhere: another process, another
// MPI rank, another Python thread; where the helpers spin instead, pyneural/_threads.py turns the
// rule off). Averaged over the last few samples, that many cores are taken,
// and a region gets at most the cores left (at least one): with a busy process on one of two
// cores, one thread, where two would each wait in turn for a time slice (the MLP's 512 x 512 x 512
// GEMMs, 2 ms regions that the late rule lets keep the team, ran at 0.90x one thread: bench/NOTES.md).
//
// Nothing here decides how work is *partitioned*: kernels plan their chunks from the nominal
// thread count (omp_get_max_threads) and only run them on team_threads() threads, with dynamic
// schedules, so results are the same bits whatever team ran them.
//
// State is process-wide and updated with relaxed atomics (Python threads may call kernels at once;
// a lost update only delays the switch by a region).
#pragma once

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>

namespace pn {

namespace team_detail {

constexpr int64_t kLateNs = 200000;
constexpr int kLateFractionInverse = 4;       // late: lost time over a quarter of the region (and kLateNs)
constexpr double kBigRegionNs = 2.0e6;        // regions this long on one thread always get the team
constexpr double kNsPerFlop = 1.0 / 40.0;     // conservative single-core fp32 rate: 40 GFLOP/s
constexpr int kLateToShrink = 3;    // late regions among the last 16 that make the team shrink
constexpr uint32_t kProbeEvery = 32;  // while shrunk, every 32nd region tries the full team

constexpr int64_t kInitialHandoffNs = 20000;  // the handoff estimate before any region was timed
constexpr double kWorthHandoff = 10.0;        // a region worth fewer (estimated) handoffs runs alone

inline std::atomic<uint32_t> late_history{0};   // bit i: the i-th most recent timed region was late
inline std::atomic<int64_t> handoff_ns{kInitialHandoffNs};  // what a helper costs a timed region (see above)
inline std::atomic<uint32_t> shrunk_regions{0};  // regions run on one thread since the last probe
inline std::atomic<bool> adaptive{true};

// The load rule (see above): busy_x16 is the average of runnable threads elsewhere, in 1/16ths,
// moved half way to each sample (5 ms apart at most), so a core counts as taken from the second
// sample that finds a thread running there (~10 ms: a neighbour that starts mid-run costs one or
// two regions) and a thread seen once (a kernel worker, a logger) does not count. A read costs ~5 us.
constexpr int64_t kLoadSampleNs = 5000000;
inline std::atomic<int64_t> next_load_sample_ns{0};
inline std::atomic<int> busy_x16{0};
inline std::atomic<bool> load_sampling{true};

int read_runnable_threads();  // cpu_load.cpp: /proc/loadavg's runnable count, -1 where unknown

inline void record_load_sample(int runnable) {
  if (runnable < 1) return;
  const int x16 = busy_x16.load(std::memory_order_relaxed), step = (runnable - 1) * 16 - x16;
  busy_x16.store(x16 + (step + (step > 0 ? 1 : -1)) / 2, std::memory_order_relaxed);  // half way, rounded
}

inline int busy_cores() { return (busy_x16.load(std::memory_order_relaxed) + 4) / 16; }

inline int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// A region that lost `lost_ns` of thread time to a late helper (arrival delay + end wait) in
// `wall_ns`: late when the second thread bought less than about 1.5x (see above).
inline bool region_late(int64_t lost_ns, int64_t wall_ns) {
  return lost_ns > kLateNs && lost_ns * kLateFractionInverse > wall_ns;
}

inline bool loaded() { return __builtin_popcount(late_history.load(std::memory_order_relaxed)) >= kLateToShrink; }

// Book one full-team region into the history. A probe (full team while shrunk) whose helpers came
// on time: the machine is free again. A big region runs on the full team anyway, so its being on
// time says nothing about small ones.
inline void record_region(bool late, double work_ns) {
  if (!late && loaded() && work_ns < kBigRegionNs) return late_history.store(0, std::memory_order_relaxed);
  const uint32_t history = late_history.load(std::memory_order_relaxed);
  late_history.store((history << 1 | (late ? 1u : 0u)) & 0xffffu, std::memory_order_relaxed);
}

// Fold one timed region's handoff (2x its helper's arrival delay) into the estimate: an average
// over about the last 8 regions, each sample clamped to 4x the estimate (+ 20 us) so that a helper
// descheduled for milliseconds once moves it by a step, not by the whole delay, and the estimate
// capped (see above).
inline void record_handoff(int64_t handoff) {
  constexpr int64_t kMaxHandoffNs = static_cast<int64_t>(kBigRegionNs / kWorthHandoff);
  const int64_t est = handoff_ns.load(std::memory_order_relaxed);
  const int64_t sample = std::min<int64_t>(std::max<int64_t>(handoff, 0), 4 * est + 20000);
  handoff_ns.store(std::min(kMaxHandoffNs, est + (sample - est) / 8), std::memory_order_relaxed);
}

}  // namespace team_detail

// Threads for the next parallel region started by this thread: omp_get_max_threads(), or 1 while
// helpers have been arriving late (see above). Inside a parallel region: 1. `work_ns`: how long the
// region would take on one thread, where the caller can estimate it (flops * kNsPerFlop); 0 when
// unknown or small.
inline int team_threads(double work_ns = 0) {
  using namespace team_detail;
  int wanted = omp_get_level() > 0 ? 1 : omp_get_max_threads();
  if (wanted == 1 || !adaptive.load(std::memory_order_relaxed)) return wanted;
  if (work_ns > 0 && work_ns < kWorthHandoff * static_cast<double>(handoff_ns.load(std::memory_order_relaxed)))
    return 1;
  if (load_sampling.load(std::memory_order_relaxed)) {
    const int64_t now = now_ns();
    if (now >= next_load_sample_ns.load(std::memory_order_relaxed)) {
      next_load_sample_ns.store(now + kLoadSampleNs, std::memory_order_relaxed);
      record_load_sample(read_runnable_threads());
    }
    wanted = std::min(wanted, std::max(1, omp_get_num_procs() - busy_cores()));
    if (wanted == 1) return 1;
  }
  if (!loaded() || work_ns >= kBigRegionNs) return wanted;
  if (shrunk_regions.fetch_add(1, std::memory_order_relaxed) + 1 < kProbeEvery) return 1;
  shrunk_regions.store(0, std::memory_order_relaxed);
  return wanted;  // a probe
}

// The expected single-thread time of `flops` floating-point operations, for team_threads().
inline double flops_ns(double flops) { return flops * team_detail::kNsPerFlop; }

// The same for a pass that streams `elements` floats through (an elementwise kernel, a norm, a
// pool, an optimizer step): ~0.5 ns each, a read and a write at ~16 GB/s on one core.
inline double elements_ns(double elements) { return elements * 0.5; }

// The team of an elementwise region over `elements` floats: one thread below the kernel's own
// `min_parallel` (where even a spinning helper costs more than it saves), else team_threads.
inline int elements_team(int64_t elements, int64_t min_parallel) {
  return elements >= min_parallel ? team_threads(elements_ns(static_cast<double>(elements))) : 1;
}

// Times one parallel region's helpers: construct before the region, call arrived() first thing in
// every thread of it and done() when the thread's share is done (before the closing barrier),
// finish() after it, with the work_ns given to team_threads().
class RegionClock {
 public:
  RegionClock() : start_(team_detail::now_ns()), master_done_(start_) {}
  void arrived() {
    if (omp_get_thread_num() == 0) return;
    const int64_t delay = team_detail::now_ns() - start_;
    int64_t seen = worst_.load(std::memory_order_relaxed);
    while (delay > seen && !worst_.compare_exchange_weak(seen, delay, std::memory_order_relaxed)) {
    }
  }
  void done() {
    if (omp_get_thread_num() == 0) master_done_ = team_detail::now_ns();
  }
  void finish(int team, double work_ns = 0) const {
    using namespace team_detail;
    if (team <= 1) return;
    const int64_t end = now_ns();
    const int64_t arrival = worst_.load(std::memory_order_relaxed), lost = arrival + (end - master_done_);
    record_handoff(2 * arrival);
    record_region(region_late(lost, end - start_), work_ns);
  }

 private:
  int64_t start_;
  int64_t master_done_;  // written by thread 0 only, read after the region's barrier
  std::atomic<int64_t> worst_{0};
};

// Work stealing over a fixed partition: `units` (e.g. GEMM column slivers) are cut into
// `threads` contiguous ranges, one per thread of the team. Each thread takes its own range front
// to back in chunks of about a half of it (so on a quiet machine every thread works on the same
// columns as in every other call, which its caches keep); a thread whose range is empty takes
// chunks from the back of the range with the most left (a helper slowed by another process on its
// core hands the rest of its range over). Each range is one 64-bit word, front in the low half and
// back in the high half, updated by compare-and-swap.
class StealingRanges {
 public:
  static constexpr int kMaxThreads = 64;

  StealingRanges(int64_t units, int threads) : threads_(threads < kMaxThreads ? threads : kMaxThreads) {
    for (int t = 0; t < threads_; ++t) {
      const int64_t begin = units * t / threads_, end = units * (t + 1) / threads_;
      ranges_[t].span.store(pack(begin, end), std::memory_order_relaxed);
      ranges_[t].chunk = (end - begin + 1) / 2 > 0 ? (end - begin + 1) / 2 : 1;
    }
  }

  // The next chunk [begin, end) for thread `t`; false when no work is left anywhere.
  bool next(int t, int64_t& begin, int64_t& end) {
    if (t < threads_ && take_front(t, begin, end)) return true;
    for (;;) {
      int victim = -1;
      int64_t most = 0;
      for (int v = 0; v < threads_; ++v) {
        const uint64_t s = ranges_[v].span.load(std::memory_order_acquire);
        if (high(s) - low(s) > most) most = high(s) - low(s), victim = v;
      }
      if (victim < 0) return false;
      if (take_back(victim, begin, end)) return true;
    }
  }

 private:
  struct alignas(64) Range {
    std::atomic<uint64_t> span{0};
    int64_t chunk = 1;
  };
  static uint64_t pack(int64_t front, int64_t back) { return uint64_t(back) << 32 | uint64_t(front); }
  static int64_t low(uint64_t s) { return int64_t(s & 0xffffffffu); }
  static int64_t high(uint64_t s) { return int64_t(s >> 32); }

  bool take_front(int t, int64_t& begin, int64_t& end) {
    uint64_t s = ranges_[t].span.load(std::memory_order_acquire);
    for (;;) {
      const int64_t f = low(s), b = high(s);
      if (f >= b) return false;
      const int64_t n = ranges_[t].chunk < b - f ? ranges_[t].chunk : b - f;
      if (ranges_[t].span.compare_exchange_weak(s, pack(f + n, b), std::memory_order_acq_rel)) {
        begin = f, end = f + n;
        return true;
      }
    }
  }
  bool take_back(int v, int64_t& begin, int64_t& end) {
    uint64_t s = ranges_[v].span.load(std::memory_order_acquire);
    for (;;) {
      const int64_t f = low(s), b = high(s);
      if (f >= b) return false;
      const int64_t n = ranges_[v].chunk < b - f ? ranges_[v].chunk : b - f;
      if (ranges_[v].span.compare_exchange_weak(s, pack(f, b - n), std::memory_order_acq_rel)) {
        begin = b - n, end = b;
        return true;
      }
    }
  }

  int threads_;
  Range ranges_[kMaxThreads];
};

// For tests and benchmarks: turn the shrinking off (the team is always omp_get_max_threads()) or
// on, and read or set the late-region history.
inline void set_team_adaptive(bool on) { team_detail::adaptive.store(on, std::memory_order_relaxed); }
inline bool team_adaptive() { return team_detail::adaptive.load(std::memory_order_relaxed); }
inline uint32_t team_late_history() { return team_detail::late_history.load(std::memory_order_relaxed); }
inline int64_t team_handoff_ns() { return team_detail::handoff_ns.load(std::memory_order_relaxed); }
inline void set_team_handoff_ns(int64_t ns) { team_detail::handoff_ns.store(ns, std::memory_order_relaxed); }
inline void set_team_load_sampling(bool on) {
  team_detail::load_sampling.store(on, std::memory_order_relaxed);
  team_detail::busy_x16.store(0, std::memory_order_relaxed);
  team_detail::next_load_sample_ns.store(0, std::memory_order_relaxed);
}
inline bool team_load_sampling() { return team_detail::load_sampling.load(std::memory_order_relaxed); }
inline double team_busy_cores() { return team_detail::busy_x16.load(std::memory_order_relaxed) / 16.0; }
inline void set_team_late_history(uint32_t bits) {
  team_detail::late_history.store(bits & 0xffffu, std::memory_order_relaxed);
  team_detail::shrunk_regions.store(0, std::memory_order_relaxed);
}

}  // namespace pn
