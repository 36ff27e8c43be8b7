// The depthwise convolution's entry points: conv_depthwise_planes.inl compiled for the baseline ISA
// here, and the table of the path pn::active_isa() names picked per call (see conv_depthwise.h).
#include "cpu/conv_depthwise.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/cpu_features.h"

namespace pn {
namespace {
#include "cpu/conv_depthwise_planes.inl"

DepthwiseKernels active_kernels() {
  switch (active_isa()) {
    case Isa::avx512:
      return depthwise_kernels_avx512();
    case Isa::avx2:
      return depthwise_kernels_avx2();
    default:
      return depthwise_kernels_generic();
  }
}
}  // namespace

DepthwiseKernels depthwise_kernels_generic() { return {forward, backward_data, backward_weight}; }

void conv2d_depthwise_forward(const Conv2dShape& s, const float* x, const float* w, const float* bias, bool relu,
                              float* y) {
  active_kernels().forward(s, x, w, bias, relu, y);
}

void conv2d_depthwise_backward_data(const Conv2dShape& s, const float* dy, const float* w, float* dx) {
  active_kernels().backward_data(s, dy, w, dx);
}

void conv2d_depthwise_backward_weight(const Conv2dShape& s, const float* dy, const float* x, float* dw) {
  active_kernels().backward_weight(s, dy, x, dw);
}

}  // namespace pn
