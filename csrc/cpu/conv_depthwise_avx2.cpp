// The depthwise convolution (conv_depthwise_planes.inl) compiled for AVX2 + FMA: 8 floats per vector.
#include "cpu/conv_depthwise.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <immintrin.h>
#include <vector>

namespace pn {
namespace {
#include "cpu/conv_depthwise_planes.inl"
}  // namespace

DepthwiseKernels depthwise_kernels_avx2() { return {forward, backward_data, backward_weight}; }

}  // namespace pn
