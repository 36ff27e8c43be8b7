// Batch normalisation kernels, x viewed as (outer, channels, inner): NCHW is (N, C, H*W), (N, C) is
// (N, C, 1), and channels_last NHWC is (N*H*W, C, 1).
//
// Strategy: every pass is a streaming loop at memory speed, so the work is in touching each array
// as few times as possible and splitting it over the OpenMP threads.
//   - Reductions (statistics, backward sums) parallelise over channels; each channel walks its
//     `outer` runs of `inner` contiguous values with vector partial sums in double, so 10^6-element
//     channels lose nothing to float rounding. The statistics take one pass: sums of (x - k) and
//     (x - k)^2 with k the channel's first value (a shift that keeps the variance free of
//     cancellation when |mean| >> std).
//   - Elementwise passes parallelise over the outer * channels runs of `inner` values, each with
//     its channel's constants in registers.
// Below kParallelMin elements one thread runs (a team costs more than the loop).
//
// inner == 1 is channels_last (NHWC as (N*H*W, C)) and BatchNorm1d's (N, C): each row holds every
// channel, so channel-parallel loops would stride by C per element. These shapes run row-wise
// instead: the reductions cut the rows into fixed blocks of kRowBlock (256) rows, each block's
// per-channel partial sums (float vectors along C, as the NCHW path's 256-element blocks) land in
// their own slot, and the slots are added in double in block order afterwards (the same bits at any
// thread count); the elementwise passes take rows, the channel constants streamed beside them.
// Napkin math: (32*32*32, 16) is 2 MiB per array; the statistics read x once, the backward reads
// dy, x and y twice and writes dx: ~14 MiB, ~1 ms at the ~15 GB/s two busy cores stream; the
// partials are 2 * C floats per 256 rows, 1/128 of x.
#include "cpu/batchnorm.h"
#include "cpu/parallel_team.h"

#include <omp.h>

#include <vector>

namespace pn {

namespace {

constexpr int64_t kParallelMin = 1 << 15;
constexpr int64_t kBlock = 256;
constexpr int64_t kRowBlock = 256;

// total[0:width] = the sum over fixed blocks of kRowBlock rows of what block(r0, r1, acc) adds into
// its zeroed float acc[0:width]: float within a block (GCC vectorises float sums along C, not
// mixed float/double ones), each block's sums widened to double and added in block order.
template <typename Block>
void row_block_sums(int64_t rows, int64_t width, int64_t elements, double* total, Block&& block) {
  const int64_t blocks = (rows + kRowBlock - 1) / kRowBlock;
  std::vector<float> partial(blocks * width, 0.f);
#pragma omp parallel for num_threads(elements_team(elements, kParallelMin)) schedule(static)
  for (int64_t b = 0; b < blocks; ++b)
    block(b * kRowBlock, b * kRowBlock + kRowBlock < rows ? b * kRowBlock + kRowBlock : rows,
          partial.data() + b * width);
  for (int64_t i = 0; i < width; ++i) total[i] = 0.0;
  for (int64_t b = 0; b < blocks; ++b)
    for (int64_t i = 0; i < width; ++i) total[i] += static_cast<double>(partial[b * width + i]);
}

// channel_stats for inner == 1: x is (rows, channels), shifted by its first row.
void channel_stats_rows(const float* x, float* mean, float* var, int64_t rows, int64_t C) {
  std::vector<double> sums(2 * C);
  row_block_sums(rows, 2 * C, rows * C, sums.data(), [&](int64_t r0, int64_t r1, float* acc) {
    float* s1 = acc;
    float* s2 = acc + C;
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const float d = xr[c] - x[c];
        s1[c] += d;
        s2[c] += d * d;
      }
    }
  });
  for (int64_t c = 0; c < C; ++c) {
    const double m = sums[c] / static_cast<double>(rows);
    const double v = sums[C + c] / static_cast<double>(rows) - m * m;
    mean[c] = static_cast<float>(x[c] + m);
    var[c] = static_cast<float>(v > 0.0 ? v : 0.0);
  }
}

