// 2-D max and average pooling, forward and backward, over the N*C independent planes of NCHW.
//
// Parallel over planes (each thread a contiguous block of them), so no two threads touch one
// output or, in the backward, one input gradient: overlapping windows accumulate in a fixed order
// on one thread and results never depend on the thread count.
//
// Within a plane, one output row at a time, the loops run over the kernel offsets (i, j) outside
// and the output columns inside: for a fixed (i, j) the inner loop reads x[h][ow*sw - pw + j] for
// a range of ow, a strided but branch-free stream the compiler vectorises (max/argmax by select).
// Padding is never read: the kernel rows are clipped to the plane, and for each j the ow range is
// the one whose column lands inside it. Each output still meets its window elements in row-major
// order, which fixes the argmax on ties (the first) and NaN (the first NaN wins and stays).
// No run-time ISA dispatch: AVX2 and AVX-512 builds timed no faster than the baseline SSE2 build
// (2x2 max pooling of (512, 64, 8, 8), one thread: SSE2 3.2 ms, AVX2 3.4 ms, AVX-512 4.7 ms); with planes
// this small the loop bookkeeping, not the vector width, is the cost.
//
// NHWC (channels_last). One output pixel's window is kh*kw input pixels, each a contiguous run of C
// floats, so the inner loop runs across the C channels (vectors along C, one `omp simd` loop per
// window element) and the window loop is per pixel, not per element: for 64 channels that is four
// AVX2 vectors per window element with no index arithmetic in between. Parallel over output rows
// (n, oh) in the forward; over images in the backward, whose windows overlap within an image, so
// each dx image is zeroed and accumulated by one thread in a fixed order (window elements in
// row-major order per output, outputs in row-major order). Each output meets its window elements
// in row-major order, so ties (the first) and NaN (the first NaN) come out as in NCHW, and argmax is
// the same in-plane index h*W + w. Napkin math: 3x3/2 max pooling of (32, 64, 32, 32) reads
// 9 * 8 MiB / 4 = 18 MiB through L1 (each input pixel in ~2.25 windows) and writes 2 MiB of y and
// argmax: well under a millisecond at L2 bandwidth on two cores.
#include "cpu/pool.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "common/check.h"
#include "cpu/parallel_team.h"

