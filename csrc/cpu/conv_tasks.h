// Shared by the NCHW (conv.cpp) and NHWC (conv_nhwc.cpp) convolutions: how work is dealt to the
// threads and the tap arithmetic of the forward and of backward-data's stride phases.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <vector>

#include "cpu/conv.h"
#include "cpu/parallel_team.h"

namespace pn {

// Tasks can be dealt to the threads whole when there are enough of them to come out even.
inline bool tasks_balance(int64_t tasks, int threads) {
  return threads == 1 || (tasks >= threads && (tasks % threads == 0 || tasks >= 4 * threads));
}

// Runs body(task, thread) for every task on the OpenMP threads. An exception (bad_alloc in a pack
// buffer) must not leave the parallel region: the first one is carried out and rethrown. Tasks go
// out dynamically to a team that shrinks while helpers arrive late (parallel_team.h): a task's
// result does not depend on the thread that runs it. `flops`: the work of all tasks, where known
// (a big region keeps its full team: parallel_team.h).
template <typename Body>
void parallel_tasks(int64_t tasks, Body&& body, double flops = 0) {
  std::exception_ptr error;
  const double work_ns = flops_ns(flops);
  const int team = team_threads(work_ns);
  RegionClock clock;
#pragma omp parallel num_threads(team)
  {
    clock.arrived();
#pragma omp for schedule(dynamic, 1) nowait
    for (int64_t task = 0; task < tasks; ++task) {
      try {
        body(task, omp_get_thread_num());
      } catch (...) {
#pragma omp critical(pn_conv_error)
        if (!error) error = std::current_exception();
      }
    }
    clock.done();
  }
  clock.finish(team, work_ns);
  if (error) std::rethrow_exception(error);
}

// Backward-weight split over `slices` slices of the batch per group: dw holds slice 0 of each
// group's `block` weights, partial the others ((groups x (slices - 1)) blocks, group-major). Adds
// them into dw in slice order, so the result does not depend on the threads.
inline void add_partial_dw(float* dw, const float* partial, int64_t groups, int64_t block, int64_t slices) {
#pragma omp parallel for num_threads(team_threads(elements_ns(double(groups * block * slices)))) schedule(static)
  for (int64_t i = 0; i < groups * block; ++i) {
    const int64_t g = i / block, e = i % block;
    float sum = dw[i];
    for (int64_t slice = 1; slice < slices; ++slice) sum += partial[(g * (slices - 1) + slice - 1) * block + e];
    dw[i] = sum;
  }
}

// Input offsets of the forward taps: kernel index k reads input position o*stride + k*dil - pad.
inline std::vector<int64_t> forward_taps(int64_t k, int64_t dil, int64_t pad) {
  std::vector<int64_t> off(k);
  for (int64_t i = 0; i < k; ++i) off[i] = i * dil - pad;
  return off;
}

// Backward-data's stride phase r (input positions r + stride*a): the kernel indices whose input
// offset lands on it, and the dy offset each reads from (dy position a + offset).
inline void phase_taps(int64_t r, int64_t stride, int64_t pad, int64_t dil, int64_t k, std::vector<int64_t>& taps,
                       std::vector<int64_t>& offsets) {
  for (int64_t i = 0; i < k; ++i) {
    const int64_t shift = r + pad - i * dil;  // = stride * (oh - a)
    const int64_t rem = ((shift % stride) + stride) % stride;
    if (rem != 0) continue;
    taps.push_back(i);
    offsets.push_back((shift - rem) / stride);
  }
}

// Backward-data's weight for one stride phase, W_phase^T: per group a (C/g) x (Co/g * T) matrix
// whose row c holds w[g*Co/g + co, c, th[i], tw[j]] for the phase's T = |th| * |tw| taps, at column
// co*T + t (t = i*|tw| + j), or t*Co/g + co with `taps_major`. It is a transpose of the
// (Co/g x C/g) matrix of kh*kw-weight blocks: read in w's order, each output channel's row of C/g
// blocks is contiguous, but consecutive c of one row of the result are Co/g blocks apart in w
// (18 KiB for 512 channels), so a plain loop misses cache on every element (8 ms for the 2.4M
// weights of a 512 -> 512 3x3 layer, a third of that layer's backward-data at 7x7). Copied in
// kBlock x kBlock tiles of (co, c): a tile reads kBlock runs of kBlock*kh*kw consecutive weights
// and writes kBlock runs of kBlock*T, whole cache lines on both sides; the tiles' rows of c go
// out to the threads when there are enough of them.
template <typename T>
void transpose_phase_weight(const Conv2dShape& s, const T* w, const std::vector<int64_t>& th,
                            const std::vector<int64_t>& tw, bool taps_major, T* wt) {
  constexpr int64_t kBlock = 8;
  const int64_t Cg = s.Cg(), Cog = s.Cog(), ntw = static_cast<int64_t>(tw.size());
  const int64_t taps = static_cast<int64_t>(th.size()) * ntw, K = Cog * taps, KK = s.kh * s.kw;
  if (taps == 0) return;
  std::vector<int64_t> src(taps);  // tap t's offset inside a kh*kw block
  for (int64_t t = 0; t < taps; ++t) src[t] = th[t / ntw] * s.kw + tw[t % ntw];
  const int64_t row_blocks = (Cg + kBlock - 1) / kBlock;
  auto rows = [&](int64_t task, int) {
    const int64_t g = task / row_blocks, c0 = task % row_blocks * kBlock, c1 = std::min(Cg, c0 + kBlock);
    for (int64_t co0 = 0; co0 < Cog; co0 += kBlock)
      for (int64_t c = c0; c < c1; ++c) {
        T* out = wt + (g * Cg + c) * K;
        for (int64_t co = co0; co < std::min(Cog, co0 + kBlock); ++co) {
          const T* block = w + ((g * Cog + co) * Cg + c) * KK;
          for (int64_t t = 0; t < taps; ++t) out[taps_major ? t * Cog + co : co * taps + t] = block[src[t]];
        }
      }
  };
  const int64_t tasks = s.groups * row_blocks;
  // A parallel region costs a few microseconds: worth it from about 64K weights.
  if (s.groups * Cg * K < (int64_t{1} << 16) || omp_get_level() > 0) {
    for (int64_t task = 0; task < tasks; ++task) rows(task, 0);
  } else {
    parallel_tasks(tasks, rows);
  }
}

}  // namespace pn
