// Shared by the NCHW (conv.cpp) and NHWC (conv_nhwc.cpp) convolutions: how work is dealt to the
// threads and the tap arithmetic of the forward and of backward-data's stride phases.
#pragma once
#include <omp.h>

#include <cstdint>
#include <exception>
#include <vector>

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
#pragma omp parallel for num_threads(team_threads()) schedule(static)
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

}  // namespace pn