namespace pn {

namespace {

constexpr int64_t kParallelMin = 1 << 14;

// Output columns [lo, hi) whose column ow*sw - pw + j lies in [0, W).
struct ColumnRange {
  int64_t lo, hi;
};

ColumnRange columns_inside(const Pool2dShape& s, int64_t j) {
  const int64_t first = s.pw - j;  // ow*sw >= first
  const int64_t last = s.W - 1 + s.pw - j;  // ow*sw <= last
  if (last < 0) return {0, 0};
  const int64_t lo = first > 0 ? (first + s.sw - 1) / s.sw : 0;
  const int64_t hi = last / s.sw + 1;
  return {lo, hi < s.OW ? hi : s.OW};
}

// Kernel rows [hs, he) of output row oh that lie inside the plane.
inline void rows_inside(const Pool2dShape& s, int64_t oh, int64_t& hs, int64_t& he) {
  const int64_t h0 = oh * s.sh - s.ph;
  hs = h0 > 0 ? h0 : 0;
  he = h0 + s.kh < s.H ? h0 + s.kh : s.H;
}

inline int64_t window_count(const Pool2dShape& s, int64_t oh, int64_t ow, bool count_include_pad) {
  if (count_include_pad) return s.kh * s.kw;  // windows never reach past the padding (no ceil mode)
  int64_t hs, he;
  rows_inside(s, oh, hs, he);
  const int64_t w0 = ow * s.sw - s.pw;
  const int64_t ws = w0 > 0 ? w0 : 0, we = w0 + s.kw < s.W ? w0 + s.kw : s.W;
  return (he - hs) * (we - ws);
}

void max_pool_plane(const float* x, float* y, int32_t* argmax, const Pool2dShape& s,
                    const std::vector<ColumnRange>& cols) {
  for (int64_t oh = 0; oh < s.OH; ++oh) {
    int64_t hs, he;
    rows_inside(s, oh, hs, he);
    float* yr = y + oh * s.OW;
    int32_t* ar = argmax + oh * s.OW;
    // Start at -inf pointing at the window's first in-plane element: if every element is -inf,
    // that one is the answer, never a padding position.
    for (int64_t ow = 0; ow < s.OW; ++ow) {
      const int64_t w0 = ow * s.sw - s.pw;
      yr[ow] = -INFINITY;
      ar[ow] = static_cast<int32_t>(hs * s.W + (w0 > 0 ? w0 : 0));
    }
    for (int64_t h = hs; h < he; ++h) {
      const float* xr = x + h * s.W;
      for (int64_t j = 0; j < s.kw; ++j) {
        const int64_t offset = j - s.pw;
#pragma omp simd
        for (int64_t ow = cols[j].lo; ow < cols[j].hi; ++ow) {
          const int64_t w = ow * s.sw + offset;
          const float v = xr[w];
          const float best = yr[ow];
          const bool take = (v > best) | ((v != v) & (best == best));
          yr[ow] = take ? v : best;
          ar[ow] = take ? static_cast<int32_t>(h * s.W + w) : ar[ow];
        }
      }
    }
  }
}

// The common 2x2 window at stride 2 without padding (every CNN's downsampling), in one pass: each
// output is the first maximum of its four inputs in window order, a NaN winning as above, chosen
// with masks rather than branches. On the 8x8 planes of the digits CNN (4 outputs per row, too few
// for a vector loop) the general loop ran its scalar tail, whose compiled branches on random data
// mispredicted about every other element: 4.1 ms of a 42 ms batch-512 training step.
inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// best, at = (v, v_at) when v beats best (greater, or the first NaN), without a branch.
inline void take_if_better(float v, uint32_t v_at, float& best, uint32_t& at) {
  const uint32_t take = 0u - static_cast<uint32_t>((v > best) + ((v != v) & (best == best)));
  const uint32_t b = (float_bits(v) & take) | (float_bits(best) & ~take);
  std::memcpy(&best, &b, sizeof best);
  at = (v_at & take) | (at & ~take);
}

void max_pool_plane_2x2(const float* x, float* y, int32_t* argmax, const Pool2dShape& s) {
  for (int64_t oh = 0; oh < s.OH; ++oh) {
    const uint32_t top = static_cast<uint32_t>(2 * oh * s.W), bottom = top + static_cast<uint32_t>(s.W);
    for (int64_t ow = 0; ow < s.OW; ++ow) {
      const uint32_t w = static_cast<uint32_t>(2 * ow);
      float best = x[top + w];
      uint32_t at = top + w;
      take_if_better(x[top + w + 1], top + w + 1, best, at);
      take_if_better(x[bottom + w], bottom + w, best, at);
      take_if_better(x[bottom + w + 1], bottom + w + 1, best, at);
      y[oh * s.OW + ow] = best;
      argmax[oh * s.OW + ow] = static_cast<int32_t>(at);
    }
  }
}

void avg_pool_plane(const float* x, float* y, const Pool2dShape& s, const std::vector<ColumnRange>& cols,
                    bool count_include_pad) {
  for (int64_t oh = 0; oh < s.OH; ++oh) {
    int64_t hs, he;
    rows_inside(s, oh, hs, he);
    float* yr = y + oh * s.OW;
    for (int64_t ow = 0; ow < s.OW; ++ow) yr[ow] = 0.f;
    for (int64_t h = hs; h < he; ++h) {
      const float* xr = x + h * s.W;
      for (int64_t j = 0; j < s.kw; ++j) {
        const int64_t offset = j - s.pw;
#pragma omp simd
        for (int64_t ow = cols[j].lo; ow < cols[j].hi; ++ow) yr[ow] += xr[ow * s.sw + offset];
      }
    }
    for (int64_t ow = 0; ow < s.OW; ++ow) yr[ow] /= static_cast<float>(window_count(s, oh, ow, count_include_pad));
  }
}

// `grad` is scratch for one output row (dy divided by each window's count).
void avg_pool_plane_backward(const float* dy, float* dx, const Pool2dShape& s, const std::vector<ColumnRange>& cols,
                             bool count_include_pad, float* grad) {
  for (int64_t i = 0; i < s.H * s.W; ++i) dx[i] = 0.f;
  for (int64_t oh = 0; oh < s.OH; ++oh) {
    int64_t hs, he;
    rows_inside(s, oh, hs, he);
    for (int64_t ow = 0; ow < s.OW; ++ow)
      grad[ow] = dy[oh * s.OW + ow] / static_cast<float>(window_count(s, oh, ow, count_include_pad));
    for (int64_t h = hs; h < he; ++h) {
      float* dxr = dx + h * s.W;
      for (int64_t j = 0; j < s.kw; ++j) {
        const int64_t offset = j - s.pw;
        // For a fixed j, distinct ow hit distinct columns, so the iterations are independent.
#pragma omp simd
        for (int64_t ow = cols[j].lo; ow < cols[j].hi; ++ow) dxr[ow * s.sw + offset] += grad[ow];
      }
    }
  }
}

std::vector<ColumnRange> column_ranges(const Pool2dShape& s) {
  std::vector<ColumnRange> cols(s.kw);
  for (int64_t j = 0; j < s.kw; ++j) cols[j] = columns_inside(s, j);
  return cols;
}

}  // namespace

Pool2dShape pool2d_shape(const char* fn, int64_t N, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw,
                         int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
  PN_CHECK(N > 0 && C > 0 && H > 0 && W > 0, fn, ": input has a zero-size dimension, shape (", N, ", ", C, ", ", H,
           ", ", W, ")");
  PN_CHECK(kh >= 1 && kw >= 1, fn, ": kernel_size must be >= 1, got (", kh, ", ", kw, ")");
  PN_CHECK(sh >= 1 && sw >= 1, fn, ": stride must be >= 1, got (", sh, ", ", sw, ")");
  PN_CHECK(ph >= 0 && pw >= 0 && ph <= kh / 2 && pw <= kw / 2, fn, ": padding must be between 0 and half the kernel",
           " size, got padding (", ph, ", ", pw, ") for kernel_size (", kh, ", ", kw, ")");
  PN_CHECK(H + 2 * ph >= kh && W + 2 * pw >= kw, fn, ": kernel_size (", kh, ", ", kw, ") is larger than the padded",
           " input (", H + 2 * ph, ", ", W + 2 * pw, ")");
  PN_CHECK(H * W <= INT32_MAX, fn, ": planes of ", H, "x", W, " are too large for int32 argmax indices");
  return {N * C, H, W, (H + 2 * ph - kh) / sh + 1, (W + 2 * pw - kw) / sw + 1, kh, kw, sh, sw, ph, pw};
}

void max_pool2d_forward(const float* x, float* y, int32_t* argmax, const Pool2dShape& s) {
  const std::vector<ColumnRange> cols = column_ranges(s);
  const int64_t in_plane = s.H * s.W, out_plane = s.OH * s.OW;
  const bool two_by_two = s.kh == 2 && s.kw == 2 && s.sh == 2 && s.sw == 2 && s.ph == 0 && s.pw == 0;
#pragma omp parallel for num_threads(elements_team(s.planes * in_plane, kParallelMin)) schedule(static)
  for (int64_t p = 0; p < s.planes; ++p) {
    if (two_by_two)
      max_pool_plane_2x2(x + p * in_plane, y + p * out_plane, argmax + p * out_plane, s);
    else
      max_pool_plane(x + p * in_plane, y + p * out_plane, argmax + p * out_plane, s, cols);
  }
}

void max_pool2d_backward(const float* dy, const int32_t* argmax, float* dx, const Pool2dShape& s) {
  const int64_t in_plane = s.H * s.W, out_plane = s.OH * s.OW;
  int64_t bad = 0;  // count of out-of-range argmax entries (an exception cannot leave a parallel region)
#pragma omp parallel for num_threads(elements_team(s.planes * in_plane, kParallelMin)) schedule(static) reduction(+ : bad)
  for (int64_t p = 0; p < s.planes; ++p) {
    float* dxp = dx + p * in_plane;
    const float* dyp = dy + p * out_plane;
    const int32_t* ap = argmax + p * out_plane;
    for (int64_t i = 0; i < in_plane; ++i) dxp[i] = 0.f;
    for (int64_t o = 0; o < out_plane; ++o) {
      const int32_t a = ap[o];
      if (a >= 0 && a < in_plane)
        dxp[a] += dyp[o];
      else
        ++bad;
    }
  }
  PN_CHECK(bad == 0, "max_pool2d_backward: ", bad, " argmax entries are outside [0, ", in_plane, ") for ", s.H, "x",
           s.W, " input planes");
}

void avg_pool2d_forward(const float* x, float* y, const Pool2dShape& s, bool count_include_pad) {
  const std::vector<ColumnRange> cols = column_ranges(s);
  const int64_t in_plane = s.H * s.W, out_plane = s.OH * s.OW;
#pragma omp parallel for num_threads(elements_team(s.planes * in_plane, kParallelMin)) schedule(static)
  for (int64_t p = 0; p < s.planes; ++p)
    avg_pool_plane(x + p * in_plane, y + p * out_plane, s, cols, count_include_pad);
}

void avg_pool2d_backward(const float* dy, float* dx, const Pool2dShape& s, bool count_include_pad) {
  const std::vector<ColumnRange> cols = column_ranges(s);
  const int64_t in_plane = s.H * s.W, out_plane = s.OH * s.OW;
#pragma omp parallel num_threads(elements_team(s.planes * in_plane, kParallelMin))
  {
    std::vector<float> grad(s.OW);
#pragma omp for schedule(static)
    for (int64_t p = 0; p < s.planes; ++p)
      avg_pool_plane_backward(dy + p * out_plane, dx + p * in_plane, s, cols, count_include_pad, grad.data());
  }
}

// ---- NHWC --------------------------------------------------------------------------------

namespace {

// Kernel columns [ws, we) of output column ow inside the plane.
inline void cols_inside(const Pool2dShape& s, int64_t ow, int64_t& ws, int64_t& we) {
  const int64_t w0 = ow * s.sw - s.pw;
  ws = w0 > 0 ? w0 : 0;
  we = w0 + s.kw < s.W ? w0 + s.kw : s.W;
}

}  // namespace

void max_pool2d_forward_nhwc(const float* x, float* y, int32_t* argmax, const Pool2dShape& s, int64_t C) {
  const int64_t N = s.planes / C;
#pragma omp parallel for num_threads(elements_team(s.planes * s.H * s.W, kParallelMin)) schedule(static)
  for (int64_t r = 0; r < N * s.OH; ++r) {
    const int64_t n = r / s.OH, oh = r % s.OH;
    int64_t hs, he;
    rows_inside(s, oh, hs, he);
    for (int64_t ow = 0; ow < s.OW; ++ow) {
      int64_t ws, we;
      cols_inside(s, ow, ws, we);
      float* yp = y + (r * s.OW + ow) * C;
      int32_t* ap = argmax + (r * s.OW + ow) * C;
      const int32_t first = static_cast<int32_t>(hs * s.W + ws);
      for (int64_t c = 0; c < C; ++c) {
        yp[c] = -INFINITY;
        ap[c] = first;
      }
      for (int64_t h = hs; h < he; ++h)
        for (int64_t w = ws; w < we; ++w) {
          const float* xp = x + ((n * s.H + h) * s.W + w) * C;
          const int32_t at = static_cast<int32_t>(h * s.W + w);
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) {
            const float v = xp[c], best = yp[c];
            const bool take = (v > best) | ((v != v) & (best == best));
            yp[c] = take ? v : best;
            ap[c] = take ? at : ap[c];
          }
        }
    }
  }
}

