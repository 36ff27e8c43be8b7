// Batch normalisation over the channel axis of x viewed as (outer, channels, inner): per-channel
// statistics, the per-channel affine map, and the two passes of the training backward. See batchnorm.cpp.
// channels_last (NHWC) memory is (N*H*W, C, 1): inner == 1 runs row-wise kernels.
#pragma once
#include <cstdint>

namespace pn {

// mean[c] and biased var[c] of x[:, c, :] (outer * inner values each).
void channel_stats(const float* x, float* mean, float* var, int64_t outer, int64_t channels, int64_t inner);

// y[o, c, i] = x[o, c, i] * scale[c] + shift[c], then max(., 0) if relu. y may be x.
void channel_affine(const float* x, const float* scale, const float* shift, float* y, int64_t outer,
                    int64_t channels, int64_t inner, bool relu);

// With g = dy masked by y > 0 when y is given (a fused ReLU), xhat = (x - mean) * invstd:
// sum_g[c] = sum g, sum_gx[c] = sum g * xhat.
void batchnorm_backward_reduce(const float* dy, const float* y, const float* x, const float* mean,
                               const float* invstd, float* sum_g, float* sum_gx, int64_t outer, int64_t channels,
                               int64_t inner);

// dx = scale[c] * (g - mean_g[c] - xhat * mean_gx[c]), g and xhat as above. dx may be dy.
void batchnorm_backward_apply(const float* dy, const float* y, const float* x, const float* mean,
                              const float* invstd, const float* scale, const float* mean_g, const float* mean_gx,
                              float* dx, int64_t outer, int64_t channels, int64_t inner);

}  // namespace pn
