// Implicit-im2col packers; the layout and the reasoning are in conv_pack.h.
#include "cpu/conv_pack.h"

#include <algorithm>
#include <cstring>

#include "common/cpu_features.h"
#include "cpu/gemm_pack.h"

namespace pn {

namespace {

// Floor division for a positive divisor and a numerator of either sign.
int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
int64_t ceil_div_signed(int64_t a, int64_t b) { return -floor_div(-a, b); }

// Per-thread staging rows for the packers. Packers run concurrently when the GEMM spreads one call
// over threads, so the buffer cannot live in the (shared, const) packer.
float* scratch(size_t n) {
  thread_local std::vector<float> buf;
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

// Floats of staging per packer call: small enough that the staged rows and the slivers being
// written stay in L1 together.
constexpr int64_t kStageFloats = 8192;

// dst[k*NR + c] = tmp[c*ld + k] for k < len: nr staged rows become one sliver's columns.
template <int NR>
void transpose_rows(const float* tmp, int64_t ld, int64_t len, float* dst) {
  for (int64_t k = 0; k < len; ++k)
    for (int c = 0; c < NR; ++c) dst[k * NR + c] = tmp[c * ld + k];
}

void transpose_rows(const float* tmp, int64_t ld, int64_t len, int nr, float* dst) {
  // The dense packers' register transpose (gemm_pack.h), where this CPU path has one.
  if (pack_transpose_groups(pack_copies(), tmp, ld, nr, len, dst, nr)) return;
  switch (nr) {
    case 8: return transpose_rows<8>(tmp, ld, len, dst);
    case 16: return transpose_rows<16>(tmp, ld, len, dst);
    case 32: return transpose_rows<32>(tmp, ld, len, dst);
    default:
      for (int64_t k = 0; k < len; ++k)
        for (int c = 0; c < nr; ++c) dst[k * nr + c] = tmp[c * ld + k];
  }
}

}  // namespace

Im2colGrid::Im2colGrid(int64_t image_stride_, int64_t channels_, int64_t H_, int64_t W_, int64_t Ho_, int64_t Wo_,
                       int64_t sh_, int64_t sw_, std::vector<int64_t> off_h_, std::vector<int64_t> off_w_)
    : image_stride(image_stride_), channels(channels_), H(H_), W(W_), Ho(Ho_), Wo(Wo_), sh(sh_), sw(sw_),
      off_h(std::move(off_h_)), off_w(std::move(off_w_)) {
  // Output index o keeps the tap inside [0, size) when 0 <= o*stride + off <= size-1.
  auto valid = [](int64_t off, int64_t stride, int64_t size, int64_t out_size, int64_t& lo, int64_t& hi) {
    lo = std::clamp<int64_t>(ceil_div_signed(-off, stride), 0, out_size);
    hi = std::clamp<int64_t>(floor_div(size - 1 - off, stride) + 1, lo, out_size);
  };
  for (int64_t off : off_h) {
    int64_t lo, hi;
    valid(off, sh, H, Ho, lo, hi);
    oh_lo.push_back(lo);
    oh_hi.push_back(hi);
  }
  for (int64_t off : off_w) {
    int64_t lo, hi;
    valid(off, sw, W, Wo, lo, hi);
    ow_lo.push_back(lo);
    ow_hi.push_back(hi);
  }
}

bool Im2colGrid::is_identity() const {
  return off_h.size() == 1 && off_w.size() == 1 && off_h[0] == 0 && off_w[0] == 0 && sh == 1 && sw == 1 &&
         Ho == H && Wo == W;
}

Im2colGrid::Row Im2colGrid::row_of(int64_t r) const {
  const int64_t ntw = static_cast<int64_t>(off_w.size()), t = r % taps();
  return Row{r / taps(), t / ntw, t % ntw};
}

void Im2colGrid::next(Row& r) const {
  if (++r.tw < static_cast<int64_t>(off_w.size())) return;
  r.tw = 0;
  if (++r.th < static_cast<int64_t>(off_h.size())) return;
  r.th = 0;
  ++r.c;
}

Im2colGrid::Column Im2colGrid::column_of(int64_t q) const {
  const int64_t p = q % pixels();
  return Column{q / pixels(), p / Wo, p % Wo};
}

void Im2colGrid::runs(Column at, int64_t len, std::vector<RowRun>& out, std::vector<int64_t>& begin) const {
  out.clear();
  begin.assign(taps() + 1, 0);
  const int64_t ntw = static_cast<int64_t>(off_w.size());
  for (int64_t th = 0; th < static_cast<int64_t>(off_h.size()); ++th)
    for (int64_t tw = 0; tw < ntw; ++tw) {
      begin[th * ntw + tw] = static_cast<int64_t>(out.size());
      const size_t first = out.size();
      int64_t n = at.n, oh = at.oh, ow = at.ow;
      for (int64_t o = 0; o < len;) {
        // One output row of one image: its input row is fixed, and the valid columns
        // [ow_lo, ow_hi) of this tap split it into zeros | copy | zeros.
        const int64_t seg = std::min(len - o, Wo - ow);
        RowRun run{o, seg, 0, 0, 0, 0};
        if (oh >= oh_lo[th] && oh < oh_hi[th]) {
          run.a = std::clamp(ow_lo[tw], ow, ow + seg) - ow;
          run.b = std::clamp(ow_hi[tw], ow + run.a, ow + seg) - ow;
          run.src = n * image_stride + (oh * sh + off_h[th]) * W + ow * sw + off_w[tw];
        }
        const bool empty = run.a == run.b, full = run.a == 0 && run.b == seg;
        if (!empty && !full && ow == 0 && seg == Wo) run.period = Wo;  // a whole row with padding
        RowRun* prev = out.size() > first ? &out.back() : nullptr;
        const bool continues = prev && prev->src + prev->len * sw == run.src;
        if (empty) {
          if (prev && prev->a == prev->b) {
            prev->len += seg;  // zeros after zeros
          } else {
            out.push_back(RowRun{o, seg, 0, 0, 0, 0});
          }
        } else if (continues && full && prev->period == 0 && prev->a == 0 && prev->b == prev->len) {
          prev->len += seg;  // fully valid input, contiguous: one long copy
          prev->b += seg;
        } else if (continues && run.period && prev->period == Wo && prev->a == run.a && prev->b == run.b) {
          prev->len += seg;  // another whole row with the same padding, input contiguous
        } else {
          out.push_back(run);
        }
        o += seg;
        ow += seg;
        if (ow == Wo) {
          ow = 0;
          if (++oh == Ho) {
            oh = 0;
            ++n;
          }
        }
      }
    }
  begin[taps()] = static_cast<int64_t>(out.size());
}

namespace {

// Lanes [lo, hi) of 16, clipped.
uint32_t lanes(int64_t lo, int64_t hi) {
  lo = std::max<int64_t>(lo, 0);
  hi = std::min<int64_t>(hi, 16);
  return hi > lo ? ((1u << hi) - 1u) & ~((1u << lo) - 1u) : 0u;
}

}  // namespace

void fill_ops(const RowRun* runs, int64_t count, int nr, int64_t sliver, std::vector<FillOp>& ops) {
  for (int64_t r = 0; r < count; ++r) {
    const RowRun& run = runs[r];
    const int64_t end = run.out + run.len;
    // phase: the column of lane 0 within its output row (periodic runs), stepped along.
    int64_t group = run.out & ~int64_t{15}, first = group - run.out, phase = first;
    if (run.period)
      while (phase < 0) phase += run.period;
    for (; group < end; group += 16, first += 16) {
      const uint32_t store = lanes(-first, run.len - first);
      uint32_t valid = 0;
      if (run.period == 0) {
        valid = lanes(run.a - first, run.b - first);
      } else {
        for (int64_t row = -phase; row < 16; row += run.period) valid |= lanes(row + run.a, row + run.b);
        for (phase += 16; phase >= run.period;) phase -= run.period;
      }
      ops.push_back(FillOp{run.src + first, (group / nr) * sliver + group % nr, valid & store, store});
    }
  }
}

namespace {

// The runs of one block of columns, and the fill ops compiled from them, per thread (see
// scratch()). Tap t owns runs[begin[t] : begin[t+1]] and ops[op_begin[t] : op_begin[t+1]].
struct RunList {
  std::vector<RowRun> runs;
  std::vector<int64_t> begin;
  std::vector<FillOp> ops;
  std::vector<int64_t> op_begin;

