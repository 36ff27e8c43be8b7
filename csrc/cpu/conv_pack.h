// Implicit im2col: GEMM packers (gemm.h) that read an NCHW image batch directly, so convolution
// runs on gemm_packed without ever materialising the (C*kh*kw) x (Ho*Wo) column matrix.
//
// Im2colGrid describes the column matrix of one channel group without owning any data:
//   row r    = (channel c, tap th, tap tw)   with taps listed as input offsets off_h / off_w
//   column q = (image n, output row oh, output column ow), counted across the whole batch
//   value    = x[n, c, oh*sh + off_h[th], ow*sw + off_w[tw]], or 0 outside the input plane.
// Forward and backward-weight use the taps off_h[k] = k*dh - ph; backward-data builds grids over
// dy whose taps are the (flipped, stride-phase) subsets of the kernel (see conv.cpp).
//
// Packing cost matters: every packed element of the image feeds only M = (output channels) FMAs,
// so a packer that spends a cycle per element is a large fraction of the GEMM for 64-channel
// layers. So no packer tests bounds per element or divides per row: it walks the geometry once per
// tap for its block of columns (Im2colGrid::runs: each run is one input row's copy with its padding),
// fills the rows of every channel from that list with masked vector copies, and moves the staged
// rows into the sliver layout one sliver at a time, so its writes are contiguous too.
#pragma once
#include <cstdint>
#include <vector>

#include "cpu/conv_pack_isa.h"
#include "cpu/gemm.h"

namespace pn {

struct Im2colGrid {
  int64_t image_stride;     // floats from one image to the next in the tensor read
  int64_t channels, H, W;   // channels in the group; input plane
  int64_t Ho, Wo, sh, sw;   // output grid and stride
  std::vector<int64_t> off_h, off_w;  // tap t reads input row oh*sh + off_h[t] (column likewise)
  // Output rows [oh_lo[t], oh_hi[t]) keep tap t inside the input plane (columns likewise).
  std::vector<int64_t> oh_lo, oh_hi, ow_lo, ow_hi;

  Im2colGrid(int64_t image_stride, int64_t channels, int64_t H, int64_t W, int64_t Ho, int64_t Wo, int64_t sh,
             int64_t sw, std::vector<int64_t> off_h, std::vector<int64_t> off_w);

  int64_t taps() const { return static_cast<int64_t>(off_h.size() * off_w.size()); }
  int64_t rows() const { return channels * taps(); }
  int64_t pixels() const { return Ho * Wo; }
  // One tap at offset 0 on an unstrided, same-size grid: the column matrix is the image itself.
  bool is_identity() const;

  // A matrix row as (channel, tap h, tap w) and a column as (image, output row, output column).
  struct Row {
    int64_t c, th, tw;
  };
  struct Column {
    int64_t n, oh, ow;
  };
  Row row_of(int64_t r) const;
  void next(Row& r) const;  // the row after r
  Column column_of(int64_t q) const;

  // The runs (conv_pack_isa.h) of every tap over the len columns from `at`: tap t = th*taps_w + tw
  // owns runs[begin[t] : begin[t+1]]. Every channel shares them, so a block of rows costs one
  // walk of the geometry per tap, then only copies.
  void runs(Column at, int64_t len, std::vector<RowRun>& runs, std::vector<int64_t>& begin) const;
};

// B = the column matrix (K = rows of the grid, N = pixels q0, q0+1, ...): the forward GEMM
// W (Co/g x K) @ B, and backward-data's flipped convolution.
struct Im2colB final : PackB {
  const Im2colGrid& grid;
  const float* x;
  int64_t q0;
  Im2colB(const Im2colGrid& g, const float* x_, int64_t q0_) : grid(g), x(x_), q0(q0_) {}
  void pack(int64_t k0, int64_t kc, int64_t j0, int64_t nc, int nr, float* dst) const override;
};

// B = the transposed column matrix (K = pixels q0, q0+1, ... across the batch, N = rows of the
// grid): backward-weight's dW (Co/g x K) = dy @ B, summed over the batch inside one GEMM.
struct Im2colTransB final : PackB {
  const Im2colGrid& grid;
  const float* x;
  int64_t q0;
  Im2colTransB(const Im2colGrid& g, const float* x_, int64_t q0_) : grid(g), x(x_), q0(q0_) {}
  void pack(int64_t k0, int64_t kc, int64_t j0, int64_t nc, int nr, float* dst) const override;
};

// A = channels x pixels of an NCHW tensor, pixels counted across images from q0 (element (i, k) is
// t[n, i, p] with q0 + k = n*plane + p): dy as backward-weight's left operand.
struct BatchedPlanesA final : PackA {
  const float* t;        // channel 0 of the group, image 0
  int64_t image_stride;  // floats between images
  int64_t plane;         // pixels per channel plane
  int64_t q0;
  BatchedPlanesA(const float* t_, int64_t is, int64_t pl, int64_t q) : t(t_), image_stride(is), plane(pl), q0(q) {}
  void pack(int64_t i0, int64_t mc, int64_t k0, int64_t kc, int mr, float* dst) const override;
};

// A = backward-data's W_phase^T of one group (conv.cpp), read from the weight as stored: element
// (c, co*T + t) is w[co, c, tap t] with tap t at offset tap_src[t] inside a kh*kw block. Copying
// the transpose into a matrix first and then packing that was two passes over megabytes of weights
// (2.4M for a 512 -> 512 3x3 layer: 21% of its backward-data at 7x7, measured); this is one.
// Within one output channel a sliver's rows are `block` floats apart, so each k step reads live
// floats that share a few cache lines with the other taps of the same channel.
struct PhaseWeightA final : PackA {
  const float* w;       // the group's weights: Co/g blocks of C/g x kh*kw
  int64_t Cg, block;    // input channels per group; kh*kw
  const std::vector<int64_t>& tap_src;
  PhaseWeightA(const float* w_, int64_t cg, int64_t blk, const std::vector<int64_t>& src)
      : w(w_), Cg(cg), block(blk), tap_src(src) {}
  void pack(int64_t i0, int64_t mc, int64_t k0, int64_t kc, int mr, float* dst) const override;
};

}  // namespace pn
