// 2-D convolution on the CPU (float32): forward, backward-data and backward-weight, with stride,
// padding, dilation and groups, all running on the packed GEMM of gemm.h. NCHW tensors with OIHW
// weights: the strategy of each pass is at the top of conv.cpp, the implicit-im2col packers in
// conv_pack.h. channels_last (NHWC tensors, OHWI weights): conv_nhwc.cpp.
#pragma once
#include <cstdint>

namespace pn {

// Every dimension of one convolution. make_conv2d_shape() checks and derives Ho/Wo; the kernels
// trust a Conv2dShape that came from it.
struct Conv2dShape {
  int64_t N, C, H, W;        // input
  int64_t Co, kh, kw;        // weight is (Co, C/groups, kh, kw)
  int64_t sh, sw, ph, pw, dh, dw, groups;
  int64_t Ho, Wo;            // output, derived

  int64_t Cg() const { return C / groups; }    // input channels per group
  int64_t Cog() const { return Co / groups; }  // output channels per group
};

// Throws std::invalid_argument (-> ValueError) naming the offending argument for any shape that
// is not a valid convolution: non-positive sizes, channels not divisible by groups, stride or
// dilation < 1, negative padding, a kernel larger than the padded input.
// Multiply-adds x 2 of one pass (forward, backward-data and backward-weight all do the same).
inline double conv_flops(const Conv2dShape& s) {
  return 2.0 * double(s.N) * double(s.Co) * double(s.Ho) * double(s.Wo) * double(s.C / s.groups) * double(s.kh) *
         double(s.kw);
}

Conv2dShape make_conv2d_shape(int64_t N, int64_t C, int64_t H, int64_t W, int64_t Co, int64_t Cw, int64_t kh,
                              int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw,
                              int64_t groups);

// How the two cores are shared out. images: threads take whole (image, group) tasks and each runs
// single-threaded GEMMs (backward-weight: threads take slices of the batch and reduce their
// partial dW in a fixed order). gemm: one task at a time, the GEMM uses every thread. automatic
// picks per shape (conv.cpp explains the rule); the other two exist so tests cover both paths.
enum class ConvParallel { automatic, images, gemm };
ConvParallel conv_parallel_from_name(const char* name);

// y (N, Co, Ho, Wo) = conv(x, w) (+ bias[co]) (then max(., 0) when relu). bias may be null.
void conv2d_forward(const Conv2dShape& s, const float* x, const float* w, const float* bias, bool relu, float* y,
                    ConvParallel par = ConvParallel::automatic);

// dx (N, C, H, W) = gradient of sum(conv(x, w) * dy) with respect to x; dy is (N, Co, Ho, Wo).
void conv2d_backward_data(const Conv2dShape& s, const float* dy, const float* w, float* dx,
                          ConvParallel par = ConvParallel::automatic);

// dw (Co, C/groups, kh, kw) = gradient of sum(conv(x, w) * dy) with respect to w.
void conv2d_backward_weight(const Conv2dShape& s, const float* dy, const float* x, float* dw,
                            ConvParallel par = ConvParallel::automatic);

// The same three passes on channels_last memory: x (N, H, W, C), w (Co, kh, kw, C/groups) (OHWI),
// y and dy (N, Ho, Wo, Co), dx (N, H, W, C), dw (Co, kh, kw, C/groups). The Conv2dShape is the
// logical one (make_conv2d_shape with N, C, H, W and Co, C/groups, kh, kw), as for NCHW.
void conv2d_forward_nhwc(const Conv2dShape& s, const float* x, const float* w, const float* bias, bool relu,
                         float* y, ConvParallel par = ConvParallel::automatic);
void conv2d_backward_data_nhwc(const Conv2dShape& s, const float* dy, const float* w, float* dx,
                               ConvParallel par = ConvParallel::automatic);
void conv2d_backward_weight_nhwc(const Conv2dShape& s, const float* dy, const float* x, float* dw,
                                 ConvParallel par = ConvParallel::automatic);

}  // namespace pn