  void compile(int nr, int64_t sliver) {
    ops.clear();
    op_begin.assign(begin.size(), 0);
    for (size_t t = 0; t + 1 < begin.size(); ++t) {
      op_begin[t] = static_cast<int64_t>(ops.size());
      fill_ops(runs.data() + begin[t], begin[t + 1] - begin[t], nr, sliver, ops);
    }
    op_begin.back() = static_cast<int64_t>(ops.size());
  }
};

RunList& run_scratch() {
  thread_local RunList list;
  return list;
}

int64_t tap_of(const Im2colGrid& grid, Im2colGrid::Row r) {
  return r.th * static_cast<int64_t>(grid.off_w.size()) + r.tw;
}

// The masked-copy fill loop of this CPU path (null: the portable loops of fill_row).
using FillOpsFn = void (*)(const float* x, const FillOp* ops, int64_t count, float* out);
FillOpsFn fill_ops_kernel() {
  switch (active_isa()) {
    case Isa::avx512: return &run_fill_ops_avx512;
    case Isa::avx2: return &run_fill_ops_avx2;
    default: return nullptr;
  }
}

// Masked-copy fills need unit stride (and a vector ISA).
bool use_fill_ops(const Im2colGrid& grid) { return grid.sw == 1 && fill_ops_kernel() != nullptr; }

// out[0:len] = row (c, th, tw) of the column matrix, from the ops of its tap (compiled for a
// contiguous row) or else from its runs.
void fill_row(const Im2colGrid& grid, const float* x, const RunList& list, Im2colGrid::Row r, float* out) {
  const int64_t t = tap_of(grid, r);
  const float* plane = x + r.c * grid.H * grid.W;
  if (use_fill_ops(grid))
    return fill_ops_kernel()(plane, list.ops.data() + list.op_begin[t], list.op_begin[t + 1] - list.op_begin[t],
                               out);
  const RowRun* run = list.runs.data() + list.begin[t];
  for (int64_t i = 0; i < list.begin[t + 1] - list.begin[t]; ++i) {
    // A periodic run is its rows one after another; src continues from row to row.
    const int64_t rows = run[i].period ? run[i].len / run[i].period : 1;
    const int64_t len = run[i].period ? run[i].period : run[i].len, a = run[i].a, b = run[i].b, sw = grid.sw;
    for (int64_t row = 0; row < rows; ++row) {
      float* o = out + run[i].out + row * len;
      for (int64_t e = 0; e < a; ++e) o[e] = 0.f;
      const float* src = plane + run[i].src + (row * len + a) * sw;  // in bounds: column a is valid
      if (sw == 1) {
        for (int64_t e = a; e < b; ++e) o[e] = src[e - a];
      } else {
        for (int64_t e = a; e < b; ++e) o[e] = src[(e - a) * sw];
      }
      for (int64_t e = b; e < len; ++e) o[e] = 0.f;
    }
  }
}

// dst[k*nr + c] = stage[k*ld + c] for k < rows, c < nr: staged rows into one sliver.
void put_sliver(const float* stage, int64_t ld, int64_t rows, int nr, float* dst) {
  const PackCopies& v = pack_copies();
  if (v.copy && nr <= v.max_copy_width) return v.copy(stage, ld, nr, rows, dst, nr);
  for (int64_t k = 0; k < rows; ++k) std::memcpy(dst + k * nr, stage + k * ld, sizeof(float) * nr);
}

}  // namespace

void Im2colB::pack(int64_t k0, int64_t kc, int64_t j0, int64_t nc, int nr, float* dst) const {
  // Columns in chunks of whole slivers, one walk of the geometry per chunk (Im2colGrid::runs).
  const int64_t chunk = nr * std::max<int64_t>(1, 512 / nr);
  RunList& list = run_scratch();
  if (use_fill_ops(grid) && nr % 16 == 0) {
    // Rows go straight into the slivers; only the zero columns past nc need writing apart.
    for (int64_t cs = 0; cs < nc; cs += chunk) {
      const int64_t len = std::min(chunk, nc - cs), tail = len % nr;
      grid.runs(grid.column_of(q0 + j0 + cs), len, list.runs, list.begin);
      list.compile(nr, nr * kc);
      float* first = dst + cs * kc;  // cs is a multiple of nr: sliver cs/nr starts at cs*kc
      float* last = first + (len / nr) * nr * kc;
      const FillOpsFn fill = fill_ops_kernel();
      Im2colGrid::Row r = grid.row_of(k0);
      for (int64_t k = 0; k < kc; ++k, grid.next(r)) {
        const int64_t t = tap_of(grid, r);
        fill(x + r.c * grid.H * grid.W, list.ops.data() + list.op_begin[t],
                            list.op_begin[t + 1] - list.op_begin[t], first + k * nr);
        if (tail) std::fill(last + k * nr + tail, last + (k + 1) * nr, 0.f);
      }
    }
    return;
  }
  // Otherwise stage a block of matrix rows, then copy the block into each sliver. Stage columns
  // past nc stay zero for every row.
  const int64_t block = std::max<int64_t>(1, kStageFloats / chunk);
  float* stage = scratch(chunk * block);
  for (int64_t cs = 0; cs < nc; cs += chunk) {
    const int64_t len = std::min(chunk, nc - cs), slivers = (len + nr - 1) / nr;
    for (int64_t i = 0; i < block; ++i) std::fill(stage + i * chunk + len, stage + i * chunk + slivers * nr, 0.f);
    grid.runs(grid.column_of(q0 + j0 + cs), len, list.runs, list.begin);
    if (use_fill_ops(grid)) list.compile(16, 16);
    Im2colGrid::Row r = grid.row_of(k0);
    for (int64_t kb = 0; kb < kc; kb += block) {
      const int64_t rows = std::min(block, kc - kb);
      for (int64_t i = 0; i < rows; ++i, grid.next(r)) fill_row(grid, x, list, r, stage + i * chunk);
      for (int64_t s = 0; s < slivers; ++s)
        put_sliver(stage + s * nr, chunk, rows, nr, dst + (cs + s * nr) * kc + kb * nr);
    }
  }
}

void Im2colTransB::pack(int64_t k0, int64_t kc, int64_t j0, int64_t nc, int nr, float* dst) const {
  // The K range (pixels) in chunks; per chunk and sliver, stage the sliver's nr matrix rows over
  // the chunk, then transpose them into the sliver.
  const int64_t chunk = std::max<int64_t>(1, kStageFloats / nr);
  float* stage = scratch(chunk * nr);
  RunList& list = run_scratch();
  for (int64_t ks = 0; ks < kc; ks += chunk) {
    const int64_t len = std::min(chunk, kc - ks);
    grid.runs(grid.column_of(q0 + k0 + ks), len, list.runs, list.begin);
    if (use_fill_ops(grid)) list.compile(16, 16);
    for (int64_t s = 0; s * nr < nc; ++s) {
      const int64_t live = std::min<int64_t>(nr, nc - s * nr);
      Im2colGrid::Row r = grid.row_of(j0 + s * nr);
      for (int64_t c = 0; c < live; ++c, grid.next(r)) fill_row(grid, x, list, r, stage + c * chunk);
      for (int64_t c = live; c < nr; ++c) std::fill(stage + c * chunk, stage + c * chunk + len, 0.f);
      transpose_rows(stage, chunk, len, nr, dst + s * nr * kc + ks * nr);
    }
  }
}

void BatchedPlanesA::pack(int64_t i0, int64_t mc, int64_t k0, int64_t kc, int mr, float* dst) const {
  const PackCopies& v = pack_copies();
  const bool vector = v.transpose && mr <= v.transpose_lanes;
  for (int64_t s = 0; s * mr < mc; ++s) {
    float* sliver = dst + s * mr * kc;
    const int live = static_cast<int>(std::min<int64_t>(mr, mc - s * mr));
    // Walk the K range image by image: within one image a sliver is `live` rows `plane` apart.
    int64_t q = q0 + k0, k = 0;
    while (k < kc) {
      const int64_t n = q / plane, p = q % plane, seg = std::min(kc - k, plane - p);
      const float* src = t + n * image_stride + (i0 + s * mr) * plane + p;
      if (vector) {
        v.transpose(src, plane, live, seg, sliver + k * mr, mr, mr);
      } else {
        for (int r = 0; r < mr; ++r)
          for (int64_t e = 0; e < seg; ++e) sliver[(k + e) * mr + r] = r < live ? src[r * plane + e] : 0.f;
      }
      k += seg;
      q += seg;
    }
  }
}

namespace {

// One k step of a PhaseWeightA sliver: MR rows `stride` apart into out[0:MR], zeros past `live`.
template <int MR>
inline void strided_column(const float* col, int64_t stride, int live, float* out) {
  if (live == MR) {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) out[i] = col[i * stride];
  } else {
    for (int i = 0; i < MR; ++i) out[i] = i < live ? col[i * stride] : 0.f;
  }
}

// Output channel by output channel: the block's rows of one channel are mc*kh*kw consecutive
// weights (12 KiB for 336 rows of 3x3), read front to back across all slivers. Where a channel's
// taps are consecutive weights (every unstrided convolution), a sliver's share of them is a small
// row-major matrix (live rows of `steps` floats, kh*kw apart), transposed in registers; otherwise
// column by column.
template <int MR>
void pack_phase_weight(const PhaseWeightA& a, int64_t i0, int64_t mc, int64_t k0, int64_t kc, int mr, float* dst) {
  const int64_t T = static_cast<int64_t>(a.tap_src.size());
  bool consecutive = true;
  for (int64_t t = 1; t < T; ++t) consecutive = consecutive && a.tap_src[t] == a.tap_src[0] + t;
  const PackCopies& v = pack_copies();
  const bool transpose = consecutive && v.transpose && mr <= v.transpose_lanes;
  const float* rows = a.w + (k0 / T) * a.Cg * a.block + i0 * a.block;  // output channel k0 / T
  for (int64_t k = 0, t0 = k0 % T; k < kc; t0 = 0, rows += a.Cg * a.block) {
    const int64_t steps = std::min(T - t0, kc - k);  // this channel's taps inside the block
    for (int64_t s = 0; s * mr < mc; ++s) {
      const int live = static_cast<int>(std::min<int64_t>(mr, mc - s * mr));
      const float* src = rows + s * mr * a.block;
      float* out = dst + s * mr * kc + k * mr;
      if (transpose) {
        v.transpose(src + a.tap_src[t0], a.block, live, steps, out, mr, mr);
        continue;
      }
      for (int64_t j = 0; j < steps; ++j) {
        const float* col = src + a.tap_src[t0 + j];
        if (MR > 0)
          strided_column<MR>(col, a.block, live, out + j * mr);
        else
          for (int i = 0; i < mr; ++i) out[j * mr + i] = i < live ? col[i * a.block] : 0.f;
      }
    }
    k += steps;
  }
}

}  // namespace

void PhaseWeightA::pack(int64_t i0, int64_t mc, int64_t k0, int64_t kc, int mr, float* dst) const {
  // The microkernels' sliver heights get a fixed-length copy the compiler unrolls.
  switch (mr) {
    case 14: return pack_phase_weight<14>(*this, i0, mc, k0, kc, mr, dst);
    case 6: return pack_phase_weight<6>(*this, i0, mc, k0, kc, mr, dst);
    default: return pack_phase_weight<0>(*this, i0, mc, k0, kc, mr, dst);
  }
}

}  // namespace pn
