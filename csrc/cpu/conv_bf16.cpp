// bf16 convolution (conv_bf16.h) on the bf16 GEMM: the driver, its blocking, threads, microkernels
// and fused epilogue are gemm_bf16.cpp's; this file only says what the GEMMs are and packs the im2col
// operand straight from the image, through Bf16OperandSource (gemm_bf16.h). No column matrix exists.
//
// The GEMMs (K = C/g * kh * kw per output, P = Ho * Wo; activations NCHW or NHWC):
//   forward, NCHW     y[n, g]     (Co/g x P)     = W[g] (Co/g x K)      @ im2col(x[n, g]) (K x P)
//                     bias is a per-row term (row_bias), ReLU and the bf16 rounding in the epilogue
//   forward, NHWC     y[:, g]     (N*P x Co/g)   = im2col(x[:, g]) (N*P x K) @ W[g]^T (K x Co/g)
//                     one GEMM over the whole batch (y's rows are pixels, ldc = Co); bias per column
//   backward-data     dx = conv(dy, flipped W), split into the sh * sw stride phases of dx (as in
//                     conv.cpp: within a phase only some taps reach, and they make an unstrided
//                     convolution of dy), so no multiply-by-zero and no scatter-add; each phase is
//                     the forward GEMM of its layout with dy for x and W_phase^T (rearranged once per
//                     call, small) for W. Stride 1 writes dx directly; otherwise a phase lands in an
//                     fp32 buffer and is copied to its strided places (rounded there if dx is bf16).
//   backward-weight   dW[g] (Co/g x K) = dy[:, g] (Co/g x N*P) @ im2col(x[:, g])^T (N*P x K): the
//                     GEMM's K runs over the batch's pixels, so the batch sum stays in fp32 inside
//                     the GEMM (NHWC: K ordered (tap, channel), permuted into (Co, C/g, kh, kw) after).
// Threads: where the (image, group) or group tasks deal out evenly, each thread takes whole tasks
// and runs single-threaded GEMMs; otherwise the tasks run in turn and each GEMM uses every thread.
//
// Packing (Patches::gather, PatchSource::pack): for each sliver of the GEMM's packed panel (mr rows
// of A or nr columns of B) and each 64-deep chunk of K, the patch elements are gathered into a
// 4 KiB staging tile in L1 (zeros where a tap falls in the padding) and the path's own packer moves
// that tile into its layout (pair/VNNI for avx512bf16 and generic, 32 x 32 AMX tiles): the chunks of
// a packed sliver are contiguous in both layouts, so each lands at sliver + k * width. The packers
// are the GEMM's, so every layout and edge rule is the one gemm_bf16's tests already check. The
// gather walks pixels along memory (NCHW: a row of an input plane; NHWC: a tap's channels).
//
// Napkin math, per core: AMX peaks at 1024 bf16 FLOP/cycle (one 16x16x32 _tile_dpbf16ps per 16
// cycles), AVX512-BF16 at 64 FLOP/cycle per FMA port (vdpbf16ps: 16 lanes x 2 products x 2 FLOP;
// 128 with Zen 5's two ports). A packed im2col element feeds 2 * Co/g FLOPs of the block it sits in
// (B of the NCHW forward: every row of W) and costs ~2-3 cycles through the scalar gather (index
// tables, a bounds test, one 2-byte load and store) plus the packer's pass over the L1 tile. At
// Co/g = 64 that is 128 FLOP per ~3 cycles against 128 FLOP/cycle of vdpbf16ps: the gather takes
// 2-3x the multiply time on the small-channel layers (ResNet-50 conv2_x; the B panel is packed once
// per thread's rectangle and every A block streams past it, so this is its only cost), and still a
// quarter to a third at Co/g = 512 (1024 FLOP, 8 cycles). On AMX (8x the rate) the gather is the
// bottleneck at every ResNet-50 layer: a vectorised gather (16 pixels per masked load where the tap
// rows are in range) is the next step there, written only once it can be measured (no AMX machine
// at hand).
#include "cpu/conv_bf16.h"

