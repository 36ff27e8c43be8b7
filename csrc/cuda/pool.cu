// 2-D max and average pooling of NCHW tensors, forward and backward, fp32.
//
// Strategy: pooling moves each input about once and does almost no arithmetic, so it is bound by
// memory; one thread per output (forward) or per input element (backward), consecutive threads on
// consecutive w so every warp reads and writes contiguous runs. Backward is a gather (each input
// element sums the outputs whose window covers it) rather than a scatter with atomics: no
// zero-fill pass, no atomics, deterministic. Planes are indexed by blockIdx.x (up to 2^31 - 1 of
// them), positions inside a plane by blockIdx.y * 256 + threadIdx.x (planes up to 16.7M
// elements): no divisions by C.
//
// Semantics match the CPU kernels (csrc/cpu/pool.cpp): padding never wins a max, ties go to the
// first element in row-major order, NaN propagates (the first NaN wins); argmax is the flat index
// h * W + w in the input plane (int32). Average pooling divides by KH*KW if count_include_pad,
// else by the number of in-image taps.
//
// Launch (pyneural/cuda/pool.py): block 256, grid (N*C, ceil(plane / 256)).
#include "common.cuh"

namespace pn {
struct PoolGeom {
  int H, W, OH, OW, kh, kw, sh, sw, ph, pw;
};
// Outputs whose window covers input index i along one axis: [lo, hi].
__device__ __forceinline__ void covering(int i, int p, int k, int s, int out, int& lo, int& hi) {
  const int t = i + p;  // window start o*s must satisfy t - k + 1 <= o*s <= t
  lo = t - k + 1 <= 0 ? 0 : (t - k + s) / s;
  hi = t / s;
  if (hi > out - 1) hi = out - 1;
}
}  // namespace pn

#define PN_POOL_GEOM pn::PoolGeom g = {H, W, OH, OW, kh, kw, sh, sw, ph, pw}

extern "C" __global__ void pn_max_pool2d_fwd(const float* x, float* y, int* argmax, int H, int W, int OH, int OW,
                                             int kh, int kw, int sh, int sw, int ph, int pw) {
  const int o = blockIdx.y * blockDim.x + threadIdx.x;
  if (o >= OH * OW) return;
  const long long plane = blockIdx.x;
  const float* xp = x + plane * H * W;
  const int oh = o / OW, ow = o - oh * OW;
  const int h0 = oh * sh - ph, w0 = ow * sw - pw;
  float best = 0.f;
  int arg = -1;
  for (int i = 0; i < kh; ++i) {
    const int h = h0 + i;
    if (h < 0 || h >= H) continue;
    for (int j = 0; j < kw; ++j) {
      const int w = w0 + j;
      if (w < 0 || w >= W) continue;
      const float v = xp[h * W + w];
      const bool best_nan = arg >= 0 && best != best;
      if (!best_nan && (arg < 0 || v > best || v != v)) {
        best = v;
        arg = h * W + w;
      }
    }
  }
  y[plane * OH * OW + o] = best;  // every window holds an in-image element (padding <= kernel / 2)
  argmax[plane * OH * OW + o] = arg;
}

extern "C" __global__ void pn_max_pool2d_bwd(const float* dy, const int* argmax, float* dx, int H, int W, int OH,
                                             int OW, int kh, int kw, int sh, int sw, int ph, int pw) {
  PN_POOL_GEOM;
  const int i = blockIdx.y * blockDim.x + threadIdx.x;
  if (i >= H * W) return;
  const long long plane = blockIdx.x;
  const int h = i / W, w = i - h * W;
  int oh_lo, oh_hi, ow_lo, ow_hi;
  pn::covering(h, g.ph, g.kh, g.sh, g.OH, oh_lo, oh_hi);
  pn::covering(w, g.pw, g.kw, g.sw, g.OW, ow_lo, ow_hi);
  const float* dyp = dy + plane * OH * OW;
  const int* ap = argmax + plane * OH * OW;
  float sum = 0.f;
  for (int oh = oh_lo; oh <= oh_hi; ++oh)
    for (int ow = ow_lo; ow <= ow_hi; ++ow)
      if (ap[oh * OW + ow] == i) sum += dyp[oh * OW + ow];
  dx[plane * H * W + i] = sum;
}

extern "C" __global__ void pn_avg_pool2d_fwd(const float* x, float* y, int H, int W, int OH, int OW, int kh, int kw,
                                             int sh, int sw, int ph, int pw, int count_include_pad) {
  const int o = blockIdx.y * blockDim.x + threadIdx.x;
  if (o >= OH * OW) return;
  const long long plane = blockIdx.x;
  const float* xp = x + plane * H * W;
  const int oh = o / OW, ow = o - oh * OW;
  const int h0 = oh * sh - ph, w0 = ow * sw - pw;
  const int hb = max(h0, 0), he = min(h0 + kh, H), wb = max(w0, 0), we = min(w0 + kw, W);
  float sum = 0.f;
  for (int h = hb; h < he; ++h)
    for (int w = wb; w < we; ++w) sum += xp[h * W + w];
  const int count = count_include_pad ? kh * kw : (he - hb) * (we - wb);
  y[plane * OH * OW + o] = sum / static_cast<float>(count);
}

extern "C" __global__ void pn_avg_pool2d_bwd(const float* dy, float* dx, int H, int W, int OH, int OW, int kh, int kw,
                                             int sh, int sw, int ph, int pw, int count_include_pad) {
  PN_POOL_GEOM;
  const int i = blockIdx.y * blockDim.x + threadIdx.x;
  if (i >= H * W) return;
  const long long plane = blockIdx.x;
  const int h = i / W, w = i - h * W;
  int oh_lo, oh_hi, ow_lo, ow_hi;
  pn::covering(h, g.ph, g.kh, g.sh, g.OH, oh_lo, oh_hi);
  pn::covering(w, g.pw, g.kw, g.sw, g.OW, ow_lo, ow_hi);
  const float* dyp = dy + plane * OH * OW;
  float sum = 0.f;
  for (int oh = oh_lo; oh <= oh_hi; ++oh) {
    const int h0 = oh * sh - ph, rows = min(h0 + kh, H) - max(h0, 0);
    for (int ow = ow_lo; ow <= ow_hi; ++ow) {
      const int w0 = ow * sw - pw, cols = min(w0 + kw, W) - max(w0, 0);
      const int count = count_include_pad ? kh * kw : rows * cols;
      sum += dyp[oh * OW + ow] / static_cast<float>(count);
    }
  }
  dx[plane * H * W + i] = sum;
}
