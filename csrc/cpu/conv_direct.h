// Direct convolution for stride-1 layers with few channels (NCHW, float32, groups 1), on AVX2 and AVX-512.
//
// Why: as an implicit GEMM (conv.cpp) every input element is packed kh*kw times into the B panel,
// and with few output channels each packed element feeds only 2*Co flops; on this project's AVX2
// machine the packing was ~30% of a 16-channel 3x3 layer (bench/NOTES.md, "Direct convolution").
// Here nothing is packed per tap: each image is copied once into a zero-padded buffer, and the
// microkernel reads its rows in place. For output row p and columns q.., tap (c, i, j) reads the
// padded row p + i*dh of channel c from column q + j*dw: one fixed offset per reduction index
// k = (c, i, j) from the tile's corner (a table of C*kh*kw offsets per call).
//
// Tiling (conv_direct_avx2.cpp; conv_direct_avx512.cpp does the same with 16-pixel vectors, its
// header says how they lie over narrow rows): 6 output channels x 2 vectors of 8 pixels = 12 ymm
// accumulators, the AVX2 GEMM's tile. Per k: 2 unaligned loads of the padded input, 6 weight broadcasts, 12 FMAs.
// Rows wider than 8 take 16 pixels of one row; narrower ones 8 pixels of two rows (the second
// vector one padded row further), so an 8x8 plane still fills the tile. The weights are packed once
// per call, k-major in blocks of 6 output channels (zeros past Co).
//
// Napkin math (Zen 3, ~3 GHz, 2 FMA ports): the 12 FMAs per k take 6 cycles; the 8 loads fit in the
// 3 load ports with room. A 16 -> 16 3x3 layer on 32x32 has K = 144: one tile is 144 k steps = ~860
// cycles for 6 x 16 outputs, ~96 GFLOP/s per core at peak. The padded image (16 x 34 x 34 floats,
// 74 KiB) stays in L2 while every tile of every channel block reads it; the weights of one block
// (144 x 6 floats) stay in L1.
//
// Backward-weight, dW[o, c, i, j] = sum over the batch's pixels of dy[n, o, p, q] * xpad[n, c, p + i*dh,
// q + j*dw], uses the same padded images and offsets with the roles turned: a tile is 6 output
// channels x 2 reduction indices k = (c, i, j), 12 ymm accumulators over 8 pixels of a row; per 8
// pixels, 6 loads of dy, 2 of the padded input, 12 FMAs. The accumulators run over a group of
// images whose padded copies fit L2 together (the 8x8 planes of the digits CNN: 10 at a time),
// then are summed across lanes into the slice's dW. Threads take slices of the batch, each with
// its own dW, added in a fixed order afterwards (conv_tasks.h add_partial_dw).
//
// Backward-data of a stride-1 convolution is the same operation on dy, with the weights transposed
// (in and out channels swapped) and flipped, and padding d*(k-1) - p: conv2d_direct_backward_data.
//
// Parallel: tasks are images, dealt dynamically (conv_tasks.h), each padded once for all its channel
// blocks; with fewer than 4 images per thread, (image, block of 6 channels) so that all threads work. Each output
// element is computed by one task in a fixed order, so the results do not depend on the threads.
#pragma once
#include "cpu/conv.h"

