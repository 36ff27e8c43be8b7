// Depthwise convolution on the CPU (NCHW, float32): groups == C, one input channel per group and
// Co = m*C outputs (m = Co/C, the depth multiplier; MobileNet/EfficientNet use m = 1). A direct
// kernel: as a GEMM each group is a (m x kh*kw) @ (kh*kw x Ho*Wo) product, far too thin for the
// packed GEMM (packing its panels costs as much as the arithmetic), so conv.cpp sends every
// depthwise shape here when its ConvParallel is automatic. conv_depthwise_planes.inl explains the
// loops; conv_depthwise.cpp, conv_depthwise_avx2.cpp and conv_depthwise_avx512.cpp compile it
// once per SIMD path and conv_depthwise.cpp picks the table from pn::active_isa() per call.
#pragma once
#include "cpu/conv.h"
#include "cpu/parallel_team.h"  // team_threads() in conv_depthwise_planes.inl

namespace pn {

// Depthwise shapes: groups == C > 1 with one input channel per group (any multiplier Co/C).
inline bool conv2d_is_depthwise(const Conv2dShape& s) { return s.groups > 1 && s.groups == s.C; }

// The same contracts as conv2d_forward / _backward_data / _backward_weight in conv.h, for shapes
// with conv2d_is_depthwise(s). Every output element is written by one thread in a fixed order:
// the results do not depend on the thread count.
void conv2d_depthwise_forward(const Conv2dShape& s, const float* x, const float* w, const float* bias, bool relu,
                              float* y);
void conv2d_depthwise_backward_data(const Conv2dShape& s, const float* dy, const float* w, float* dx);
void conv2d_depthwise_backward_weight(const Conv2dShape& s, const float* dy, const float* x, float* dw);

struct DepthwiseKernels {
  void (*forward)(const Conv2dShape& s, const float* x, const float* w, const float* bias, bool relu, float* y);
  void (*backward_data)(const Conv2dShape& s, const float* dy, const float* w, float* dx);
  void (*backward_weight)(const Conv2dShape& s, const float* dy, const float* x, float* dw);
};

// Call only when the CPU has the path: these functions are themselves compiled with its flags.
DepthwiseKernels depthwise_kernels_generic();
DepthwiseKernels depthwise_kernels_avx2();
DepthwiseKernels depthwise_kernels_avx512();

}  // namespace pn