void max_pool2d_backward_nhwc(const float* dy, const int32_t* argmax, float* dx, const Pool2dShape& s, int64_t C) {
  const int64_t N = s.planes / C, in_plane = s.H * s.W, out_plane = s.OH * s.OW;
  int64_t bad = 0;
#pragma omp parallel for num_threads(elements_team(s.planes * in_plane, kParallelMin)) schedule(static) reduction(+ : bad)
  for (int64_t n = 0; n < N; ++n) {
    float* dxn = dx + n * in_plane * C;
    for (int64_t i = 0; i < in_plane * C; ++i) dxn[i] = 0.f;
    for (int64_t o = 0; o < out_plane; ++o) {
      const float* g = dy + (n * out_plane + o) * C;
      const int32_t* a = argmax + (n * out_plane + o) * C;
      for (int64_t c = 0; c < C; ++c) {
        if (a[c] >= 0 && a[c] < in_plane)
          dxn[a[c] * C + c] += g[c];
        else
          ++bad;
      }
    }
  }
  PN_CHECK(bad == 0, "max_pool2d_backward: ", bad, " argmax entries are outside [0, ", in_plane, ") for ", s.H, "x",
           s.W, " input planes");
}

void avg_pool2d_forward_nhwc(const float* x, float* y, const Pool2dShape& s, bool count_include_pad, int64_t C) {
  const int64_t N = s.planes / C;
#pragma omp parallel for num_threads(elements_team(s.planes * s.H * s.W, kParallelMin)) schedule(static)
  for (int64_t r = 0; r < N * s.OH; ++r) {
    const int64_t n = r / s.OH, oh = r % s.OH;
    int64_t hs, he;
    rows_inside(s, oh, hs, he);
    for (int64_t ow = 0; ow < s.OW; ++ow) {
      int64_t ws, we;
      cols_inside(s, ow, ws, we);
      float* yp = y + (r * s.OW + ow) * C;
      for (int64_t c = 0; c < C; ++c) yp[c] = 0.f;
      for (int64_t h = hs; h < he; ++h)
        for (int64_t w = ws; w < we; ++w) {
          const float* xp = x + ((n * s.H + h) * s.W + w) * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) yp[c] += xp[c];
        }
      const float count = static_cast<float>(window_count(s, oh, ow, count_include_pad));
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) yp[c] /= count;
    }
  }
}

