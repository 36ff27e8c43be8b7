// 2-D max and average pooling (float32) over NCHW planes, or NHWC images (the _nhwc functions:
// x, y, dx, dy and argmax laid out (N, H, W, C), argmax still the in-plane index h*W + w). See pool.cpp.
#pragma once
#include <cstdint>

namespace pn {

// Geometry of one pooling: `planes` = N*C independent H x W input planes, each pooled to OH x OW.
struct Pool2dShape {
  int64_t planes, H, W, OH, OW;
  int64_t kh, kw, sh, sw, ph, pw;
};

// Checks the arguments like PyTorch (kernel and stride >= 1, 0 <= padding <= kernel/2, at least one
// output, H*W within int32 for argmax) and computes OH = (H + 2ph - kh) / sh + 1 (likewise OW).
// Throws std::invalid_argument naming `fn` and the offending values.
Pool2dShape pool2d_shape(const char* fn, int64_t N, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw,
                         int64_t sh, int64_t sw, int64_t ph, int64_t pw);

// y = max of each window (padding never wins; NaN propagates), argmax = its index h*W + w in the
// plane (the first in row-major order on ties).
void max_pool2d_forward(const float* x, float* y, int32_t* argmax, const Pool2dShape& s);

// dx = 0, then dx[plane][argmax] += dy for every output; overlapping windows add up. Every argmax
// must lie in [0, H*W): otherwise std::invalid_argument (the out-of-range entries are not written).
void max_pool2d_backward(const float* dy, const int32_t* argmax, float* dx, const Pool2dShape& s);

// y = sum of each window / (kh*kw if count_include_pad, else the number of non-padding elements).
void avg_pool2d_forward(const float* x, float* y, const Pool2dShape& s, bool count_include_pad);

// dx = each output's dy, divided like the forward, spread over its window; overlaps add up.
void avg_pool2d_backward(const float* dy, float* dx, const Pool2dShape& s, bool count_include_pad);

// The same four on NHWC memory; `channels` is C (s.planes = N*C). Same results, ties and NaN rule.
void max_pool2d_forward_nhwc(const float* x, float* y, int32_t* argmax, const Pool2dShape& s, int64_t channels);
void max_pool2d_backward_nhwc(const float* dy, const int32_t* argmax, float* dx, const Pool2dShape& s,
                              int64_t channels);
void avg_pool2d_forward_nhwc(const float* x, float* y, const Pool2dShape& s, bool count_include_pad,
                             int64_t channels);
void avg_pool2d_backward_nhwc(const float* dy, float* dx, const Pool2dShape& s, bool count_include_pad,
                              int64_t channels);

}  // namespace pn