void channel_affine_rows(const float* x, const float* scale, const float* shift, float* y, int64_t rows, int64_t C,
                         bool relu) {
#pragma omp parallel for num_threads(elements_team(rows * C, kParallelMin)) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * C;
    float* yr = y + r * C;
    if (relu) {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const float v = xr[c] * scale[c] + shift[c];
        yr[c] = v < 0.f ? 0.f : v;  // NaN stays NaN
      }
    } else {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] * scale[c] + shift[c];
    }
  }
}

void backward_reduce_rows(const float* dy, const float* y, const float* x, const float* mean, const float* invstd,
                          float* sum_g, float* sum_gx, int64_t rows, int64_t C) {
  std::vector<double> sums(2 * C);
  row_block_sums(rows, 2 * C, rows * C, sums.data(), [&](int64_t r0, int64_t r1, float* acc) {
    float* sg = acc;
    float* sgx = acc + C;
    for (int64_t r = r0; r < r1; ++r) {
      const float* gr = dy + r * C;
      const float* xr = x + r * C;
      if (y) {
        const float* yr = y + r * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          const float gv = gr[c];  // read unconditionally: a load inside the select stays scalar
          const float g = yr[c] > 0.f ? gv : 0.f;
          sg[c] += g;
          sgx[c] += g * (xr[c] - mean[c]);
        }
      } else {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          sg[c] += gr[c];
          sgx[c] += gr[c] * (xr[c] - mean[c]);
        }
      }
    }
  });
  for (int64_t c = 0; c < C; ++c) {
    sum_g[c] = static_cast<float>(sums[c]);
    sum_gx[c] = static_cast<float>(sums[C + c] * invstd[c]);
  }
}

void backward_apply_rows(const float* dy, const float* y, const float* x, const float* mean, const float* invstd,
                         const float* scale, const float* mean_g, const float* mean_gx, float* dx, int64_t rows,
                         int64_t C) {
#pragma omp parallel for num_threads(elements_team(rows * C, kParallelMin)) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* gr = dy + r * C;
    const float* xr = x + r * C;
    float* dr = dx + r * C;
    if (y) {
      const float* yr = y + r * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const float gv = gr[c];
        const float g = yr[c] > 0.f ? gv : 0.f;
        dr[c] = scale[c] * (g - mean_g[c] - (xr[c] - mean[c]) * invstd[c] * mean_gx[c]);
      }
    } else {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c)
        dr[c] = scale[c] * (gr[c] - mean_g[c] - (xr[c] - mean[c]) * invstd[c] * mean_gx[c]);
    }
  }
}

}  // namespace

void channel_stats(const float* x, float* mean, float* var, int64_t outer, int64_t channels, int64_t inner) {
  if (inner == 1) return channel_stats_rows(x, mean, var, outer, channels);
  const int64_t count = outer * inner;
#pragma omp parallel for num_threads(elements_team(count * channels, kParallelMin)) schedule(static)
  for (int64_t c = 0; c < channels; ++c) {
    const double k = x[c * inner];
    double s1 = 0.0, s2 = 0.0;
    for (int64_t o = 0; o < outer; ++o) {
      const float* xr = x + (o * channels + c) * inner;
#pragma omp simd reduction(+ : s1, s2)
      for (int64_t i = 0; i < inner; ++i) {
        const double d = static_cast<double>(xr[i]) - k;
        s1 += d;
        s2 += d * d;
      }
    }
    const double m = s1 / static_cast<double>(count);
    const double v = s2 / static_cast<double>(count) - m * m;
    mean[c] = static_cast<float>(k + m);
    var[c] = static_cast<float>(v > 0.0 ? v : 0.0);
  }
}