#include <omp.h>

#include <algorithm>
#include <exception>
#include <memory>
#include <vector>

#include "common/check.h"
#include "cpu/bf16.h"
#include "cpu/conv_tasks.h"  // forward_taps, phase_taps (shared with the fp32 convolutions)
#include "cpu/gemm_bf16_kernel.h"
#include "cpu/parallel_team.h"

namespace pn {
namespace {

constexpr int kChunk = 64;     // K per staging tile: a multiple of every path's k_step (2, 32)
constexpr int kMaxLanes = 32;  // the widest sliver of any path (mr, nr <= 32)

int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

// Element strides of an activation tensor of logical shape (N, C, H, W).
struct Strides {
  int64_t image, channel, row, col;
};

Strides strides_of(ConvLayout layout, int64_t C, int64_t H, int64_t W) {
  return layout == ConvLayout::nchw ? Strides{C * H * W, H * W, W, 1} : Strides{H * W * C, 1, W * C, C};
}

// The im2col matrix of an activation tensor, never materialised: element (q, f) is pixel q of an
// output grid laid over the batch (q = (n * gh + a) * gw + b) and feature f, one channel at one tap,
// ordered (c, i, j) for NCHW (the weight's order) or (i, j, c) for NHWC (a tap's channels adjacent
// in memory). It reads src[n, c, a * sh + tap_h[i], b * sw + tap_w[j]], zero outside the H x W plane.
struct Patches {
  const uint16_t* src;  // channel 0 of the group in image 0
  Strides st;
  int64_t H, W;                       // the source plane
  int64_t gh, gw, sh, sw;             // the pixel grid and its step over the source
  std::vector<int64_t> tap_h, tap_w;  // source offset of each tap row / column
  int64_t channels;
  bool taps_outer;

  int64_t taps() const { return static_cast<int64_t>(tap_h.size() * tap_w.size()); }
  int64_t features() const { return channels * taps(); }

  // out[qi * ld_q + fi * ld_f] = element (q0 + qi, f0 + fi) for qi < nq, fi < nf (both <= kChunk).
  void gather(int64_t q0, int64_t nq, int64_t f0, int64_t nf, uint16_t* out, int64_t ld_q, int64_t ld_f) const {
    int64_t base[kChunk], qh[kChunk], qw[kChunk], off[kChunk], fh[kChunk], fw[kChunk];
    const int64_t P = gh * gw, ntw = static_cast<int64_t>(tap_w.size());
    for (int64_t qi = 0; qi < nq; ++qi) {
      const int64_t q = q0 + qi, n = q / P, r = q % P;
      qh[qi] = (r / gw) * sh;
      qw[qi] = (r % gw) * sw;
      base[qi] = n * st.image + qh[qi] * st.row + qw[qi] * st.col;
    }
    for (int64_t fi = 0; fi < nf; ++fi) {
      const int64_t f = f0 + fi;
      const int64_t c = taps_outer ? f % channels : f / taps(), t = taps_outer ? f / channels : f % taps();
      fh[fi] = tap_h[t / ntw];
      fw[fi] = tap_w[t % ntw];
      off[fi] = c * st.channel + fh[fi] * st.row + fw[fi] * st.col;
    }
    const auto value = [&](int64_t qi, int64_t fi) -> uint16_t {
      const int64_t ih = qh[qi] + fh[fi], iw = qw[qi] + fw[fi];
      const bool inside = static_cast<uint64_t>(ih) < static_cast<uint64_t>(H) &&
                          static_cast<uint64_t>(iw) < static_cast<uint64_t>(W);
      return inside ? src[base[qi] + off[fi]] : uint16_t(0);
    };
    if (ld_q == 1) {  // pixels adjacent in the tile: walk them innermost
      for (int64_t fi = 0; fi < nf; ++fi)
        for (int64_t qi = 0; qi < nq; ++qi) out[fi * ld_f + qi] = value(qi, fi);
    } else {
      for (int64_t qi = 0; qi < nq; ++qi)
        for (int64_t fi = 0; fi < nf; ++fi) out[qi * ld_q + fi * ld_f] = value(qi, fi);
    }
  }
};

// Patches as one operand of a bf16 GEMM: A (is_a; x = rows) or B (x = columns), with the pixels
// along x (im2col^T as A, im2col as B) or along the GEMM's K (the backward-weight sums over pixels).
struct PatchSource {
  const Patches* patches;
  bool is_a;
  bool pixels_along_x;

