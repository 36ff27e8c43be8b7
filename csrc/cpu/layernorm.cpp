// Row normalisation kernels (LayerNorm, GroupNorm), x viewed as (rows, D); see layernorm.h for the
// parameter indexing.
//
// Strategy: one thread owns a row at a time, and a row (4 KB for LayerNorm(1024)) stays in L1/L2
// while it works on it, so every array is streamed from memory once:
//   - forward: the statistics in one pass (sums of x - k and (x - k)^2 in double, k the row's first
//     value: a shift that keeps the variance free of cancellation when |mean| >> std), then y.
//   - backward: the row sums of g and g * xhat, then dx, with the parameter gradients added in the
//     same pass into double accumulators.
// The parameter gradients sum over rows. Rows go in kChunks fixed chunks (fewer when the
// accumulators would pass kAccumulatorBytes), each chunk with accumulators of its own, added in
// chunk order at the end: the result is the same whatever the number of threads.
// Below kParallelMin elements one thread runs (a team costs more than the loop).
#include "cpu/layernorm.h"
#include "cpu/parallel_team.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace pn {

namespace {

constexpr int64_t kParallelMin = 1 << 15;
constexpr int64_t kChunks = 16;
constexpr int64_t kAccumulatorBytes = int64_t(32) << 20;

struct RowStats {
  float mean, rstd;
};

RowStats row_stats(const float* x, int64_t D, float eps) {
  const double k = x[0];
  double s1 = 0.0, s2 = 0.0;
#pragma omp simd reduction(+ : s1, s2)
  for (int64_t c = 0; c < D; ++c) {
    const double d = static_cast<double>(x[c]) - k;
    s1 += d;
    s2 += d * d;
  }
  const double m = s1 / static_cast<double>(D);
  const double v = s2 / static_cast<double>(D) - m * m;
  return {static_cast<float>(k + m), static_cast<float>(1.0 / std::sqrt((v > 0.0 ? v : 0.0) + eps))};
}

// y = (x - m) * r (* w) (+ b): per column (inner == 1) or per block of `inner` columns.
template <bool kWeight, bool kBias>
void normalize_row(const float* x, const float* w, const float* b, float* y, int64_t D, int64_t inner, float m,
                   float r) {
  if (inner == 1) {
#pragma omp simd
    for (int64_t c = 0; c < D; ++c) {
      float v = (x[c] - m) * r;
      if (kWeight) v *= w[c];
      if (kBias) v += b[c];
      y[c] = v;
    }
    return;
  }
  for (int64_t j = 0, blocks = D / inner; j < blocks; ++j) {
    const float a = kWeight ? w[j] * r : r, shift = kBias ? b[j] : 0.f;
    const float* xj = x + j * inner;
    float* yj = y + j * inner;
#pragma omp simd
    for (int64_t s = 0; s < inner; ++s) yj[s] = (xj[s] - m) * a + shift;
  }
}

using NormalizeRow = void (*)(const float*, const float*, const float*, float*, int64_t, int64_t, float, float);

NormalizeRow pick_normalize(bool weight, bool bias) {
  if (weight) return bias ? normalize_row<true, true> : normalize_row<true, false>;
  return bias ? normalize_row<false, true> : normalize_row<false, false>;
}

// One row of the backward, a parameter per column (inner == 1). w: the row's parameters or null;
// dx, acc_w / acc_b: null when not wanted.
template <bool kWeight>
void backward_row_columns(const float* dy, const float* x, float m, float r, const float* w, float* dx,
                          double* acc_w, double* acc_b, int64_t D, int64_t) {
  if (dx != nullptr) {
    double sg = 0.0, sgx = 0.0;
#pragma omp simd reduction(+ : sg, sgx)
    for (int64_t c = 0; c < D; ++c) {
      const float g = kWeight ? dy[c] * w[c] : dy[c];
      sg += g;
      sgx += static_cast<double>(g * (x[c] - m));
    }
    const float mean_g = static_cast<float>(sg / static_cast<double>(D));
    const float mean_gx = static_cast<float>(sgx * r / static_cast<double>(D));
#pragma omp simd
    for (int64_t c = 0; c < D; ++c) {
      const float g = kWeight ? dy[c] * w[c] : dy[c];
      dx[c] = r * (g - mean_g - (x[c] - m) * r * mean_gx);
    }
  }
  if (acc_w != nullptr) {
#pragma omp simd
    for (int64_t c = 0; c < D; ++c) {
      acc_w[c] += static_cast<double>(dy[c] * ((x[c] - m) * r));
      acc_b[c] += dy[c];
    }
  }
}

// The same with a parameter per block of `inner` contiguous columns (GroupNorm's channels).
template <bool kWeight>
void backward_row_blocks(const float* dy, const float* x, float m, float r, const float* w, float* dx,
                         double* acc_w, double* acc_b, int64_t D, int64_t inner) {
  const int64_t blocks = D / inner;
  if (dx != nullptr) {
    double sg = 0.0, sgx = 0.0;
    for (int64_t j = 0; j < blocks; ++j) {
      const float wj = kWeight ? w[j] : 1.f;
      const float* dyj = dy + j * inner;
      const float* xj = x + j * inner;
      double bg = 0.0, bgx = 0.0;
#pragma omp simd reduction(+ : bg, bgx)
      for (int64_t s = 0; s < inner; ++s) {
        bg += dyj[s];
        bgx += static_cast<double>(dyj[s] * (xj[s] - m));
      }
      sg += wj * bg;
      sgx += wj * bgx;
    }
    const float mean_g = static_cast<float>(sg / static_cast<double>(D));
    const float mean_gx = static_cast<float>(sgx * r / static_cast<double>(D));
    for (int64_t j = 0; j < blocks; ++j) {
      const float wj = kWeight ? w[j] : 1.f;
      const float* dyj = dy + j * inner;
      const float* xj = x + j * inner;
      float* dxj = dx + j * inner;
#pragma omp simd
      for (int64_t s = 0; s < inner; ++s) dxj[s] = r * (dyj[s] * wj - mean_g - (xj[s] - m) * r * mean_gx);
    }
  }
  if (acc_w != nullptr) {
    for (int64_t j = 0; j < blocks; ++j) {
      const float* dyj = dy + j * inner;
      const float* xj = x + j * inner;
      double sw = 0.0, sb = 0.0;
#pragma omp simd reduction(+ : sw, sb)
      for (int64_t s = 0; s < inner; ++s) {
        sw += static_cast<double>(dyj[s] * (xj[s] - m));
        sb += dyj[s];
      }
      acc_w[j] += sw * r;
      acc_b[j] += sb;
    }
  }
}

using BackwardRow = void (*)(const float*, const float*, float, float, const float*, float*, double*, double*,
                             int64_t, int64_t);

BackwardRow pick_backward(bool weight, int64_t inner) {
  if (inner == 1) return weight ? backward_row_columns<true> : backward_row_columns<false>;
  return weight ? backward_row_blocks<true> : backward_row_blocks<false>;
}

}  // namespace

