// 2-D convolution of bfloat16 operands with float32 accumulation on the CPU: forward (fused bias +
// ReLU, float32 or bf16 output), backward-data and backward-weight, NCHW or NHWC activations, stride,
// padding, dilation and groups. Every pass is one call of the bf16 GEMM (gemm_bf16.h) per group (or
// per image and group) whose im2col operand packs itself; conv_bf16.cpp tells how.
#pragma once
#include <cstdint>

#include "cpu/conv.h"
#include "cpu/gemm_bf16.h"

namespace pn {

// Memory order of the activations x, y, dx, dy (logical shape always N, C, H, W). The weight is
// always (Co, C/groups, kh, kw), C-contiguous.
enum class ConvLayout { nchw, nhwc };

// Arrays of bf16 are their uint16 bit patterns. An output is float32, or bf16 (rounded to nearest
// even once, from the float32 sum) when its *_bf16 flag is set.

// y = relu?(conv(x, w) + bias); bias (Co floats) may be null.
void conv2d_bf16_forward(const Conv2dShape& s, ConvLayout layout, const uint16_t* x, const uint16_t* w,
                         const float* bias, bool relu, void* y, bool y_bf16, Bf16GemmIsa isa);

// dx = gradient of sum(conv(x, w) * dy) with respect to x.
void conv2d_bf16_backward_data(const Conv2dShape& s, ConvLayout layout, const uint16_t* dy, const uint16_t* w,
                               void* dx, bool dx_bf16, Bf16GemmIsa isa);

// dw (Co, C/groups, kh, kw), float32 = gradient of sum(conv(x, w) * dy) with respect to w.
void conv2d_bf16_backward_weight(const Conv2dShape& s, ConvLayout layout, const uint16_t* dy, const uint16_t* x,
                                 float* dw, Bf16GemmIsa isa);

}  // namespace pn
