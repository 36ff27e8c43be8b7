// The direct stride-1 convolution's task on AVX2 + FMA: pad one image, then sweep its output tiles for
// one block of 6 output channels (the tiling and the napkin math are in conv_direct.h).
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "cpu/conv_direct.h"

namespace pn {
namespace {

constexpr int kCo = DirectPlan::kCo;

// Lane mask with the first `live` of 8 lanes set (sign bit = active for vmaskmov).
inline __m256i first_lanes(int live) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(live), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// Image n of the input, zero-padded: channel c's padded row r at padded[(c*Hp + r) * Wrow], holding
// input row r - pt shifted right by pl. The slack after the last row is zeroed too: tiles at the
// right or bottom edge read into it (lanes that are never stored, but kept finite and normal).
void pad_image(const DirectPlan& plan, int64_t n, float* padded) {
  const DirectProblem& p = plan.p;
  const int64_t Wrow = plan.Wrow, copy = std::min(p.W, Wrow - p.pl);
  for (int64_t c = 0; c < p.ins; ++c) {
    const float* src = p.in + (n * p.ins + c) * p.H * p.W;
    for (int64_t r = 0; r < plan.Hp; ++r) {
      float* row = padded + (c * plan.Hp + r) * Wrow;
      const int64_t h = r - p.pt;
      if (h < 0 || h >= p.H || copy <= 0) {
        std::memset(row, 0, sizeof(float) * Wrow);
        continue;
      }
      std::memset(row, 0, sizeof(float) * p.pl);
      std::memcpy(row + p.pl, src + h * p.W, sizeof(float) * copy);
      std::memset(row + p.pl + copy, 0, sizeof(float) * (Wrow - p.pl - copy));
    }
  }
  std::memset(padded + p.ins * plan.Hp * Wrow, 0, sizeof(float) * (plan.padded_floats() - p.ins * plan.Hp * Wrow));
}

inline void store(float* dst, __m256 v, int lanes) {
  if (lanes == 8)
    _mm256_storeu_ps(dst, v);
  else if (lanes > 0)
    _mm256_maskstore_ps(dst, first_lanes(lanes), v);
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

}  // namespace

void direct_task_avx2(const DirectPlan& plan, int64_t n, int64_t block0, int64_t block1, float* padded) {
  const DirectProblem& p = plan.p;
  pad_image(plan, n, padded);
  const int64_t plane = p.Ho * p.Wo;
  for (int64_t block = block0; block < block1; ++block) {
    const int64_t o0 = block * kCo;
    const int live = static_cast<int>(std::min<int64_t>(kCo, p.outs - o0));
    const float* w = plan.packed + block * plan.K * kCo;
    const float* bias = p.bias ? p.bias + o0 : nullptr;
    float* out = p.out + (n * p.outs + o0) * plane;
    if (p.Wo > 8) {
      // 16 pixels of one output row: vector 1 is the next 8 columns.
      for (int64_t row = 0; row < p.Ho; ++row)
        for (int64_t q = 0; q < p.Wo; q += 16) {
          const int lanes0 = static_cast<int>(std::min<int64_t>(8, p.Wo - q));
          const int lanes1 = static_cast<int>(std::max<int64_t>(0, std::min<int64_t>(8, p.Wo - q - 8)));
          float* dst = out + row * p.Wo + q;
          tile(padded + row * plan.Wrow + q, 8, plan.offsets, plan.K, w, live, bias, p.relu, dst, lanes0, dst + 8,
               lanes1, plane);
        }
    } else {
      // Rows of at most 8 pixels, two at a time: vector 1 is the next output row (one padded row on).
      const int lanes = static_cast<int>(p.Wo);
      for (int64_t row = 0; row < p.Ho; row += 2) {
        float* dst = out + row * p.Wo;
        tile(padded + row * plan.Wrow, plan.Wrow, plan.offsets, plan.K, w, live, bias, p.relu, dst, lanes,
             dst + p.Wo, row + 1 < p.Ho ? lanes : 0, plane);
      }
    }
  }
}

}  // namespace pn
