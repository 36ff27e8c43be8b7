// Row-sparse optimizer steps: SGD and lazy Adam applied to the U touched rows of an embedding table.
//
// The rows are distinct (a coalesced row-sparse gradient; the binding checks they ascend), so the
// threads split them with a static schedule and no two threads ever write the same row: no atomics,
// and the result does not depend on the thread count. Each row is a contiguous D-wide loop.
// The arithmetic follows the dense numpy optimizers (pyneural/optim/sgd.py, adam.py) operation by
// operation in float32, so SGD without momentum gives the same bits as the dense step on the touched
// rows (this file is compiled without FMA contraction: the portable build has no FMA instructions).
#include <omp.h>

#include <cmath>

#include "cpu/embedding.h"
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
                       double weight_decay_, double momentum_, double dampening, bool nesterov, float* buf) {
  // The constants rounded to float32 from their double expressions, as numpy does with Python floats.
  const float neg_lr = static_cast<float>(-lr), keep = static_cast<float>(1.0 - dampening);
  const float weight_decay = static_cast<float>(weight_decay_), momentum = static_cast<float>(momentum_);
#pragma omp parallel for num_threads(team_threads()) schedule(static) if (U * D >= kParallelMin)
  for (int64_t u = 0; u < U; ++u) {
    if (u + kPrefetch < U) {
      prefetch_row(param + rows[u + kPrefetch] * D, D);
      if (buf) prefetch_row(buf + rows[u + kPrefetch] * D, D);
    }
    float* p = param + rows[u] * D;
    const float* g = grads + u * D;
    float* b = buf ? buf + rows[u] * D : nullptr;
    for (int64_t d = 0; d < D; ++d) {
      float gd = g[d];
      if (weight_decay != 0.0f) gd = p[d] * weight_decay + gd;
      if (b) {
        const float bd = b[d] * momentum + (dampening == 0.0 ? gd : gd * keep);
        b[d] = bd;
        gd = nesterov ? bd * momentum + gd : bd;
      }
      p[d] += gd * neg_lr;
    }
  }
}

void sparse_adam_update(float* param, int64_t D, const int64_t* rows, int64_t U, const float* grads, float* exp_avg,
                        float* exp_avg_sq, double lr, double beta1_, double beta2_, double eps_,
                        double weight_decay_, bool decoupled, double bc1, double bc2) {
  const float step_size = static_cast<float>(lr / bc1), sqrt_bc2 = static_cast<float>(std::sqrt(bc2));
  const float beta1 = static_cast<float>(beta1_), beta2 = static_cast<float>(beta2_), eps = static_cast<float>(eps_);
  const float one_b1 = static_cast<float>(1.0 - beta1_), one_b2 = static_cast<float>(1.0 - beta2_);
  const float weight_decay = static_cast<float>(weight_decay_), shrink = static_cast<float>(1.0 - lr * weight_decay_);
#pragma omp parallel for num_threads(team_threads()) schedule(static) if (U * D >= kParallelMin)
  for (int64_t u = 0; u < U; ++u) {
    if (u + kPrefetch < U) {
      const int64_t ahead = rows[u + kPrefetch] * D;
      prefetch_row(param + ahead, D);
      prefetch_row(exp_avg + ahead, D);
      prefetch_row(exp_avg_sq + ahead, D);
    }
    const int64_t off = rows[u] * D;
    float *p = param + off, *m = exp_avg + off, *v = exp_avg_sq + off;
    const float* g = grads + u * D;
    if (weight_decay != 0.0f && decoupled)
      for (int64_t d = 0; d < D; ++d) p[d] *= shrink;
    const float l2 = decoupled ? 0.0f : weight_decay;
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) {
      const float gd = l2 != 0.0f ? p[d] * l2 + g[d] : g[d];
      const float md = m[d] * beta1 + gd * one_b1;
      const float vd = v[d] * beta2 + (gd * gd) * one_b2;
      m[d] = md;
      v[d] = vd;
      p[d] += -step_size * (md / (std::sqrt(vd) / sqrt_bc2 + eps));
    }
  }
}

}  // namespace pn
