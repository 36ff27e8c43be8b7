// The direct stride-1 convolution's task on AVX-512: one block of 6 output channels per tile, as on
// AVX2 (conv_direct.h has the design), with 16-pixel vectors.
//
// Tile: 6 output channels x 2 vectors of 16 pixels = 12 zmm accumulators; per reduction index k
// 2 vector loads of the padded image, 6 weight broadcasts, 12 FMAs. What a vector holds depends on
// the output width Wo (the padded rows are Wrow = Wo + dw*(kw-1) floats apart):
//   Wo > 16       32 pixels of one row (vector 1 = the next 16 columns);
//   8 < Wo <= 16  one row per vector, two rows per tile (the 16x16 planes of the small ResNet);
//   Wo <= 8       two rows per vector (its halves loaded from two padded rows), four per tile
//                 (the 8x8 digits planes: 32 live pixels of 32 lanes, where a row per vector
//                 would leave half of every FMA idle).
// Napkin math (one core, 2 x 16-lane FMA per cycle on a Sapphire Rapids class core; Zen 4 splits a
// zmm FMA in two, so half that): a 16 -> 16 3x3 layer on 32x32 has K = 144, a tile is 144 steps of
// 12 FMAs for 6 x 32 outputs, ~6 cycles per step at 2 FMA/cycle: ~190 GFLOP/s per core at peak.
//
// Backward-weight: the AVX2 tile's roles turned the same way, 6 output channels x 2 reduction
// indices over 16 pixels (two rows of 8 per vector for Wo <= 8, as above), the dy side loaded the
// same way as the input side.
#include <immintrin.h>

#include <algorithm>

#include "cpu/conv_direct.h"

namespace pn {
namespace {

constexpr int kCo = DirectPlan::kCo;

// How the two vectors of a tile are laid over the padded input and the output (see above).
enum class Rows { wide, one, two };

inline __mmask16 first_lanes(int live) { return static_cast<__mmask16>((1u << live) - 1u); }

// 16 floats at p (Rows::wide / one), or 8 at p and 8 at p + next (Rows::two), masked to `lanes`
// live pixels per row (`lanes_next` for the second row; the lanes past them read as zero).
template <Rows R>
inline __m512 load_pixels(const float* p, int64_t next, int lanes, int lanes_next) {
  if constexpr (R == Rows::two) {
    const __mmask8 m = static_cast<__mmask8>((1u << lanes) - 1u), m2 = static_cast<__mmask8>((1u << lanes_next) - 1u);
    return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_maskz_loadu_ps(m, p)),
                              _mm256_maskz_loadu_ps(m2, p + next), 1);
  } else {
    (void)next, (void)lanes_next;
    return _mm512_maskz_loadu_ps(first_lanes(lanes), p);
  }
}

// The tile's vector v of one output channel row to dst (Rows::two: its halves to dst and dst + next).
template <Rows R>
inline void store_pixels(float* dst, int64_t next, __m512 v, int lanes, bool second_row) {
  if (lanes <= 0) return;
  if constexpr (R == Rows::two) {
    const __mmask8 m = static_cast<__mmask8>((1u << lanes) - 1u);
    _mm256_mask_storeu_ps(dst, m, _mm512_castps512_ps256(v));
    if (second_row) _mm256_mask_storeu_ps(dst + next, m, _mm512_extractf32x8_ps(v, 1));
  } else {
    _mm512_mask_storeu_ps(dst, first_lanes(lanes), v);
  }
}

