// Which shapes go to the direct stride-1 convolution, and its two passes as correlations (the
// design is in conv_direct.h; the microkernels are in conv_direct_avx2.cpp and conv_direct_avx512.cpp).
#include "cpu/conv_direct.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/cpu_features.h"
#include "cpu/conv_tasks.h"

namespace pn {

namespace {

// Few channels: up to a 64-channel 3x3 reduction and 64 outputs. Past that each packed element of
// the implicit GEMM feeds enough flops that its packing no longer dominates, and the GEMM's cache
// blocking of a long K serves better than reading kh*kw*C padded rows per tile.
constexpr int64_t kMaxK = 64 * 9;
constexpr int64_t kMaxOut = 64;

// The padded image of a pass (ins channels of rows x cols), read by every tile of every channel
// block, must stay in L2: 64 x 58 x 58 floats (ResNet-50's 56x56 64-channel layer, 861 KiB) ran at
// 0.70x the GEMM path single-threaded, 16 x 34 x 34 (74 KiB) at 1.9x.
constexpr int64_t kMaxPaddedFloats = 64 * 1024;

bool direct_shape(const Conv2dShape& s, int64_t ins, int64_t rows, int64_t cols) {
  const Isa isa = active_isa();
  return (isa == Isa::avx2 || isa == Isa::avx512) && s.sh == 1 && s.sw == 1 && s.groups == 1 &&
         s.ph <= s.dh * (s.kh - 1) && s.pw <= s.dw * (s.kw - 1) && ins * (rows + 2) * cols <= kMaxPaddedFloats;
}

// The packed weights and the offset table of one call (the plan points into them).
struct PlanStorage {
  std::vector<float> packed;
  std::vector<int32_t> offsets;
};

DirectPlan make_plan(const DirectProblem& p, PlanStorage& storage, bool pack_weights) {
  constexpr int kCo = DirectPlan::kCo;
  const int64_t K = p.ins * p.kh * p.kw;
  // The padded extent the output needs: rows p + i*dh for p < Ho, columns q + j*dw for q < Wo.
  const int64_t Hp = p.Ho + p.dh * (p.kh - 1), Wrow = p.Wo + p.dw * (p.kw - 1);
  storage.offsets.resize(K);
  for (int64_t c = 0, k = 0; c < p.ins; ++c)
    for (int64_t i = 0; i < p.kh; ++i)
      for (int64_t j = 0; j < p.kw; ++j, ++k)
        storage.offsets[k] = static_cast<int32_t>((c * Hp + i * p.dh) * Wrow + j * p.dw);
  DirectPlan plan{p, Hp, Wrow, K, nullptr, storage.offsets.data()};
  if (pack_weights) {
    storage.packed.assign(plan.blocks() * K * kCo, 0.f);
    for (int64_t o = 0; o < p.outs; ++o)
      for (int64_t k = 0; k < K; ++k) storage.packed[(o / kCo * K + k) * kCo + o % kCo] = p.wk[o * K + k];
    plan.packed = storage.packed.data();
  }
  return plan;
}

void run(const DirectProblem& p) {
  PlanStorage storage;
  const DirectPlan plan = make_plan(p, storage, true);
  const int64_t K = plan.K, blocks = plan.blocks();
  const int threads = omp_get_max_threads();
  std::vector<float> scratch(plan.padded_floats() * threads);
  const double flops = 2.0 * double(p.N) * double(p.outs) * double(p.Ho) * double(p.Wo) * double(K);
  // Whole images when there are enough of them to share out evenly; else (image, block) tasks.
  const int64_t per_task = p.N >= 4 * threads ? blocks : 1, tasks_per_image = blocks / per_task;
  const auto block_fn = active_isa() == Isa::avx512 ? direct_block_avx512 : direct_block_avx2;
  parallel_tasks(
      p.N * tasks_per_image,
      [&](int64_t task, int thread) {
        const int64_t b0 = task % tasks_per_image * per_task;
        const int64_t n = task / tasks_per_image;
        float* padded = scratch.data() + thread * plan.padded_floats();
        direct_pad_image(plan, n, padded);
        for (int64_t block = b0; block < b0 + per_task; ++block) {
          const int64_t o0 = block * DirectPlan::kCo;
          const DirectBlock b{static_cast<int>(std::min<int64_t>(DirectPlan::kCo, p.outs - o0)),
                              plan.packed + block * K * DirectPlan::kCo, p.bias ? p.bias + o0 : nullptr,
                              p.out + (n * p.outs + o0) * p.Ho * p.Wo};
          block_fn(plan, b, padded);
        }
      },
      flops);
}

// Backward-weight over images [n0, n1), padded `group` at a time into `padded` (group *
// padded_floats()): dw (outs x K) = the sum over their pixels, written (not added).
void weight_task(const DirectPlan& plan, const float* dy, int64_t n0, int64_t n1, int64_t group, float* padded,
                 float* dw, void (*tile_fn)(const DirectPlan&, const DirectWeightTile&)) {
  constexpr int kCo = DirectPlan::kCo;
  const DirectProblem& p = plan.p;
  const int64_t K = plan.K, plane = p.Ho * p.Wo, image = plan.padded_floats();
  std::fill(dw, dw + p.outs * K, 0.f);
  for (int64_t g0 = n0; g0 < n1; g0 += group) {
    const int64_t count = std::min(group, n1 - g0);
    for (int64_t i = 0; i < count; ++i) direct_pad_image(plan, g0 + i, padded + i * image);
    for (int64_t o0 = 0; o0 < p.outs; o0 += kCo) {
      DirectWeightTile tile{};
      tile.live = static_cast<int>(std::min<int64_t>(kCo, p.outs - o0));
      for (int r = 0; r < kCo; ++r) tile.dys[r] = dy + (g0 * p.outs + o0 + std::min(r, tile.live - 1)) * plane;
      tile.dy_image = p.outs * plane, tile.padded = padded, tile.padded_image = image, tile.count = count;
      for (int64_t k = 0; k < K; k += 2) {
        tile.pair = k + 1 < K;
        tile.offsets[0] = plan.offsets[k], tile.offsets[1] = plan.offsets[tile.pair ? k + 1 : k];
        tile.dw_col = dw + o0 * K + k;
        tile_fn(plan, tile);
      }
    }
  }
}

}  // namespace

namespace {

// dst[0:n] = src[0:n] for the short rows of small planes (8 to 16 floats for the digits and the
// small ResNet): overlapping 4-float moves written out, not a loop, which GCC turns into a call to
// memcpy (those calls and the memsets beside them were 9% of the digits 32 -> 64 forward).
inline void copy_row(float* __restrict dst, const float* __restrict src, int64_t n) {
  typedef float Vec4 __attribute__((vector_size(4 * sizeof(float))));
  if (n < 4 || n > 16) {
    std::memcpy(dst, src, sizeof(float) * n);
    return;
  }
  Vec4 v[4];
  const int64_t last = n - 4;
  std::memcpy(&v[0], src, sizeof(Vec4)), std::memcpy(&v[3], src + last, sizeof(Vec4));
  if (last > 4) std::memcpy(&v[1], src + 4, sizeof(Vec4)), std::memcpy(dst + 4, &v[1], sizeof(Vec4));
  if (last > 8) std::memcpy(&v[2], src + 8, sizeof(Vec4)), std::memcpy(dst + 8, &v[2], sizeof(Vec4));
  std::memcpy(dst, &v[0], sizeof(Vec4)), std::memcpy(dst + last, &v[3], sizeof(Vec4));
}

}  // namespace

void direct_pad_image(const DirectPlan& plan, int64_t n, float* padded) {
  const DirectProblem& p = plan.p;
  const int64_t Wrow = plan.Wrow, copy = std::min(p.W, Wrow - p.pl);
  if (copy <= 0) return;
  const int64_t r0 = std::max<int64_t>(0, p.pt), r1 = std::min(plan.Hp, p.pt + p.H);
  for (int64_t c = 0; c < p.ins; ++c) {
    const float* src = p.in + (n * p.ins + c) * p.H * p.W;
    for (int64_t r = r0; r < r1; ++r) copy_row(padded + (c * plan.Hp + r) * Wrow + p.pl, src + (r - p.pt) * p.W, copy);
  }
}

bool conv2d_direct_forward_applies(const Conv2dShape& s) {
  return s.C * s.kh * s.kw <= kMaxK && s.Co <= kMaxOut &&
         direct_shape(s, s.C, s.Ho + s.dh * (s.kh - 1), s.Wo + s.dw * (s.kw - 1));
}

// Backward-weight reads 6 rows of dy per 2 of the input, so past a 16-channel 3x3 reduction its
// working set leaves L1 and the GEMM path is faster (single-threaded, batch 32: 16 channels 1.3x the
// GEMM path, 3 channels 1.8x, but 32 channels on 16x16 0.6x and 64 on 8x8 0.7x).
constexpr int64_t kMaxWeightK = 16 * 9;

bool conv2d_direct_backward_weight_applies(const Conv2dShape& s) {
  return s.C * s.kh * s.kw <= kMaxWeightK && conv2d_direct_forward_applies(s);
}

bool conv2d_direct_backward_data_applies(const Conv2dShape& s) {
  return s.Co * s.kh * s.kw <= kMaxK && s.C <= kMaxOut &&
         direct_shape(s, s.Co, s.H + s.dh * (s.kh - 1), s.W + s.dw * (s.kw - 1));
}

void conv2d_direct_forward(const Conv2dShape& s, const float* x, const float* w, const float* bias, bool relu,
                           float* y) {
  run(DirectProblem{s.N, s.C, s.H, s.W, s.Co, s.kh, s.kw, s.dh, s.dw, s.ph, s.pw, s.Ho, s.Wo, x, w, bias, relu, y});
}

void conv2d_direct_backward_data(const Conv2dShape& s, const float* dy, const float* w, float* dx) {
  // dx[n, c, h, v] = sum_{co, i, j} dy[n, co, h + ph - i*dh, v + pw - j*dw] * w[co, c, i, j]: with
  // i' = kh-1-i, a correlation of dy with w transposed and flipped, padded by dh*(kh-1) - ph.
  std::vector<float> wt(s.C * s.Co * s.kh * s.kw);
  for (int64_t co = 0; co < s.Co; ++co)
    for (int64_t c = 0; c < s.C; ++c)
      for (int64_t i = 0; i < s.kh; ++i)
        for (int64_t j = 0; j < s.kw; ++j)
          wt[((c * s.Co + co) * s.kh + (s.kh - 1 - i)) * s.kw + (s.kw - 1 - j)] =
              w[((co * s.C + c) * s.kh + i) * s.kw + j];
  run(DirectProblem{s.N, s.Co, s.Ho, s.Wo, s.C, s.kh, s.kw, s.dh, s.dw, s.dh * (s.kh - 1) - s.ph,
                    s.dw * (s.kw - 1) - s.pw, s.H, s.W, dy, wt.data(), nullptr, false, dx});
}

void conv2d_direct_backward_weight(const Conv2dShape& s, const float* dy, const float* x, float* dw) {
  const DirectProblem p{s.N, s.C, s.H, s.W, s.Co, s.kh, s.kw, s.dh, s.dw, s.ph, s.pw, s.Ho, s.Wo, x, nullptr,
                        nullptr, false, nullptr};
  PlanStorage storage;
  const DirectPlan plan = make_plan(p, storage, false);
  // Images per group: as many padded copies as fit the L2 budget together.
  const int64_t image = plan.padded_floats();
  const int64_t group = std::max<int64_t>(1, kMaxPaddedFloats / image);
  const int threads = omp_get_max_threads();
  const int64_t slices = std::min<int64_t>(threads, s.N), block = s.Co * plan.K;
  std::vector<float> scratch(group * image * slices), partial((slices - 1) * block);
  const auto tile_fn = active_isa() == Isa::avx512 ? direct_weight_tile_avx512 : direct_weight_tile_avx2;
  parallel_tasks(
      slices,
      [&](int64_t slice, int) {
        float* out = slice == 0 ? dw : partial.data() + (slice - 1) * block;
        weight_task(plan, dy, s.N * slice / slices, s.N * (slice + 1) / slices, group,
                    scratch.data() + slice * group * image, out, tile_fn);
      },
      conv_flops(s));
  if (slices > 1) add_partial_dw(dw, partial.data(), 1, block, slices);
}

}  // namespace pn
