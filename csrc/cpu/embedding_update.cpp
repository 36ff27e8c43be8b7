// Row-sparse optimizer steps: SGD and lazy Adam applied to the U touched rows of an embedding table.
//
// The rows are distinct (a coalesced row-sparse gradient; the binding checks they ascend), so the
// threads split them with a static schedule and no two threads ever write the same row: no atomics,
// and the result does not depend on the thread count. Each row is a contiguous D-wide loop.
// The arithmetic is the dense step's (optim_step.h), row by row, so SGD without momentum gives the
// same bits as the dense step on the touched rows.
#include <omp.h>

#include <cmath>

#include "cpu/embedding.h"
#include "cpu/optim_step.h"
#include "cpu/parallel_team.h"

namespace pn {

namespace {
constexpr int64_t kParallelMin = 1 << 14;  // elements
// The rows are scattered over tables far larger than L2: ask for the rows a few steps ahead so
// several cache misses are in flight at once (measured ~2x on the Adam step).
constexpr int64_t kPrefetch = 4;

inline void prefetch_row(const float* row, int64_t D) {
  for (int64_t d = 0; d < D; d += 16) __builtin_prefetch(row + d, 1);
}
}

void sparse_sgd_update(float* param, int64_t D, const int64_t* rows, int64_t U, const float* grads, double lr,
                       double weight_decay, double momentum, double dampening, bool nesterov, float* buf) {
  const SgdStep k(lr, weight_decay, momentum, dampening, nesterov);
#pragma omp parallel for num_threads(elements_team(U * D, kParallelMin)) schedule(static)
  for (int64_t u = 0; u < U; ++u) {
    if (u + kPrefetch < U) {
      prefetch_row(param + rows[u + kPrefetch] * D, D);
      if (buf) prefetch_row(buf + rows[u + kPrefetch] * D, D);
    }
    sgd_span(k, param + rows[u] * D, grads + u * D, buf ? buf + rows[u] * D : nullptr, D, false);
  }
}

void sparse_adam_update(float* param, int64_t D, const int64_t* rows, int64_t U, const float* grads, float* exp_avg,
                        float* exp_avg_sq, double lr, double beta1, double beta2, double eps, double weight_decay,
                        bool decoupled, double bc1, double bc2) {
  const AdamStep k(lr, beta1, beta2, eps, weight_decay, decoupled, bc1, bc2);
#pragma omp parallel for num_threads(elements_team(U * D, kParallelMin)) schedule(static)
  for (int64_t u = 0; u < U; ++u) {
    if (u + kPrefetch < U) {
      const int64_t ahead = rows[u + kPrefetch] * D;
      prefetch_row(param + ahead, D);
      prefetch_row(exp_avg + ahead, D);
      prefetch_row(exp_avg_sq + ahead, D);
    }
    const int64_t off = rows[u] * D;
    adam_span(k, param + off, grads + u * D, exp_avg + off, exp_avg_sq + off, D);
  }
}

}  // namespace pn