void channel_affine(const float* x, const float* scale, const float* shift, float* y, int64_t outer,
                    int64_t channels, int64_t inner, bool relu) {
  if (inner == 1) return channel_affine_rows(x, scale, shift, y, outer, channels, relu);
  const int64_t runs = outer * channels;
#pragma omp parallel for num_threads(elements_team(runs * inner, kParallelMin)) schedule(static)
  for (int64_t r = 0; r < runs; ++r) {
    const int64_t c = r % channels;
    const float a = scale[c], b = shift[c];
    const float* xr = x + r * inner;
    float* yr = y + r * inner;
    if (relu) {
#pragma omp simd
      for (int64_t i = 0; i < inner; ++i) {
        const float v = xr[i] * a + b;
        yr[i] = v < 0.f ? 0.f : v;  // NaN stays NaN
      }
    } else {
#pragma omp simd
      for (int64_t i = 0; i < inner; ++i) yr[i] = xr[i] * a + b;
    }
  }
}

void batchnorm_backward_reduce(const float* dy, const float* y, const float* x, const float* mean,
                               const float* invstd, float* sum_g, float* sum_gx, int64_t outer, int64_t channels,
                               int64_t inner) {
  if (inner == 1) return backward_reduce_rows(dy, y, x, mean, invstd, sum_g, sum_gx, outer, channels);
#pragma omp parallel for num_threads(elements_team(outer * inner * channels, kParallelMin)) schedule(static)
  for (int64_t c = 0; c < channels; ++c) {
    const float m = mean[c];
    double sg = 0.0, sgx = 0.0;
    for (int64_t o = 0; o < outer; ++o) {
      const int64_t base = (o * channels + c) * inner;
      const float* gr = dy + base;
      const float* xr = x + base;
      if (y != nullptr) {
        // The masked sums run in float over blocks of kBlock (with a select and a double
        // accumulator in one loop GCC's vector code ran 10x slower), each block added in double.
        const float* yr = y + base;
        for (int64_t i0 = 0; i0 < inner; i0 += kBlock) {
          const int64_t i1 = i0 + kBlock < inner ? i0 + kBlock : inner;
          float bg = 0.f, bgx = 0.f;
#pragma omp simd reduction(+ : bg, bgx)
          for (int64_t i = i0; i < i1; ++i) {
            const float gv = gr[i];  // read unconditionally: a load inside the select stays scalar
            const float g = yr[i] > 0.f ? gv : 0.f;
            bg += g;
            bgx += g * (xr[i] - m);
          }
          sg += bg;
          sgx += bgx;
        }
      } else {
#pragma omp simd reduction(+ : sg, sgx)
        for (int64_t i = 0; i < inner; ++i) {
          sg += gr[i];
          sgx += static_cast<double>(gr[i] * (xr[i] - m));
        }
      }
    }
    sum_g[c] = static_cast<float>(sg);
    sum_gx[c] = static_cast<float>(sgx * invstd[c]);
  }
}

void batchnorm_backward_apply(const float* dy, const float* y, const float* x, const float* mean,
                              const float* invstd, const float* scale, const float* mean_g, const float* mean_gx,
                              float* dx, int64_t outer, int64_t channels, int64_t inner) {
  if (inner == 1) return backward_apply_rows(dy, y, x, mean, invstd, scale, mean_g, mean_gx, dx, outer, channels);
  const int64_t runs = outer * channels;
#pragma omp parallel for num_threads(elements_team(runs * inner, kParallelMin)) schedule(static)
  for (int64_t r = 0; r < runs; ++r) {
    const int64_t c = r % channels;
    const float m = mean[c], s = invstd[c], a = scale[c], mg = mean_g[c], mgx = mean_gx[c];
    const int64_t base = r * inner;
    const float* gr = dy + base;
    const float* xr = x + base;
    float* dr = dx + base;
    if (y != nullptr) {
      const float* yr = y + base;
#pragma omp simd
      for (int64_t i = 0; i < inner; ++i) {
        const float gv = gr[i];
        const float g = yr[i] > 0.f ? gv : 0.f;
        dr[i] = a * (g - mg - (xr[i] - m) * s * mgx);
      }
    } else {
#pragma omp simd
      for (int64_t i = 0; i < inner; ++i) dr[i] = a * (gr[i] - mg - (xr[i] - m) * s * mgx);
    }
  }
}

}  // namespace pn
