// The direct stride-1 convolution's task on AVX2 + FMA: pad one image, then sweep its output tiles for
// one block of 6 output channels (the tiling and the napkin math are in conv_direct.h).
#include <immintrin.h>

#include <algorithm>

#include "cpu/avx2_lanes.h"
#include "cpu/conv_direct.h"

namespace pn {
namespace {

constexpr int kCo = DirectPlan::kCo;

inline void store(float* dst, __m256 v, int lanes) {
  if (lanes == 8)
    _mm256_storeu_ps(dst, v);
  else if (lanes > 0)
    _mm256_maskstore_ps(dst, avx2_first_lanes(lanes), v);
}

// One tile: acc[r][v] = sum_k w[k*kCo + r] * base[offsets[k] + v*step] over 8 lanes (r < 6, v < 2),
// then rows r < live (+ bias, ReLU) to dst0 + r*plane (vector 0) and dst1 + r*plane (vector 1). The
// accumulators are locals of this one function, so they stay in the 12 registers.
inline void tile(const float* base, int64_t step, const int32_t* offsets, int64_t K, const float* w, int live,
                 const float* bias, bool relu, float* dst0, int lanes0, float* dst1, int lanes1, int64_t plane) {
  __m256 acc[kCo][2];
#pragma GCC unroll 6
  for (int r = 0; r < kCo; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
#pragma GCC unroll 2
  for (int64_t k = 0; k < K; ++k) {
    const float* b = base + offsets[k];
    const __m256 v0 = _mm256_loadu_ps(b), v1 = _mm256_loadu_ps(b + step);
    const float* wk = w + k * kCo;
#pragma GCC unroll 6
    for (int r = 0; r < kCo; ++r) {
      const __m256 a = _mm256_broadcast_ss(wk + r);
      acc[r][0] = _mm256_fmadd_ps(a, v0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(a, v1, acc[r][1]);
    }
  }
  const __m256 zero = _mm256_setzero_ps();
#pragma GCC unroll 6
  for (int r = 0; r < kCo; ++r) {
    if (r >= live) break;
    const __m256 b = _mm256_set1_ps(bias ? bias[r] : 0.f);
    __m256 v0 = _mm256_add_ps(acc[r][0], b), v1 = _mm256_add_ps(acc[r][1], b);
    if (relu) v0 = _mm256_max_ps(v0, zero), v1 = _mm256_max_ps(v1, zero);
    store(dst0 + r * plane, v0, lanes0);
    store(dst1 + r * plane, v1, lanes1);
  }
}

// Sum of the 8 lanes.
inline float lane_sum(__m256 v) {
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  return _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
}

// dw_col[r*K + t] += the sum over the pixels of images [0, count) of dy_r * x_t (r < live, t < 1 + pair),
// 8 lanes at a time: dy_r is output channel row r of dy (dys[r] + image * dy_image), x_t the padded
// input of reduction index t at offsets[t] (+ image * padded_image). Tail lanes of a row load as zero
// on both sides. The accumulators are locals of this one function, so they stay in registers.
inline void weight_tile(const float* const dys[kCo], int64_t dy_image, const float* padded, int64_t padded_image,
                        const int32_t offsets[2], int64_t count, int64_t Ho, int64_t Wo, int64_t Wrow, int live,
                        bool pair, float* dw_col, int64_t K) {
  __m256 acc[kCo][2];
#pragma GCC unroll 6
  for (int r = 0; r < kCo; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (int64_t n = 0; n < count; ++n)
    for (int64_t row = 0; row < Ho; ++row) {
      const int64_t dy_at = n * dy_image + row * Wo;
      const float* x0 = padded + n * padded_image + row * Wrow + offsets[0];
      const float* x1 = padded + n * padded_image + row * Wrow + offsets[1];
      for (int64_t q = 0; q < Wo; q += 8) {
        const int lanes = static_cast<int>(std::min<int64_t>(8, Wo - q));
        // 12 accumulators + the 2 input vectors + one dy row at a time: 15 of the 16 ymm registers.
        if (lanes == 8) {
          const __m256 v0 = _mm256_loadu_ps(x0 + q), v1 = _mm256_loadu_ps(x1 + q);
#pragma GCC unroll 6
          for (int r = 0; r < kCo; ++r) {
            const __m256 d = _mm256_loadu_ps(dys[r] + dy_at + q);
            acc[r][0] = _mm256_fmadd_ps(d, v0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(d, v1, acc[r][1]);
          }
        } else {
          const __m256i m = avx2_first_lanes(lanes);
          const __m256 v0 = _mm256_maskload_ps(x0 + q, m), v1 = _mm256_maskload_ps(x1 + q, m);
#pragma GCC unroll 6
          for (int r = 0; r < kCo; ++r) {
            const __m256 d = _mm256_maskload_ps(dys[r] + dy_at + q, m);
            acc[r][0] = _mm256_fmadd_ps(d, v0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(d, v1, acc[r][1]);
          }
        }
      }
    }
#pragma GCC unroll 6
  for (int r = 0; r < kCo; ++r) {
    if (r >= live) break;
    dw_col[r * K] += lane_sum(acc[r][0]);
    if (pair) dw_col[r * K + 1] += lane_sum(acc[r][1]);
  }
}

}  // namespace

void direct_weight_tile_avx2(const DirectPlan& plan, const DirectWeightTile& t) {
  weight_tile(t.dys, t.dy_image, t.padded, t.padded_image, t.offsets, t.count, plan.p.Ho, plan.p.Wo, plan.Wrow, t.live,
              t.pair, t.dw_col, plan.K);
}

void direct_block_avx2(const DirectPlan& plan, const DirectBlock& b, const float* padded) {
  const DirectProblem& p = plan.p;
  const int64_t plane = p.Ho * p.Wo;
  if (p.Wo > 8) {
    // 16 pixels of one output row: vector 1 is the next 8 columns.
    for (int64_t row = 0; row < p.Ho; ++row)
      for (int64_t q = 0; q < p.Wo; q += 16) {
        const int lanes0 = static_cast<int>(std::min<int64_t>(8, p.Wo - q));
        const int lanes1 = static_cast<int>(std::max<int64_t>(0, std::min<int64_t>(8, p.Wo - q - 8)));
        float* dst = b.out + row * p.Wo + q;
        tile(padded + row * plan.Wrow + q, 8, plan.offsets, plan.K, b.w, b.live, b.bias, p.relu, dst, lanes0, dst + 8,
             lanes1, plane);
      }
  } else {
    // Rows of at most 8 pixels, two at a time: vector 1 is the next output row (one padded row on).
    const int lanes = static_cast<int>(p.Wo);
    for (int64_t row = 0; row < p.Ho; row += 2) {
      float* dst = b.out + row * p.Wo;
      tile(padded + row * plan.Wrow, plan.Wrow, plan.offsets, plan.K, b.w, b.live, b.bias, p.relu, dst, lanes,
           dst + p.Wo, row + 1 < p.Ho ? lanes : 0, plane);
    }
  }
}

}  // namespace pn