// One tile: acc[r][v] = sum_k w[k*kCo + r] * (the pixels of vector v at base + offsets[k] + v*step),
// then rows r < live (+ bias, ReLU) to dst[v] + r*plane. Rows::two reads/writes the second row of
// each vector one padded row / one output row further (in_next / out_next).
template <Rows R>
inline void tile(const float* base, int64_t step, int64_t in_next, const int32_t* offsets, int64_t K, const float* w,
                 int live, const float* bias, bool relu, float* const dst[2], const int lanes[2],
                 const bool second[2], int64_t out_next, int64_t plane) {
  __m512 acc[kCo][2];
#pragma GCC unroll 6
  for (int r = 0; r < kCo; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  const int in_lanes = R == Rows::two ? 8 : 16;  // read whole rows: the lanes past Wo are never stored
#pragma GCC unroll 2
  for (int64_t k = 0; k < K; ++k) {
    const float* b = base + offsets[k];
    const __m512 v0 = load_pixels<R>(b, in_next, in_lanes, in_lanes),
                 v1 = load_pixels<R>(b + step, in_next, in_lanes, in_lanes);
    const float* wk = w + k * kCo;
#pragma GCC unroll 6
    for (int r = 0; r < kCo; ++r) {
      const __m512 a = _mm512_set1_ps(wk[r]);
      acc[r][0] = _mm512_fmadd_ps(a, v0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(a, v1, acc[r][1]);
    }
  }
  const __m512 zero = _mm512_setzero_ps();
#pragma GCC unroll 6
  for (int r = 0; r < kCo; ++r) {
    if (r >= live) break;
    const __m512 b = _mm512_set1_ps(bias ? bias[r] : 0.f);
    __m512 v0 = _mm512_add_ps(acc[r][0], b), v1 = _mm512_add_ps(acc[r][1], b);
    if (relu) v0 = _mm512_max_ps(v0, zero), v1 = _mm512_max_ps(v1, zero);
    store_pixels<R>(dst[0] + r * plane, out_next, v0, lanes[0], second[0]);
    store_pixels<R>(dst[1] + r * plane, out_next, v1, lanes[1], second[1]);
  }
}

// dw_col[r*K + t] += the sum over the pixels of images [0, count) of dy_r * x_t (r < live, t < 1 + pair):
// dy_r is output channel row r of dy (dys[r] + image * dy_image), x_t the padded input of reduction
// index t at offsets[t] (+ image * padded_image); 16 pixels of a row at a time, or (Rows::two, Wo <= 8)
// two rows of Wo. Tail lanes load as zero on both sides.
template <Rows R>
inline void weight_tile(const float* const dys[kCo], int64_t dy_image, const float* padded, int64_t padded_image,
                        const int32_t offsets[2], int64_t count, int64_t Ho, int64_t Wo, int64_t Wrow, int live,
                        bool pair, float* dw_col, int64_t K) {
  __m512 acc[kCo][2];
#pragma GCC unroll 6
  for (int r = 0; r < kCo; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  const int64_t rows_per_step = R == Rows::two ? 2 : 1, width = R == Rows::two ? 8 : 16;
  for (int64_t n = 0; n < count; ++n)
    for (int64_t row = 0; row < Ho; row += rows_per_step) {
      const int64_t dy_at = n * dy_image + row * Wo;
      const float* x0 = padded + n * padded_image + row * Wrow + offsets[0];
      const float* x1 = padded + n * padded_image + row * Wrow + offsets[1];
      for (int64_t q = 0; q < Wo; q += width) {
        const int lanes = static_cast<int>(std::min<int64_t>(width, Wo - q));
        // The second row of a pair past the last output row reads as zero on both sides.
        const int lanes_next = R == Rows::two && row + 1 >= Ho ? 0 : lanes;
        const __m512 v0 = load_pixels<R>(x0 + q, Wrow, lanes, lanes_next),
                     v1 = load_pixels<R>(x1 + q, Wrow, lanes, lanes_next);
#pragma GCC unroll 6
        for (int r = 0; r < kCo; ++r) {
          const __m512 d = load_pixels<R>(dys[r] + dy_at + q, Wo, lanes, lanes_next);
          acc[r][0] = _mm512_fmadd_ps(d, v0, acc[r][0]);
          acc[r][1] = _mm512_fmadd_ps(d, v1, acc[r][1]);
        }
      }
    }
#pragma GCC unroll 6
  for (int r = 0; r < kCo; ++r) {
    if (r >= live) break;
    dw_col[r * K] += _mm512_reduce_add_ps(acc[r][0]);
    if (pair) dw_col[r * K + 1] += _mm512_reduce_add_ps(acc[r][1]);
  }
}

}  // namespace

void direct_weight_tile_avx512(const DirectPlan& plan, const DirectWeightTile& t) {
  const auto tile = plan.p.Wo <= 8 ? weight_tile<Rows::two> : weight_tile<Rows::wide>;
  tile(t.dys, t.dy_image, t.padded, t.padded_image, t.offsets, t.count, plan.p.Ho, plan.p.Wo, plan.Wrow, t.live, t.pair,
       t.dw_col, plan.K);
}

void direct_block_avx512(const DirectPlan& plan, const DirectBlock& b, const float* padded) {
  const DirectProblem& p = plan.p;
  const int64_t plane = p.Ho * p.Wo, Wrow = plan.Wrow, Wo = p.Wo, Ho = p.Ho;
  const int live = b.live;
  const float *w = b.w, *bias = b.bias;
  float* out = b.out;
  if (Wo > 16) {
    for (int64_t row = 0; row < Ho; ++row)
      for (int64_t q = 0; q < Wo; q += 32) {
        float* const dst[2] = {out + row * Wo + q, out + row * Wo + q + 16};
        const int lanes[2] = {int(std::min<int64_t>(16, Wo - q)),
                              int(std::max<int64_t>(0, std::min<int64_t>(16, Wo - q - 16)))};
        const bool second[2] = {false, false};
        tile<Rows::wide>(padded + row * Wrow + q, 16, 0, plan.offsets, plan.K, w, live, bias, p.relu, dst, lanes,
                         second, 0, plane);
      }
  } else if (Wo > 8) {
    for (int64_t row = 0; row < Ho; row += 2) {
      float* const dst[2] = {out + row * Wo, out + (row + 1) * Wo};
      const int lanes[2] = {int(Wo), row + 1 < Ho ? int(Wo) : 0};
      const bool second[2] = {false, false};
      tile<Rows::one>(padded + row * Wrow, Wrow, 0, plan.offsets, plan.K, w, live, bias, p.relu, dst, lanes, second,
                      0, plane);
    }
  } else {
    for (int64_t row = 0; row < Ho; row += 4) {
      float* const dst[2] = {out + row * Wo, out + (row + 2) * Wo};
      const int lanes[2] = {int(Wo), row + 2 < Ho ? int(Wo) : 0};
      const bool second[2] = {row + 1 < Ho, row + 3 < Ho};
      tile<Rows::two>(padded + row * Wrow, 2 * Wrow, Wrow, plan.offsets, plan.K, w, live, bias, p.relu, dst, lanes,
                      second, Wo, plane);
    }
  }
}

}  // namespace pn
