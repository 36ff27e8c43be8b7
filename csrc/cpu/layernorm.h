// Row normalisation for LayerNorm and GroupNorm: x viewed as (rows, D), each row normalised by its
// own mean and variance, then an optional affine map whose parameter for element (r, c) is
// ((r % groups) * D + c) / inner. LayerNorm: groups = inner = 1 (a parameter per column). GroupNorm
// of (N, C, S): rows = N * G, D = (C / G) * S, groups = G, inner = S (a parameter per channel).
// See layernorm.cpp.
#pragma once
#include <cstdint>

namespace pn {

// y = (x - mean[r]) * rstd[r] * weight[p] + bias[p]; weight and bias may each be null. Writes the
// row statistics mean (rows) and rstd = 1 / sqrt(var + eps) (rows), var biased.
void norm_rows_forward(const float* x, const float* weight, const float* bias, float* y, float* mean, float* rstd,
                       int64_t rows, int64_t D, int64_t groups, int64_t inner, float eps);

// With g = dy * weight[p] (dy without weight) and xhat = (x - mean) * rstd:
// dx = rstd * (g - mean_row(g) - xhat * mean_row(g * xhat)), dweight[p] = sum dy * xhat, dbias[p] = sum dy.
// Any of dx, dweight, dbias may be null (not wanted). The parameter sums are deterministic: fixed row
// chunks, added in order, whatever the thread count.
void norm_rows_backward(const float* dy, const float* x, const float* mean, const float* rstd, const float* weight,
                        float* dx, float* dweight, float* dbias, int64_t rows, int64_t D, int64_t groups,
                        int64_t inner);

}  // namespace pn
