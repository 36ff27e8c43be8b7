// Elementwise kernels, fp32: fill, bias (+ReLU) over a channel axis, ReLU backward, GELU forward
// and backward, broadcasting add / sub / mul, a*x + b*y, and the SGD / Adam parameter updates.
//
// Strategy: these are memory-bound (a few flops per 8-12 bytes moved), so each is a flat
// grid-stride loop, 256 threads per block and at most 32 blocks per SM (enough resident warps to
// cover DRAM latency; the stride loop covers any size with 64-bit indices). Consecutive threads
// touch consecutive elements, so loads and stores coalesce without any vector tricks. Broadcast
// covers the cases the layers need with one rule: b has `bsize` elements and element i of a uses
// b[(i / inner) % bsize] (same shape: inner = 1, bsize = n; scalar: bsize = 1; per-channel of an
// (outer, C, inner) tensor: bsize = C). Optimizer updates fuse the whole step into one pass over
// the parameter, its gradient and its state.
//
// Launch (pyneural/cuda/elementwise.py): block 256, grid min(ceil(n / 256), 32 * SMs).
#include "common.cuh"

#define PN_FOR_EACH(i, n)                                                                      \
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<long long>(gridDim.x) * blockDim.x)

namespace pn {
__device__ __forceinline__ long long bcast_index(long long i, long long inner, long long bsize) {
  return bsize == 1 ? 0 : (inner == 1 ? i : i / inner) % bsize;
}
__device__ __forceinline__ float normal_cdf(float x) { return 0.5f * erfcf(-x * 0.70710678118654752f); }
}  // namespace pn

extern "C" __global__ void pn_fill(float* out, long long n, float value) {
  PN_FOR_EACH(i, n) out[i] = value;
}

// y = x + bias[(i / inner) % C] (bias may be null), then ReLU if relu != 0.
extern "C" __global__ void pn_bias_act(const float* x, const float* bias, float* y, long long n, long long C,
                                       long long inner, int relu) {
  PN_FOR_EACH(i, n) {
    float v = x[i];
    if (bias != nullptr) v += bias[pn::bcast_index(i, inner, C)];
    y[i] = relu ? fmaxf(v, 0.f) : v;
  }
}

// dx = dy where y > 0, else 0 (y is the ReLU output).
extern "C" __global__ void pn_relu_bwd(const float* dy, const float* y, float* dx, long long n) {
  PN_FOR_EACH(i, n) dx[i] = y[i] > 0.f ? dy[i] : 0.f;
}

// Exact GELU: x * Phi(x); backward dx = dy * (Phi(x) + x * phi(x)).
extern "C" __global__ void pn_gelu_fwd(const float* x, float* y, long long n) {
  PN_FOR_EACH(i, n) y[i] = x[i] * pn::normal_cdf(x[i]);
}
extern "C" __global__ void pn_gelu_bwd(const float* x, const float* dy, float* dx, long long n) {
  PN_FOR_EACH(i, n) {
    const float v = x[i], pdf = 0.39894228040143268f * expf(-0.5f * v * v);
    dx[i] = dy[i] * (pn::normal_cdf(v) + v * pdf);
  }
}

// out = a op b[(i / inner) % bsize]; op 0: add, 1: subtract, 2: multiply.
extern "C" __global__ void pn_binary_bcast(const float* a, const float* b, float* out, long long n, long long inner,
                                           long long bsize, int op) {
  PN_FOR_EACH(i, n) {
    const float x = a[i], y = b[pn::bcast_index(i, inner, bsize)];
    out[i] = op == 0 ? x + y : (op == 1 ? x - y : x * y);
  }
}

// out = alpha * x + beta * y (y may be null: out = alpha * x). out may alias x or y.
extern "C" __global__ void pn_axpby(const float* x, const float* y, float* out, long long n, float alpha, float beta) {
  PN_FOR_EACH(i, n) out[i] = y != nullptr ? alpha * x[i] + beta * y[i] : alpha * x[i];
}

// torch.optim.SGD semantics: g = grad + wd * p; with momentum, buf = first ? g : momentum * buf +
// (1 - dampening) * g and g = nesterov ? g + momentum * buf : buf; p -= lr * g. buf may be null
// when momentum == 0.
extern "C" __global__ void pn_sgd_update(float* param, const float* grad, float* buf, long long n, float lr,
                                         float momentum, float dampening, float weight_decay, int nesterov,
                                         int first_step) {
  PN_FOR_EACH(i, n) {
    const float p = param[i];
    float g = grad[i];
    if (weight_decay != 0.f) g = fmaf(weight_decay, p, g);
    if (momentum != 0.f) {
      const float b = first_step ? g : momentum * buf[i] + (1.f - dampening) * g;
      buf[i] = b;
      g = nesterov ? fmaf(momentum, b, g) : b;
    }
    param[i] = p - lr * g;
  }
}

// Adam / AdamW step. bias_c1 = 1 - beta1^t and bias_c2 = 1 - beta2^t come from the host's step
// count. decoupled != 0 is AdamW (p *= 1 - lr * wd); otherwise wd is added to the gradient.
extern "C" __global__ void pn_adam_update(float* param, const float* grad, float* m, float* v, long long n, float lr,
                                          float beta1, float beta2, float eps, float weight_decay, float bias_c1,
                                          float bias_c2, int decoupled) {
  PN_FOR_EACH(i, n) {
    float p = param[i], g = grad[i];
    if (weight_decay != 0.f) {
      if (decoupled)
        p *= 1.f - lr * weight_decay;
      else
        g = fmaf(weight_decay, p, g);
    }
    const float mi = beta1 * m[i] + (1.f - beta1) * g, vi = beta2 * v[i] + (1.f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    param[i] = p - lr * (mi / bias_c1) / (sqrtf(vi / bias_c2) + eps);
  }
}