namespace pn {

// Shapes this kernel takes (when the active ISA is AVX2 or AVX-512): stride 1, groups 1, padding within the
// dilated kernel, and few channels: the reduction C*kh*kw at most kMaxK and at most kMaxOut output
// channels (the passes' in and out channels swap for backward-data).
bool conv2d_direct_forward_applies(const Conv2dShape& s);
bool conv2d_direct_backward_data_applies(const Conv2dShape& s);
bool conv2d_direct_backward_weight_applies(const Conv2dShape& s);

// The contracts of conv2d_forward / conv2d_backward_data (conv.h), for shapes the above accept.
void conv2d_direct_forward(const Conv2dShape& s, const float* x, const float* w, const float* bias, bool relu, float* y);
void conv2d_direct_backward_data(const Conv2dShape& s, const float* dy, const float* w, float* dx);
void conv2d_direct_backward_weight(const Conv2dShape& s, const float* dy, const float* x, float* dw);

// One correlation: out[n, o, p, q] = bias[o] + sum_{c, i, j} in[n, c, p + i*dh - pt, q + j*dw - pl] *
// wk[o, c, i, j] (zero outside the input), then max(., 0) when relu. wk is (outs, ins, kh, kw).
struct DirectProblem {
  int64_t N, ins, H, W;      // input
  int64_t outs, kh, kw, dh, dw;
  int64_t pt, pl;            // zero padding at the top and the left (bottom and right follow from Ho, Wo)
  int64_t Ho, Wo;            // output
  const float* in;
  const float* wk;
  const float* bias;  // may be null
  bool relu;
  float* out;
};

// What every task of one call shares, prepared by conv_direct.cpp.
struct DirectPlan {
  static constexpr int kCo = 6;   // output channels per tile (and per weight block)
  DirectProblem p;
  int64_t Hp, Wrow;               // padded input rows per channel, floats per padded row
  int64_t K;                      // ins * kh * kw
  const float* packed;            // weight block b at packed + b * K * kCo: [k][r] = wk[b*kCo + r, k]
  const int32_t* offsets;         // offsets[k]: (c*Hp + i*dh) * Wrow + j*dw
  int64_t blocks() const { return (p.outs + kCo - 1) / kCo; }  // of kCo output channels
  // + slack read by the tiles past the last row (AVX-512 reads up to 3 rows + 8 floats past it)
  int64_t padded_floats() const { return p.ins * Hp * Wrow + 4 * Wrow + 32; }
};

// One backward-weight tile: dw_col[r*K + t] += the sum over the pixels of `count` images of
// dy_r * x_t for r < live and t < 1 + pair, where dy_r is output channel row r of dy (dys[r], then
// dy_image floats per image) and x_t the padded input at reduction index offsets[t] (+ padded_image
// floats per image). conv_direct.cpp walks the images, channel blocks and index pairs; the ISA
// files (conv_direct_avx2.cpp, conv_direct_avx512.cpp) sum one tile in registers.
struct DirectWeightTile {
  const float* dys[DirectPlan::kCo];
  int64_t dy_image;
  const float* padded;
  int64_t padded_image;
  int32_t offsets[2];
  int64_t count;
  int live;
  bool pair;
  float* dw_col;
};
void direct_weight_tile_avx2(const DirectPlan& plan, const DirectWeightTile& tile);
void direct_weight_tile_avx512(const DirectPlan& plan, const DirectWeightTile& tile);

// One block of kCo output channels of one image, from its padded input (conv_direct.cpp pads the
// image and walks the blocks; the ISA files walk the block's output tiles). Compiled with AVX2 /
// AVX-512 flags (conv_direct_avx2.cpp, conv_direct_avx512.cpp); call only on a CPU that has them.
struct DirectBlock {
  int live;           // output channels that exist (<= kCo)
  const float* w;     // the block's packed weights
  const float* bias;  // its bias, or null
  float* out;         // its first output plane
};
void direct_block_avx2(const DirectPlan& plan, const DirectBlock& block, const float* padded);
void direct_block_avx512(const DirectPlan& plan, const DirectBlock& block, const float* padded);

// Image n of the input, zero-padded into `padded` (padded_floats()): channel c's padded row r at
// padded[(c*Hp + r) * Wrow], holding input row r - pt shifted right by pl. Only the input's own
// floats are written: `padded` must start zeroed and serve only images of this plan, so the padding,
// and the slack after the last row, stay zero (tiles at the right or bottom edge read into them:
// lanes that are never stored, but kept finite and normal).
void direct_pad_image(const DirectPlan& plan, int64_t n, float* padded);

}  // namespace pn