  Bf16OperandSource source() const { return Bf16OperandSource{&pack, this}; }

  static void pack(const void* self, const Bf16GemmKernel& kernel, int64_t x0, int64_t xn, int64_t k0, int64_t kc,
                   uint16_t* dst) {
    const PatchSource& s = *static_cast<const PatchSource*>(self);
    const int width = s.is_a ? kernel.mr : kernel.nr;
    const int64_t kc_pad = round_up(kc, kernel.k_step);
    alignas(64) uint16_t stage[kChunk * kMaxLanes];
    // The staging tile is row-major: A's live rows x kl (ld kChunk), B's kl x live columns (ld width).
    const int64_t ld_x = s.is_a ? kChunk : 1, ld_k = s.is_a ? 1 : width;
    for (int64_t x = 0; x < xn; x += width) {
      const int live = static_cast<int>(std::min<int64_t>(width, xn - x));
      uint16_t* sliver = dst + x * kc_pad;
      for (int64_t k = 0; k < kc; k += kChunk) {
        const int kl = static_cast<int>(std::min<int64_t>(kChunk, kc - k));
        if (s.pixels_along_x)
          s.patches->gather(x0 + x, live, k0 + k, kl, stage, ld_x, ld_k);
        else
          s.patches->gather(k0 + k, kl, x0 + x, live, stage, ld_k, ld_x);
        if (s.is_a)
          kernel.pack_a(Bf16Operand{stage, kChunk, 1}, 0, live, 0, kl, sliver + k * width);
        else
          kernel.pack_b(Bf16Operand{stage, width, 1}, 0, kl, 0, live, sliver + k * width);
      }
    }
  }
};

Patches input_patches(const Conv2dShape& s, ConvLayout layout, const uint16_t* x, int64_t g) {
  const Strides st = strides_of(layout, s.C, s.H, s.W);
  return Patches{x + g * s.Cg() * st.channel, st, s.H, s.W, s.Ho, s.Wo, s.sh, s.sw,
                 forward_taps(s.kh, s.dh, s.ph), forward_taps(s.kw, s.dw, s.pw), s.Cg(),
                 layout == ConvLayout::nhwc};
}

Bf16GemmArgs product(int64_t M, int64_t N, int64_t K, void* c, int64_t ldc, bool c_bf16) {
  Bf16GemmArgs g;
  g.M = M;
  g.N = N;
  g.K = K;
  g.c = c;
  g.ldc = ldc;
  g.c_bf16 = c_bf16;
  return g;
}

void* element(void* base, bool bf16, int64_t offset) {
  return static_cast<char*>(base) + offset * (bf16 ? sizeof(uint16_t) : sizeof(float));
}

void store(void* base, bool bf16, int64_t offset, float v) {
  if (bf16)
    static_cast<uint16_t*>(base)[offset] = float_to_bf16(v);
  else
    static_cast<float*>(base)[offset] = v;
}

// body(task, thread) for every task: whole tasks per thread (single-threaded GEMMs) when they deal
// out evenly, else one after another with every thread in each GEMM (thread 0 then). The first
// exception inside the parallel region is carried out and rethrown.
template <typename Body>
void run_tasks(int64_t tasks, Body&& body) {
  const int threads = omp_get_max_threads();
  const bool spread = threads > 1 && tasks >= threads && (tasks % threads == 0 || tasks >= 4 * threads);
  if (!spread) {
    for (int64_t t = 0; t < tasks; ++t) body(t, 0);
    return;
  }
  std::exception_ptr error;
#pragma omp parallel for num_threads(team_threads()) schedule(static)
  for (int64_t t = 0; t < tasks; ++t) {
    try {
      body(t, omp_get_thread_num());
    } catch (...) {
#pragma omp critical(pn_conv_bf16_error)
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}

// w (Co, C/g, kh, kw) as (Co, kh, kw, C/g): the NHWC forward's B^T, one row per output channel.
std::vector<uint16_t> taps_outer_weight(const Conv2dShape& s, const uint16_t* w) {
  const int64_t Cg = s.Cg(), T = s.kh * s.kw;
  std::vector<uint16_t> wt(s.Co * T * Cg);
  for (int64_t co = 0; co < s.Co; ++co)
    for (int64_t c = 0; c < Cg; ++c)
      for (int64_t t = 0; t < T; ++t) wt[(co * T + t) * Cg + c] = w[(co * Cg + c) * T + t];
  return wt;
}

}  // namespace

// ---- forward ---------------------------------------------------------------------------------------

void conv2d_bf16_forward(const Conv2dShape& s, ConvLayout layout, const uint16_t* x, const uint16_t* w,
                         const float* bias, bool relu, void* y, bool y_bf16, Bf16GemmIsa isa) {
  const int64_t P = s.Ho * s.Wo, K = s.Cg() * s.kh * s.kw, Cog = s.Cog();
  if (layout == ConvLayout::nchw) {
    run_tasks(s.N * s.groups, [&](int64_t task, int) {
      const int64_t n = task / s.groups, g = task % s.groups;
      const Patches patches = input_patches(s, layout, x + n * s.C * s.H * s.W, g);
      const PatchSource b{&patches, false, true};
      const Bf16OperandSource b_source = b.source();
      Bf16GemmArgs args = product(Cog, P, K, element(y, y_bf16, (n * s.Co + g * Cog) * P), P, y_bf16);
      args.a = w + g * Cog * K;
      args.lda = K;
      args.row_bias = bias ? bias + g * Cog : nullptr;
      args.relu = relu;
      gemm_bf16_from_sources(args, nullptr, &b_source, isa);
    });
    return;
  }
  const std::vector<uint16_t> wt = taps_outer_weight(s, w);
  run_tasks(s.groups, [&](int64_t g, int) {
    const Patches patches = input_patches(s, layout, x, g);
    const PatchSource a{&patches, true, true};
    const Bf16OperandSource a_source = a.source();
    Bf16GemmArgs args = product(s.N * P, Cog, K, element(y, y_bf16, g * Cog), s.Co, y_bf16);
    args.b = wt.data() + g * Cog * K;
    args.ldb = K;
    args.trans_b = true;
    args.bias = bias ? bias + g * Cog : nullptr;
    args.relu = relu;
    gemm_bf16_from_sources(args, &a_source, nullptr, isa);
  });
}

// ---- backward-data ---------------------------------------------------------------------------------

namespace {

// One stride phase of dx: the pixels (rh + sh * a, rw + sw * b), the kernel taps that reach them and
// the dy offset each reads (dy row a + dy_h[i]); conv.cpp's header derives it.
struct DataPhase {
  int64_t rh, rw, Ha, Wb;
  std::vector<int64_t> th, tw, dy_h, dy_w;
  std::unique_ptr<uint16_t[]> weight;  // per group: (C/g) x K_phase = W_phase^T, features in dy's order

  int64_t taps() const { return static_cast<int64_t>(th.size() * tw.size()); }
};

std::vector<DataPhase> data_phases(const Conv2dShape& s, ConvLayout layout, const uint16_t* w) {
  std::vector<DataPhase> phases;
  const int64_t Cg = s.Cg(), Cog = s.Cog();
  for (int64_t rh = 0; rh < std::min(s.sh, s.H); ++rh)
    for (int64_t rw = 0; rw < std::min(s.sw, s.W); ++rw) {
      DataPhase ph{rh, rw, (s.H - rh + s.sh - 1) / s.sh, (s.W - rw + s.sw - 1) / s.sw, {}, {}, {}, {}, {}};
      phase_taps(rh, s.sh, s.ph, s.dh, s.kh, ph.th, ph.dy_h);
      phase_taps(rw, s.sw, s.pw, s.dw, s.kw, ph.tw, ph.dy_w);
      ph.weight.reset(new uint16_t[s.groups * Cg * Cog * ph.taps()]);  // every element is written
      transpose_phase_weight(s, w, ph.th, ph.tw, /*taps_major=*/layout == ConvLayout::nhwc, ph.weight.get());
      phases.push_back(std::move(ph));
    }
  return phases;
}

// dy (from the image `dy` points at) as one phase's patches: an unstrided Ha x Wb grid per image.
Patches phase_patches(const Conv2dShape& s, ConvLayout layout, const uint16_t* dy, int64_t g, const DataPhase& ph) {
  const Strides st = strides_of(layout, s.Co, s.Ho, s.Wo);
  return Patches{dy + g * s.Cog() * st.channel, st, s.Ho, s.Wo, ph.Ha, ph.Wb, 1, 1, ph.dy_h, ph.dy_w, s.Cog(),
                 layout == ConvLayout::nhwc};
}

}  // namespace

void conv2d_bf16_backward_data(const Conv2dShape& s, ConvLayout layout, const uint16_t* dy, const uint16_t* w,
                               void* dx, bool dx_bf16, Bf16GemmIsa isa) {
  const std::vector<DataPhase> phases = data_phases(s, layout, w);
  const int64_t Cg = s.Cg(), HW = s.H * s.W;
  const bool unit_stride = s.sh == 1 && s.sw == 1;
  int64_t widest = 0;
  for (const DataPhase& ph : phases) widest = std::max(widest, ph.Ha * ph.Wb);

  if (layout == ConvLayout::nchw) {
    const int threads = omp_get_max_threads();
    std::vector<float> buffers(unit_stride ? 0 : threads * Cg * widest);
    run_tasks(s.N * s.groups, [&](int64_t task, int thread) {
      const int64_t n = task / s.groups, g = task % s.groups;
      float* buf = buffers.data() + thread * Cg * widest;
      for (const DataPhase& ph : phases) {
        const int64_t pixels = ph.Ha * ph.Wb, Kp = s.Cog() * ph.taps();
        const Patches patches = phase_patches(s, layout, dy + n * s.Co * s.Ho * s.Wo, g, ph);
        const PatchSource b{&patches, false, true};
        const Bf16OperandSource b_source = b.source();
        Bf16GemmArgs args = unit_stride ? product(Cg, pixels, Kp, element(dx, dx_bf16, (n * s.C + g * Cg) * HW), HW,
                                                  dx_bf16)
                                        : product(Cg, pixels, Kp, buf, pixels, false);
        args.a = ph.weight.get() + g * Cg * Kp;
        args.lda = Kp;
        gemm_bf16_from_sources(args, nullptr, &b_source, isa);
        if (unit_stride) continue;
        for (int64_t c = 0; c < Cg; ++c)
          for (int64_t a = 0; a < ph.Ha; ++a)
            for (int64_t col = 0; col < ph.Wb; ++col)
              store(dx, dx_bf16, (n * s.C + g * Cg + c) * HW + (ph.rh + a * s.sh) * s.W + ph.rw + col * s.sw,
                    buf[c * pixels + a * ph.Wb + col]);
      }
    });
    return;
  }
  // NHWC: one GEMM per (group, phase) over the whole batch, rows = the phase's pixels.
  std::vector<float> buffer(unit_stride ? 0 : s.N * widest * Cg);
  for (int64_t g = 0; g < s.groups; ++g)
    for (const DataPhase& ph : phases) {
      const int64_t rows = s.N * ph.Ha * ph.Wb, Kp = s.Cog() * ph.taps();
      const Patches patches = phase_patches(s, layout, dy, g, ph);
      const PatchSource a{&patches, true, true};
      const Bf16OperandSource a_source = a.source();
      Bf16GemmArgs args = unit_stride ? product(rows, Cg, Kp, element(dx, dx_bf16, g * Cg), s.C, dx_bf16)
                                      : product(rows, Cg, Kp, buffer.data(), Cg, false);
      args.b = ph.weight.get() + g * Cg * Kp;
      args.ldb = Kp;
      args.trans_b = true;
      gemm_bf16_from_sources(args, &a_source, nullptr, isa);
      if (unit_stride) continue;
#pragma omp parallel for num_threads(team_threads()) schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t n = r / (ph.Ha * ph.Wb), a = r % (ph.Ha * ph.Wb) / ph.Wb, col = r % ph.Wb;
        const int64_t pixel = (n * s.H + ph.rh + a * s.sh) * s.W + ph.rw + col * s.sw;
        for (int64_t c = 0; c < Cg; ++c) store(dx, dx_bf16, pixel * s.C + g * Cg + c, buffer[r * Cg + c]);
      }
    }
}

// ---- backward-weight -------------------------------------------------------------------------------

void conv2d_bf16_backward_weight(const Conv2dShape& s, ConvLayout layout, const uint16_t* dy, const uint16_t* x,
                                 float* dw, Bf16GemmIsa isa) {
  const int64_t P = s.Ho * s.Wo, K = s.Cg() * s.kh * s.kw, Cog = s.Cog(), T = s.kh * s.kw;
  // NHWC: K comes out ordered (tap, channel); each group's dW goes through this buffer.
  std::vector<float> taps_outer(layout == ConvLayout::nhwc ? s.Co * K : 0);
  run_tasks(s.groups, [&](int64_t g, int) {
    const Patches patches = input_patches(s, layout, x, g);
    const PatchSource b{&patches, false, false};
    const Bf16OperandSource b_source = b.source();
    float* out = layout == ConvLayout::nchw ? dw + g * Cog * K : taps_outer.data() + g * Cog * K;
    Bf16GemmArgs args = product(Cog, K, s.N * P, out, K, false);
    if (layout == ConvLayout::nhwc) {  // dy[:, g] as A^T: pixels x channels, ld Co
      args.a = dy + g * Cog;
      args.lda = s.Co;
      args.trans_a = true;
      gemm_bf16_from_sources(args, nullptr, &b_source, isa);
      return;
    }
    const Strides st = strides_of(layout, s.Co, s.Ho, s.Wo);  // dy planes as 1 x 1 patches
    const Patches planes{dy + g * Cog * st.channel, st, s.Ho, s.Wo, s.Ho, s.Wo, 1, 1, {0}, {0}, Cog, false};
    const PatchSource a{&planes, true, false};
    const Bf16OperandSource a_source = a.source();
    gemm_bf16_from_sources(args, &a_source, &b_source, isa);
  });
  if (layout == ConvLayout::nchw) return;
  const int64_t Cg = s.Cg();
#pragma omp parallel for num_threads(team_threads()) schedule(static)
  for (int64_t co = 0; co < s.Co; ++co)
    for (int64_t c = 0; c < Cg; ++c)
      for (int64_t t = 0; t < T; ++t) dw[(co * Cg + c) * T + t] = taps_outer[co * K + t * Cg + c];
}

}  // namespace pn
