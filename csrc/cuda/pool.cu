// 2-D max and average pooling, fp32, forward and backward, of NCHW tensors and of channels-last
// NHWC ones.
//
// Strategy: pooling moves each input about once and does almost no arithmetic, so it is bound by
// memory; one thread per output (forward) or per input element (backward). Backward is a gather
// (each input element sums the outputs whose window covers it) rather than a scatter with
// atomics: no zero-fill pass, no atomics, deterministic. One (n, c) plane is addressed as
// p[(h * W + w) * ld]: ld = 1 in NCHW, ld = C in NHWC, and the window code below is shared by
// both layouts; only the thread -> element map differs, chosen so that a warp touches contiguous
// memory:
//  * NCHW: planes are indexed by blockIdx.x (up to 2^31 - 1 of them), positions inside a plane by
//    blockIdx.y * 256 + threadIdx.x (planes up to 16.7M elements): consecutive threads on
//    consecutive w, no divisions by C.
//  * NHWC: one flat index e over the (N, H, W, C) elements, c = e % C fastest: consecutive threads
//    on consecutive channels of the same pixel, so every tap of the window is one coalesced run of
//    channels (C >= 32 fills whole warps; small C still packs several pixels into one warp). Three
//    integer divisions per thread (C, OW or W, the plane) are ~60 instructions against ~kh*kw
//    loads that each cost far more in bandwidth.
//
// Semantics match the CPU kernels (csrc/cpu/pool.cpp) in both layouts: padding never wins a max,
// ties go to the first element in row-major order, NaN propagates (the first NaN wins); argmax is
// the flat index h * W + w in the input plane (int32) and has the layout of y. Average pooling
// divides by KH*KW if count_include_pad, else by the number of in-image taps. The two layouts do
// the same operations in the same order: their results are equal bit for bit.
//
// Launch (pyneural/cuda/pool.py): block 256; NCHW grid (N*C, ceil(plane / 256)), NHWC grid
// ceil(elements / 256) (elements of y forward, of x backward).
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

// Max of the window of output (oh, ow) over the plane x[(h * W + w) * ld], and its flat h * W + w.
__device__ __forceinline__ void window_max(const float* x, i64 ld, int oh, int ow, const PoolGeom& g, float& best,
                                           int& arg) {
  const int h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw;
  best = 0.f;
  arg = -1;
  for (int i = 0; i < g.kh; ++i) {
    const int h = h0 + i;
    if (h < 0 || h >= g.H) continue;
    for (int j = 0; j < g.kw; ++j) {
      const int w = w0 + j;
      if (w < 0 || w >= g.W) continue;
      const float v = x[(h * g.W + w) * ld];
      const bool best_nan = arg >= 0 && best != best;
      if (!best_nan && (arg < 0 || v > best || v != v)) {
        best = v;
        arg = h * g.W + w;
      }
    }
  }
  // every window holds an in-image element (padding <= kernel / 2), so arg >= 0 here
}

// Mean of the window of output (oh, ow) over the plane x[(h * W + w) * ld].
__device__ __forceinline__ float window_mean(const float* x, i64 ld, int oh, int ow, const PoolGeom& g,
                                             int count_include_pad) {
  const int h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw;
  const int hb = max(h0, 0), he = min(h0 + g.kh, g.H), wb = max(w0, 0), we = min(w0 + g.kw, g.W);
  float sum = 0.f;
  for (int h = hb; h < he; ++h)
    for (int w = wb; w < we; ++w) sum += x[(h * g.W + w) * ld];
  const int count = count_include_pad ? g.kh * g.kw : (he - hb) * (we - wb);
  return sum / static_cast<float>(count);
}

// d x[h, w] of max pooling: the sum of dy over the outputs (planes dy, argmax [(oh * OW + ow) * ld])
// whose argmax is (h, w).
__device__ __forceinline__ float max_grad(const float* dy, const int* argmax, i64 ld, int h, int w,
                                          const PoolGeom& g) {
  int oh_lo, oh_hi, ow_lo, ow_hi;
  covering(h, g.ph, g.kh, g.sh, g.OH, oh_lo, oh_hi);
  covering(w, g.pw, g.kw, g.sw, g.OW, ow_lo, ow_hi);
  const int i = h * g.W + w;
  float sum = 0.f;
  for (int oh = oh_lo; oh <= oh_hi; ++oh)
    for (int ow = ow_lo; ow <= ow_hi; ++ow) {
      const i64 o = (oh * g.OW + ow) * ld;
      if (argmax[o] == i) sum += dy[o];
    }
  return sum;
}

// d x[h, w] of average pooling: dy of every covering output (plane dy[(oh * OW + ow) * ld]) over its divisor.
__device__ __forceinline__ float mean_grad(const float* dy, i64 ld, int h, int w, const PoolGeom& g,
                                           int count_include_pad) {
  int oh_lo, oh_hi, ow_lo, ow_hi;
  covering(h, g.ph, g.kh, g.sh, g.OH, oh_lo, oh_hi);
  covering(w, g.pw, g.kw, g.sw, g.OW, ow_lo, ow_hi);
  float sum = 0.f;
  for (int oh = oh_lo; oh <= oh_hi; ++oh) {
    const int h0 = oh * g.sh - g.ph, rows = min(h0 + g.kh, g.H) - max(h0, 0);
    for (int ow = ow_lo; ow <= ow_hi; ++ow) {
      const int w0 = ow * g.sw - g.pw, cols = min(w0 + g.kw, g.W) - max(w0, 0);
      const int count = count_include_pad ? g.kh * g.kw : rows * cols;
      sum += dy[(oh * g.OW + ow) * ld] / static_cast<float>(count);
    }
  }
  return sum;
}
}  // namespace pn

