// Batch normalisation over (N, C, inner) tensors (NCHW has inner = H*W; (N, C) and NHWC viewed as
// (N*H*W, C) have inner = 1), fp32: training statistics, running averages, normalise (train and
// eval), and the training-mode backward.
//
// Strategy: statistics are per channel over N*inner elements, so one 256-thread block owns a
// channel and walks its elements with Welford updates (count, mean, M2): numerically stable for
// large means, one pass over x. The 256 partial states are merged with Chan's pairwise formula,
// first across the lanes of a warp (shuffles), then across the 8 warps (shared memory). The
// backward needs two per-channel sums, sum(dy) and sum(dy * xhat), then an elementwise pass: the
// same block does both, re-reading its channel (L2-resident for typical sizes). Normalise is a
// flat grid-stride elementwise kernel (channel = (i / inner) % C by multiply-shift division; the
// wrappers keep every tensor under 2^31 elements so indices stay 32-bit where they are divided).
//
// Launch (pyneural/cuda/batchnorm.py): stats / backward: grid C, block 256; apply: block 256,
// grid min(ceil(total / 256), 32 * SMs).
#include "common.cuh"

namespace pn {
struct Welford {
  float n, mean, m2;
  __device__ void add(float x) {
    n += 1.f;
    const float d = x - mean;
    mean += d / n;
    m2 += d * (x - mean);
  }
  __device__ void merge(float nb, float meanb, float m2b) {
    if (nb == 0.f) return;
    const float nn = n + nb, d = meanb - mean;
    mean += d * (nb / nn);
    m2 += m2b + d * d * (n * nb / nn);
    n = nn;
  }
  __device__ void merge_warp() {
    for (int o = 16; o > 0; o >>= 1)
      merge(__shfl_xor_sync(0xffffffffu, n, o), __shfl_xor_sync(0xffffffffu, mean, o),
            __shfl_xor_sync(0xffffffffu, m2, o));
  }
};

// Element e of channel c (e in [0, outer*inner)) in an (outer, C, inner) tensor.
__device__ __forceinline__ i64 channel_index(int e, int c, int C, int inner, const FastDiv& div_inner) {
  int i;
  const int o = div_inner.divmod(e, i);
  return (static_cast<i64>(o) * C + c) * inner + i;
}
}  // namespace pn

extern "C" __global__ void __launch_bounds__(256) pn_batchnorm_stats(const float* x, float* mean, float* var,
                                                                     float* running_mean, float* running_var,
                                                                     int outer, int C, int inner, float momentum) {
  __shared__ float sh[3][8];
  const int c = blockIdx.x, count = outer * inner;
  const pn::FastDiv div_inner(inner);
  pn::Welford w = {0.f, 0.f, 0.f};
  for (int e = threadIdx.x; e < count; e += blockDim.x) w.add(x[pn::channel_index(e, c, C, inner, div_inner)]);
  w.merge_warp();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    sh[0][warp] = w.n;
    sh[1][warp] = w.mean;
    sh[2][warp] = w.m2;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    pn::Welford t = {0.f, 0.f, 0.f};
    for (int k = 0; k < static_cast<int>(blockDim.x >> 5); ++k) t.merge(sh[0][k], sh[1][k], sh[2][k]);
    const float v = t.m2 / t.n;
    mean[c] = t.mean;
    var[c] = v;
    if (running_mean != nullptr) running_mean[c] = (1.f - momentum) * running_mean[c] + momentum * t.mean;
    if (running_var != nullptr) {
      const float unbiased = count > 1 ? t.m2 / (t.n - 1.f) : v;
      running_var[c] = (1.f - momentum) * running_var[c] + momentum * unbiased;
    }
  }
}

// y = (x - mean[c]) * rsqrt(var[c] + eps) * gamma[c] + beta[c]; gamma / beta may be null
// (no affine). Eval mode passes the running statistics; the eval-mode backward is this kernel on
// dy with mean = 0 and beta = null.
extern "C" __global__ void pn_batchnorm_apply(const float* x, const float* mean, const float* var, const float* gamma,
                                              const float* beta, float* y, int total, int C, int inner, float eps) {
  const pn::FastDiv div_inner(inner), div_c(C);
  for (long long e = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<long long>(gridDim.x) * blockDim.x) {
    int c;
    div_c.divmod(div_inner.div(static_cast<int>(e)), c);
    float v = (x[e] - mean[c]) * rsqrtf(var[c] + eps);
    if (gamma != nullptr) v *= gamma[c];
    if (beta != nullptr) v += beta[c];
    y[e] = v;
  }
}

extern "C" __global__ void __launch_bounds__(256) pn_batchnorm_bwd(const float* x, const float* dy, const float* mean,
                                                                   const float* var, const float* gamma, float* dx,
                                                                   float* dgamma, float* dbeta, int outer, int C,
                                                                   int inner, float eps) {
  __shared__ float scratch[32];
  const int c = blockIdx.x, count = outer * inner;
  const pn::FastDiv div_inner(inner);
  const float mu = mean[c], invstd = rsqrtf(var[c] + eps);
  float s_dy = 0.f, s_dyx = 0.f;
  for (int e = threadIdx.x; e < count; e += blockDim.x) {
    const pn::i64 k = pn::channel_index(e, c, C, inner, div_inner);
    s_dy += dy[k];
    s_dyx += dy[k] * (x[k] - mu);
  }
  s_dy = pn::block_sum(s_dy, scratch);
  s_dyx = pn::block_sum(s_dyx, scratch) * invstd;  // sum(dy * xhat)
  if (threadIdx.x == 0) {
    if (dgamma != nullptr) dgamma[c] = s_dyx;
    if (dbeta != nullptr) dbeta[c] = s_dy;
  }
  const float g = (gamma != nullptr ? gamma[c] : 1.f) * invstd, inv_n = 1.f / static_cast<float>(count);
  for (int e = threadIdx.x; e < count; e += blockDim.x) {
    const pn::i64 k = pn::channel_index(e, c, C, inner, div_inner);
    const float xhat = (x[k] - mu) * invstd;
    dx[k] = g * (dy[k] - inv_n * s_dy - xhat * inv_n * s_dyx);
  }
}
