// The innermost copy of the implicit-im2col packers (conv_pack.cpp), with AVX-512 and AVX2 versions
// in conv_pack_avx512.cpp and conv_pack_avx2.cpp that conv_pack.cpp calls after checking
// pn::active_isa().
#pragma once
#include <cstdint>
#include <vector>

namespace pn {

// A stretch of one column-matrix row: out[o + i] for i < len is x[src + i*stride] where column i
// is valid, else 0 (zero padding). src counts from channel 0 of image 0; the channel's offset is
// added when the row is filled.
//   period == 0: one output row (or a stretch of fully valid rows); column i is valid when
//                a <= i < b.
//   period  > 0: whole output rows of `period` columns, back to back, whose input rows are too
//                (an unstrided "same" convolution: Wo == W): column i is valid when
//                a <= i % period < b.
struct RowRun {
  int64_t out, len, src, a, b, period;
};

// One 16-column group of a row as a masked copy: out[dst + L] = x[src + L] for the lanes L in
// `load`, 0 for the other lanes in `store`, nothing written elsewhere. Every channel of a tap
// shares its list, so the mask arithmetic is done once per block of columns, not per row.
struct FillOp {
  int64_t src, dst;
  uint32_t load, store;
};

// The ops of a row made of `runs` (unit stride only), for an output laid out in slivers: column o
// goes to (o / nr) * sliver + o % nr. nr must be a multiple of 16, so every 16-column group lies
// in one sliver; nr = sliver = 16 is a plain contiguous row. Appends to ops.
void fill_ops(const RowRun* runs, int64_t count, int nr, int64_t sliver, std::vector<FillOp>& ops);

// Executes ops against x (offset to the channel) into out. Masked loads fetch only valid lanes, so
// nothing outside the input is read even where src + L points into the padding.
void run_fill_ops_avx512(const float* x, const FillOp* ops, int64_t count, float* out);
void run_fill_ops_avx2(const float* x, const FillOp* ops, int64_t count, float* out);

}  // namespace pn