void avg_pool2d_backward_nhwc(const float* dy, float* dx, const Pool2dShape& s, bool count_include_pad, int64_t C) {
  const int64_t N = s.planes / C, in_plane = s.H * s.W;
#pragma omp parallel num_threads(elements_team(s.planes * in_plane, kParallelMin))
  {
    std::vector<float> grad(C);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      float* dxn = dx + n * in_plane * C;
      for (int64_t i = 0; i < in_plane * C; ++i) dxn[i] = 0.f;
      for (int64_t oh = 0; oh < s.OH; ++oh) {
        int64_t hs, he;
        rows_inside(s, oh, hs, he);
        for (int64_t ow = 0; ow < s.OW; ++ow) {
          int64_t ws, we;
          cols_inside(s, ow, ws, we);
          const float count = static_cast<float>(window_count(s, oh, ow, count_include_pad));
          const float* g = dy + ((n * s.OH + oh) * s.OW + ow) * C;
          for (int64_t c = 0; c < C; ++c) grad[c] = g[c] / count;
          for (int64_t h = hs; h < he; ++h)
            for (int64_t w = ws; w < we; ++w) {
              float* d = dxn + (h * s.W + w) * C;
#pragma omp simd
              for (int64_t c = 0; c < C; ++c) d[c] += grad[c];
            }
        }
      }
    }
  }
}

}  // namespace pn
