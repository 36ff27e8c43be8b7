// Row-wise log-sum-exp, softmax, and the fused softmax cross-entropy (forward and backward), fp32.
//
// Strategy: one warp per row (8 rows per 256-thread block). Each lane walks its strided share of
// the row once with an online max / rescaled sum (one pass over the logits instead of two), then
// the 32 partial (max, sum) pairs are merged with shuffles. Rows are short in classification
// (10..1000 classes) and long in language models (50k); a warp per row keeps both cases at full
// occupancy without shared memory, and consecutive lanes read consecutive elements (coalesced).
//
// Cross-entropy: loss[r] = lse[r] - x[r, label[r]]; lse is kept for the backward, which is
//   dx[r, c] = scale * dloss[0] * (exp(x[r, c] - lse[r]) - [c == label[r]])
// with dloss a one-element device array (the incoming gradient of the mean loss stays on the GPU)
// and scale = 1/rows for a mean reduction. A label outside [0, C) gives loss NaN (no read out of
// bounds); the Python wrapper can check labels first.
//
// Launch (pyneural/cuda/softmax.py): block 256, grid ceil(rows / 8).
#include "common.cuh"

namespace pn {
// Online log-sum-exp over row x[0..C) by one warp; every lane gets the result.
__device__ __forceinline__ float warp_row_lse(const float* x, int C) {
  const int lane = threadIdx.x & 31;
  float m = -pn::inf(), s = 0.f;
  for (int c = lane; c < C; c += 32) {
    const float v = x[c];
    if (v > m) {
      s = s * expf(m - v) + 1.f;
      m = v;
    } else if (v > -pn::inf()) {  // skip -inf (and NaN, checked below)
      s += expf(v - m);
    }
  }
  for (int o = 16; o > 0; o >>= 1) {
    const float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
    const float mm = fmaxf(m, m2);
    s = (m == -pn::inf() ? 0.f : s * expf(m - mm)) + (m2 == -pn::inf() ? 0.f : s2 * expf(m2 - mm));
    m = mm;
  }
  // NaN anywhere in the row: the comparisons above skip it, so check explicitly.
  bool nan = false;
  for (int c = lane; c < C; c += 32) nan |= x[c] != x[c];
  nan = __any_sync(0xffffffffu, nan);
  if (nan) return pn::nan();
  if (m == pn::inf()) return pn::inf();
  return m + logf(s);
}
}  // namespace pn

extern "C" __global__ void pn_logsumexp_rows(const float* x, float* out, int rows, int C) {
  const int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (r >= rows) return;
  const float lse = pn::warp_row_lse(x + static_cast<long long>(r) * C, C);
  if ((threadIdx.x & 31) == 0) out[r] = lse;
}

extern "C" __global__ void pn_softmax_rows(const float* x, float* y, int rows, int C, int log) {
  const int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (r >= rows) return;
  const float* xr = x + static_cast<long long>(r) * C;
  float* yr = y + static_cast<long long>(r) * C;
  const float lse = pn::warp_row_lse(xr, C);
  for (int c = threadIdx.x & 31; c < C; c += 32) yr[c] = log ? xr[c] - lse : expf(xr[c] - lse);
}

extern "C" __global__ void pn_softmax_xent_fwd(const float* x, const long long* labels, float* loss, float* lse_out,
                                               int rows, int C) {
  const int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (r >= rows) return;
  const float* xr = x + static_cast<long long>(r) * C;
  const float lse = pn::warp_row_lse(xr, C);
  if ((threadIdx.x & 31) == 0) {
    const long long t = labels[r];
    loss[r] = (t >= 0 && t < C) ? lse - xr[t] : pn::nan();
    lse_out[r] = lse;
  }
}

extern "C" __global__ void pn_softmax_xent_bwd(const float* x, const long long* labels, const float* lse,
                                               const float* dloss, float* dx, int rows, int C, float scale) {
  const int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (r >= rows) return;
  const float* xr = x + static_cast<long long>(r) * C;
  float* dr = dx + static_cast<long long>(r) * C;
  const float g = scale * dloss[0], l = lse[r];
  const long long t = labels[r];
  for (int c = threadIdx.x & 31; c < C; c += 32) dr[c] = g * (expf(xr[c] - l) - (c == t ? 1.f : 0.f));
}