#define PN_POOL_PARAMS int H, int W, int OH, int OW, int kh, int kw, int sh, int sw, int ph, int pw
#define PN_POOL_GEOM const pn::PoolGeom g = {H, W, OH, OW, kh, kw, sh, sw, ph, pw}

// NCHW thread map: blockIdx.x = plane, `pos` = position in the plane (of y forward, of x backward).
#define PN_NCHW_POSITION(pos, plane_size)                   \
  const int pos = blockIdx.y * blockDim.x + threadIdx.x; \
  if (pos >= (plane_size)) return;                         \
  const long long plane = blockIdx.x

// NHWC thread map: e = flat index over `count` (N, rows, cols, C) elements -> n, (r, s) pixel, c.
#define PN_NHWC_POSITION(count, rows, cols)                                  \
  const int e = blockIdx.x * blockDim.x + threadIdx.x;                      \
  if (e >= (count)) return;                                                  \
  const int pix = e / C, c = e - pix * C, n = pix / ((rows) * (cols));       \
  const int rc = pix - n * (rows) * (cols), r = rc / (cols), s = rc - r * (cols)

extern "C" __global__ void pn_max_pool2d_fwd(const float* x, float* y, int* argmax, PN_POOL_PARAMS) {
  PN_POOL_GEOM;
  PN_NCHW_POSITION(o, OH * OW);
  const int oh = o / OW;
  float best;
  int arg;
  pn::window_max(x + plane * H * W, 1, oh, o - oh * OW, g, best, arg);
  y[plane * OH * OW + o] = best;
  argmax[plane * OH * OW + o] = arg;
}

extern "C" __global__ void pn_max_pool2d_bwd(const float* dy, const int* argmax, float* dx, PN_POOL_PARAMS) {
  PN_POOL_GEOM;
  PN_NCHW_POSITION(i, H * W);
  const int h = i / W;
  dx[plane * H * W + i] = pn::max_grad(dy + plane * OH * OW, argmax + plane * OH * OW, 1, h, i - h * W, g);
}

extern "C" __global__ void pn_avg_pool2d_fwd(const float* x, float* y, PN_POOL_PARAMS, int count_include_pad) {
  PN_POOL_GEOM;
  PN_NCHW_POSITION(o, OH * OW);
  const int oh = o / OW;
  y[plane * OH * OW + o] = pn::window_mean(x + plane * H * W, 1, oh, o - oh * OW, g, count_include_pad);
}

extern "C" __global__ void pn_avg_pool2d_bwd(const float* dy, float* dx, PN_POOL_PARAMS, int count_include_pad) {
  PN_POOL_GEOM;
  PN_NCHW_POSITION(i, H * W);
  const int h = i / W;
  dx[plane * H * W + i] = pn::mean_grad(dy + plane * OH * OW, 1, h, i - h * W, g, count_include_pad);
}

// NHWC: x (N, H, W, C), y and argmax (N, OH, OW, C); `count` = elements of y (forward) or x (backward).
extern "C" __global__ void pn_max_pool2d_fwd_nhwc(const float* x, float* y, int* argmax, int count, int C,
                                                  PN_POOL_PARAMS) {
  PN_POOL_GEOM;
  PN_NHWC_POSITION(count, OH, OW);
  float best;
  int arg;
  pn::window_max(x + static_cast<long long>(n) * H * W * C + c, C, r, s, g, best, arg);
  y[e] = best;
  argmax[e] = arg;
}

extern "C" __global__ void pn_max_pool2d_bwd_nhwc(const float* dy, const int* argmax, float* dx, int count, int C,
                                                  PN_POOL_PARAMS) {
  PN_POOL_GEOM;
  PN_NHWC_POSITION(count, H, W);
  const long long base = static_cast<long long>(n) * OH * OW * C + c;
  dx[e] = pn::max_grad(dy + base, argmax + base, C, r, s, g);
}

extern "C" __global__ void pn_avg_pool2d_fwd_nhwc(const float* x, float* y, int count, int C, PN_POOL_PARAMS,
                                                  int count_include_pad) {
  PN_POOL_GEOM;
  PN_NHWC_POSITION(count, OH, OW);
  y[e] = pn::window_mean(x + static_cast<long long>(n) * H * W * C + c, C, r, s, g, count_include_pad);
}

extern "C" __global__ void pn_avg_pool2d_bwd_nhwc(const float* dy, float* dx, int count, int C, PN_POOL_PARAMS,
                                                  int count_include_pad) {
  PN_POOL_GEOM;
  PN_NHWC_POSITION(count, H, W);
  dx[e] = pn::mean_grad(dy + static_cast<long long>(n) * OH * OW * C + c, C, r, s, g, count_include_pad);
}
