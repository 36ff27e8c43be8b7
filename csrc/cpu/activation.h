// Bias + ReLU epilogue (after Linear and Conv2d) and the ReLU backward. See activation.cpp.
#pragma once
#include <cstdint>

namespace pn {

// y[o, c, i] = x[o, c, i] + bias[c], then max(., 0) if relu, for x viewed as (outer, channels, inner):
// (N, F) is (N, F, 1) and NCHW is (N, C, H*W). bias may be null (no add); y may be x (in place).
void bias_relu(const float* x, const float* bias, float* y, int64_t outer, int64_t channels, int64_t inner,
               bool relu);

// dx[i] = dy[i] where y[i] > 0, else 0 (also where dy is NaN: the unit was off). dx may be dy.
void relu_backward(const float* dy, const float* y, float* dx, int64_t n);

}  // namespace pn