void norm_rows_forward(const float* x, const float* weight, const float* bias, float* y, float* mean, float* rstd,
                       int64_t rows, int64_t D, int64_t groups, int64_t inner, float eps) {
  const int64_t per_group = D / inner;
  const NormalizeRow normalize = pick_normalize(weight != nullptr, bias != nullptr);
#pragma omp parallel for num_threads(elements_team(rows * D, kParallelMin)) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * D;
    const RowStats s = row_stats(xr, D, eps);
    mean[r] = s.mean;
    rstd[r] = s.rstd;
    const int64_t p0 = (r % groups) * per_group;
    normalize(xr, weight ? weight + p0 : nullptr, bias ? bias + p0 : nullptr, y + r * D, D, inner, s.mean, s.rstd);
  }
}

void norm_rows_backward(const float* dy, const float* x, const float* mean, const float* rstd, const float* weight,
                        float* dx, float* dweight, float* dbias, int64_t rows, int64_t D, int64_t groups,
                        int64_t inner) {
  const int64_t per_group = D / inner, params = groups * per_group;
  const bool sums = dweight != nullptr || dbias != nullptr;
  // Without parameter sums every row is a chunk of its own; with them, a fixed number of chunks.
  int64_t chunks = rows;
  if (sums) chunks = std::max<int64_t>(1, std::min({rows, kChunks, kAccumulatorBytes / (16 * params)}));
  const int64_t rows_per_chunk = (rows + chunks - 1) / chunks;
  std::vector<double> acc(sums ? static_cast<size_t>(chunks * 2 * params) : 0, 0.0);
  const BackwardRow row_fn = pick_backward(weight != nullptr, inner);
#pragma omp parallel for num_threads(elements_team(rows * D, kParallelMin)) schedule(dynamic, 1)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    double* acc_w = sums ? acc.data() + chunk * 2 * params : nullptr;
    const int64_t end = std::min(rows, (chunk + 1) * rows_per_chunk);
    for (int64_t r = chunk * rows_per_chunk; r < end; ++r) {
      const int64_t p0 = (r % groups) * per_group;
      row_fn(dy + r * D, x + r * D, mean[r], rstd[r], weight ? weight + p0 : nullptr, dx ? dx + r * D : nullptr,
             sums ? acc_w + p0 : nullptr, sums ? acc_w + params + p0 : nullptr, D, inner);
    }
  }
  if (!sums) return;
  for (int64_t p = 0; p < params; ++p) {
    double sw = 0.0, sb = 0.0;
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      sw += acc[chunk * 2 * params + p];
      sb += acc[chunk * 2 * params + params + p];
    }
    if (dweight != nullptr) dweight[p] = static_cast<float>(sw);
    if (dbias != nullptr) dbias[p] = static_cast<float>(sb);
  }
}

}  // namespace pn
