// The SGD and Adam update of a run of parameters, element by element, shared by the dense step
// (optim_update.cpp: one fused pass per parameter tensor) and the row-sparse step of embedding
// tables (embedding_update.cpp: one call per touched row).
//
// The arithmetic follows the numpy formulation of pyneural/optim/sgd.py and adam.py operation by
// operation in float32, every constant rounded from its double expression as numpy rounds a Python
// float, so the fused step gives the same bits as the numpy one (which float64 parameters and
// non-dense layouts still take). The files that include this are compiled for the baseline ISA,
// which has no FMA instruction the compiler could contract a * b + c into.
#pragma once
#include <cmath>
#include <cstdint>

namespace pn {

struct SgdStep {
  float neg_lr, keep, weight_decay, momentum;
  bool damped, nesterov;
  SgdStep(double lr, double weight_decay_, double momentum_, double dampening, bool nesterov_)
      : neg_lr(static_cast<float>(-lr)), keep(static_cast<float>(1.0 - dampening)),
        weight_decay(static_cast<float>(weight_decay_)), momentum(static_cast<float>(momentum_)),
        damped(dampening != 0.0), nesterov(nesterov_) {}
};

// p[0:n] -= lr * step(g) with the momentum buffer b (null without momentum). first: the buffer's
// first step, which (as in PyTorch) starts it at the gradient itself instead of momentum * 0 + g.
// Each combination of the options is its own branch-free loop, so every one vectorises.
template <bool kDecay, bool kMomentum, bool kFirst, bool kDamped, bool kNesterov>
inline void sgd_loop(const SgdStep& k, float* __restrict p, const float* __restrict g, float* __restrict b,
                     int64_t n) {
#pragma omp simd
  for (int64_t d = 0; d < n; ++d) {
    float gd = g[d];
    if constexpr (kDecay) gd = p[d] * k.weight_decay + gd;
    if constexpr (kMomentum) {
      float bd;
      if constexpr (kFirst) {
        bd = gd;
      } else {
        bd = b[d] * k.momentum + (kDamped ? gd * k.keep : gd);
      }
      b[d] = bd;
      gd = kNesterov ? bd * k.momentum + gd : bd;
    }
    p[d] += gd * k.neg_lr;
  }
}

// Turns the run-time options into sgd_loop's template arguments, one at a time.
template <bool... kFixed, typename... Rest>
inline void sgd_dispatch(const SgdStep& k, float* p, const float* g, float* b, int64_t n, bool next, Rest... rest) {
  if (next) {
    if constexpr (sizeof...(Rest) == 0) sgd_loop<kFixed..., true>(k, p, g, b, n);
    else sgd_dispatch<kFixed..., true>(k, p, g, b, n, rest...);
  } else {
    if constexpr (sizeof...(Rest) == 0) sgd_loop<kFixed..., false>(k, p, g, b, n);
    else sgd_dispatch<kFixed..., false>(k, p, g, b, n, rest...);
  }
}

inline void sgd_span(const SgdStep& k, float* p, const float* g, float* b, int64_t n, bool first) {
  const bool momentum = b != nullptr;
  sgd_dispatch(k, p, g, b, n, k.weight_decay != 0.0f, momentum, momentum && first, momentum && k.damped,
               momentum && k.nesterov);
}

struct AdamStep {
  float neg_step_size, sqrt_bc2, beta1, beta2, eps, one_b1, one_b2, l2, shrink;
  bool decay_first;  // decoupled weight decay: p *= 1 - lr * wd before the step (AdamW)
  // bc1 = 1 - beta1^t, bc2 = 1 - beta2^t at the step t (>= 1) being taken.
  AdamStep(double lr, double beta1_, double beta2_, double eps_, double weight_decay, bool decoupled, double bc1,
           double bc2)
      : neg_step_size(-static_cast<float>(lr / bc1)), sqrt_bc2(static_cast<float>(std::sqrt(bc2))),
        beta1(static_cast<float>(beta1_)), beta2(static_cast<float>(beta2_)), eps(static_cast<float>(eps_)),
        one_b1(static_cast<float>(1.0 - beta1_)), one_b2(static_cast<float>(1.0 - beta2_)),
        l2(decoupled ? 0.0f : static_cast<float>(weight_decay)),
        shrink(static_cast<float>(1.0 - lr * weight_decay)), decay_first(decoupled && weight_decay != 0.0) {}
};

inline void adam_span(const AdamStep& k, float* __restrict p, const float* __restrict g, float* __restrict m,
                      float* __restrict v, int64_t n) {
  if (k.decay_first)
    for (int64_t d = 0; d < n; ++d) p[d] *= k.shrink;
#pragma omp simd
  for (int64_t d = 0; d < n; ++d) {
    const float gd = k.l2 != 0.0f ? p[d] * k.l2 + g[d] : g[d];
    const float md = m[d] * k.beta1 + gd * k.one_b1;
    const float vd = v[d] * k.beta2 + (gd * gd) * k.one_b2;
    m[d] = md;
    v[d] = vd;
    p[d] += k.neg_step_size * (md / (std::sqrt(vd) / k.sqrt_bc2 + k.eps));
  }
}

// The dense steps (optim_update.cpp): every element of a parameter tensor of n elements, its
// gradient and state in the same memory order, threads taking contiguous chunks.
void sgd_update(float* param, const float* grad, float* buf, int64_t n, const SgdStep& k, bool first);
void adam_update(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t n, const AdamStep& k);

}  // namespace pn
