// 2-D convolution on channels_last (NHWC, float32) memory with OHWI weights: forward,
// backward-data and backward-weight, as GEMMs whose pixel dimension is the GEMM's M (or K).
//
// In NHWC one pixel's channels are contiguous, so a row of the im2col matrix (one output pixel;
// columns (tap h, tap w, channel)) is kh*kw runs of C/g floats: the gather is one copy of C/g
// floats per tap (a zero fill for a tap in the padding), never an element-wise walk. And the GEMM
// result y (pixels x Co) is NHWC itself, so no pass writes through a strided view:
//
// forward          y[rows q0..q1, g] (pixels x Co/g) = im2col(x)[q0..q1, g] (pixels x K) @ W[g]^T
//                  K = kh*kw*C/g. A is a block of gathered rows (DenseA, row-major), B the OHWI
//                  weight as stored (W[g] is Co/g x K row-major, read transposed). 1x1 unstrided
//                  unpadded: A is x itself, the (N*H*W, C) matrix, read in place (no gather).
//                  Bias and ReLU run over each block's rows right after its GEMM (vectors along Co).
//                  (An A packer gathering straight into the row slivers timed 0.8-0.9x of this. On
//                  AVX2, DenseA's packing of a row-major block is a scalar transpose: the cost that
//                  keeps 3- and 16-channel layers below NCHW speed; bench/NOTES.md.)
//
// backward-data    the stride-phase split of conv.cpp: dx at ih = rh + sh*a (iw likewise) is an
//                  unstrided convolution of dy with the phase's flipped taps, so each phase is
//                  dx_phase (pixels x C/g) = gather(dy) (pixels x taps*Co/g) @ W_phase (taps*Co/g x C/g),
//                  the same gather over dy. Stride 1: one phase, written into dx in place (ldc = C);
//                  otherwise a block's rows land in a buffer and go to their strided pixels as
//                  memcpys of C/g floats. Every dx element is written once: no scatter-add, no zeroing.
//
// backward-weight  dW[g] (Co/g x K) = sum over pixels of dy[:, g]^T (Co/g x pixels) @ im2col(x) (pixels x K):
//                  the pixels are the GEMM's K, gathered block by block; each block's GEMM adds into
//                  the thread's dW (beta = 1 after its first). Threads take slices of the pixels
//                  and sum their partial dW in a fixed order (conv.cpp's rule), or whole groups.
//                  (A B packer gathering straight into the column slivers, one copy per element
//                  instead of two, timed 0.7-0.9x of this: bench/NOTES.md.)
//
// Blocks. A gathered block is kBlockFloats (64 Ki floats, 256 KiB: L2-resident beside the GEMM's
// packed panels) of rows: 113 pixels for 64 channels at 3x3, 512 (the cap) for the 27-column stem.
// Forward and backward-data deal (phase, group, block) tasks to the threads, each running
// single-threaded GEMMs, when they come out even (tasks_balance), else one GEMM at a time on all
// threads (ConvParallel::gemm, which the tests also force).
//
// Napkin math (ResNet's 64-channel 3x3 layer at 32x32, batch 32: P = 32768 pixels, K = 576):
// 2*P*K*Co = 2.4 GFLOP per pass, ~16 ms at the ~150 GFLOP/s two AVX2 cores sustain in the GEMM.
// The gather copies P*K floats (75 MB) through L2 at ~30 GB/s per core, ~1.3 ms on two cores, about
// 8% of the GEMM; NCHW's implicit packers touch the same elements but in 64-byte masked pieces,
// and every NCHW layer in a channels_last network also paid two full transposes of its activations.
#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/conv.h"
#include "cpu/conv_tasks.h"
#include "cpu/gemm.h"

namespace pn {

namespace {

constexpr int64_t kBlockFloats = int64_t(1) << 16;
constexpr int64_t kMaxBlockRows = 512;

// Rows per gathered block of `cols` columns.
int64_t block_rows(int64_t cols) { return std::clamp<int64_t>(kBlockFloats / std::max<int64_t>(cols, 1), 16, kMaxBlockRows); }

// out[0:len] = src[0:len], or zeros for a null src (a tap in the padding). A loop, not memcpy: the
// stem's runs are 3 floats, where a call per tap cost more than the copy.
inline void copy_run(const float* src, int64_t len, float* out) {
  if (src) {
    for (int64_t c = 0; c < len; ++c) out[c] = src[c];
  } else {
    for (int64_t c = 0; c < len; ++c) out[c] = 0.f;
  }
}

// The im2col matrix of one channel group over an NHWC tensor, without owning any data:
//   row q     = output pixel (n, a, b) of an Ho x Wo grid, counted across the batch
//   column    = (tap th, tap tw, channel c), channel fastest
//   value     = src[n, a*sh + off_h[th], b*sw + off_w[tw], c], or 0 outside the Hs x Ws plane.
struct NhwcGather {
  const float* src;             // channel 0 of the group, pixel (0, 0, 0)
  int64_t Hs, Ws, pixel_stride;  // source plane; floats from one pixel to the next (all channels)
  int64_t run;                  // channels of the group: floats copied per tap
  int64_t Ho, Wo, sh, sw;
  std::vector<int64_t> off_h, off_w;

  int64_t taps() const { return static_cast<int64_t>(off_h.size() * off_w.size()); }
  int64_t cols() const { return taps() * run; }
  int64_t pixels() const { return Ho * Wo; }
  // One tap at offset 0 on an unstrided same-size grid: row q is the source's pixel q itself.
  bool is_identity() const {
    return taps() == 1 && off_h[0] == 0 && off_w[0] == 0 && sh == 1 && sw == 1 && Ho == Hs && Wo == Ws;
  }

  // dst (count x cols(), row-major) = rows q0 .. q0+count.
  void rows(int64_t q0, int64_t count, float* dst) const {
    const int64_t ntw = static_cast<int64_t>(off_w.size()), K = cols();
    int64_t n = q0 / pixels(), a = q0 % pixels() / Wo, b = q0 % Wo;
    for (int64_t i = 0; i < count; ++i) {
      float* out = dst + i * K;
      for (int64_t th = 0; th < static_cast<int64_t>(off_h.size()); ++th, out += ntw * run) {
        const int64_t ih = a * sh + off_h[th];
        if (ih < 0 || ih >= Hs) {
          std::fill(out, out + ntw * run, 0.f);
          continue;
        }
        const float* row = src + (n * Hs + ih) * Ws * pixel_stride;
        for (int64_t tw = 0; tw < ntw; ++tw) {
          const int64_t iw = b * sw + off_w[tw];
          copy_run(iw < 0 || iw >= Ws ? nullptr : row + iw * pixel_stride, run, out + tw * run);
        }
      }
      if (++b == Wo) {
        b = 0;
        if (++a == Ho) a = 0, ++n;
      }
    }
  }
};

NhwcGather forward_gather(const Conv2dShape& s, const float* x) {
  return NhwcGather{x, s.H, s.W, s.C, s.Cg(), s.Ho, s.Wo, s.sh, s.sw, forward_taps(s.kh, s.dh, s.ph),
                    forward_taps(s.kw, s.dw, s.pw)};
}

// A block of gathered rows, or the source itself when the gather is the identity.
struct Rows {
  const float* data;
  int64_t ld;
};

Rows gathered(const NhwcGather& gather, int64_t q0, int64_t count, float* buffer) {
  if (gather.is_identity()) return Rows{gather.src + q0 * gather.pixel_stride, gather.pixel_stride};
  gather.rows(q0, count, buffer);
  return Rows{buffer, gather.cols()};
}

// One GEMM task of forward / backward-data: rows [q0, q0 + count) of grid `grid` (an index into
// the pass's list), group g.
struct RowTask {
  int64_t grid, g, q0, count;
};

std::vector<RowTask> row_tasks(const std::vector<int64_t>& grid_pixels, int64_t groups, int64_t rows_per_task) {
  std::vector<RowTask> tasks;
  for (size_t i = 0; i < grid_pixels.size(); ++i)
    for (int64_t g = 0; g < groups; ++g)
      for (int64_t q0 = 0; q0 < grid_pixels[i]; q0 += rows_per_task)
        tasks.push_back(RowTask{static_cast<int64_t>(i), g, q0, std::min(rows_per_task, grid_pixels[i] - q0)});
  return tasks;
}

// Runs body(task, buffer of this thread) over the tasks: spread over the threads (single-threaded
// GEMMs) or one after another (each GEMM on every thread).
template <typename Body>
void run_row_tasks(const std::vector<RowTask>& tasks, bool spread, int64_t buffer_floats, double flops, Body&& body) {
  const int threads = omp_get_max_threads();
  if (spread) {
    std::vector<float> buffers(buffer_floats * threads);
    parallel_tasks(static_cast<int64_t>(tasks.size()),
                   [&](int64_t t, int thread) { body(tasks[t], buffers.data() + thread * buffer_floats); }, flops);
    return;
  }
  std::vector<float> buffer(buffer_floats);
  for (const RowTask& t : tasks) body(t, buffer.data());
}

bool spread_tasks(ConvParallel par, int64_t tasks) {
  if (par == ConvParallel::automatic) return tasks_balance(tasks, omp_get_max_threads());
  return par == ConvParallel::images;
}

// y[r, 0:len] += bias, then max(., 0) when relu, for `count` rows `ld` apart.
void bias_relu_rows(float* y, int64_t ld, int64_t count, int64_t len, const float* bias, bool relu) {
  for (int64_t r = 0; r < count; ++r) {
    float* row = y + r * ld;
    if (bias) {
#pragma omp simd
      for (int64_t c = 0; c < len; ++c) row[c] += bias[c];
    }
    if (relu) {
#pragma omp simd
      for (int64_t c = 0; c < len; ++c) row[c] = std::max(row[c], 0.f);
    }
  }
}

}  // namespace

// ---- forward -------------------------------------------------------------------------------

void conv2d_forward_nhwc(const Conv2dShape& s, const float* x, const float* w, const float* bias, bool relu, float* y,
                         ConvParallel par) {
  const int64_t Cog = s.Cog(), P = s.N * s.Ho * s.Wo;
  std::vector<NhwcGather> gathers;
  for (int64_t g = 0; g < s.groups; ++g) gathers.push_back(forward_gather(s, x + g * s.Cg()));
  const int64_t K = gathers[0].cols(), rows = block_rows(K);
  const std::vector<RowTask> tasks = row_tasks({P}, s.groups, rows);
  const bool spread = spread_tasks(par, static_cast<int64_t>(tasks.size()));
  const int64_t buffer = gathers[0].is_identity() ? 0 : rows * K;
  run_row_tasks(tasks, spread, buffer, conv_flops(s), [&](const RowTask& t, float* buf) {
    const Rows a = gathered(gathers[t.g], t.q0, t.count, buf);
    float* out = y + t.q0 * s.Co + t.g * Cog;
    gemm_packed(t.count, Cog, K, 1.f, DenseA(a.data, a.ld, 1), DenseB(w + t.g * Cog * K, 1, K), 0.f, out, s.Co);
    if (bias || relu) bias_relu_rows(out, s.Co, t.count, Cog, bias ? bias + t.g * Cog : nullptr, relu);
  });
}

// ---- backward-data -------------------------------------------------------------------------

namespace {

// One stride phase of dx (see the header comment and conv.cpp's DataPhase).
struct NhwcPhase {
  int64_t rh, rw;
  std::vector<NhwcGather> gathers;  // per group, over dy; columns (tap h, tap w, co)
  std::vector<float> weight;        // per group: (taps * Co/g) x (C/g) = W_phase, row-major

  int64_t K() const { return gathers[0].cols(); }
  int64_t pixels(int64_t N) const { return N * gathers[0].pixels(); }
};

std::vector<NhwcPhase> nhwc_phases(const Conv2dShape& s, const float* dy, const float* w) {
  std::vector<NhwcPhase> phases;
  const int64_t Cg = s.Cg(), Cog = s.Cog();
  for (int64_t rh = 0; rh < std::min(s.sh, s.H); ++rh)
    for (int64_t rw = 0; rw < std::min(s.sw, s.W); ++rw) {
      std::vector<int64_t> th, tw, oh, ow;
      phase_taps(rh, s.sh, s.ph, s.dh, s.kh, th, oh);
      phase_taps(rw, s.sw, s.pw, s.dw, s.kw, tw, ow);
      const int64_t Ha = (s.H - rh + s.sh - 1) / s.sh, Wb = (s.W - rw + s.sw - 1) / s.sw;
      NhwcPhase phase{rh, rw, {}, {}};
      for (int64_t g = 0; g < s.groups; ++g)
        phase.gathers.push_back(NhwcGather{dy + g * Cog, s.Ho, s.Wo, s.Co, Cog, Ha, Wb, 1, 1, oh, ow});
      const int64_t nth = static_cast<int64_t>(th.size()), ntw = static_cast<int64_t>(tw.size());
      const int64_t K = nth * ntw * Cog;
      phase.weight.resize(s.groups * K * Cg);
      for (int64_t g = 0; g < s.groups; ++g)
        for (int64_t i = 0; i < nth; ++i)
          for (int64_t j = 0; j < ntw; ++j)
            for (int64_t co = 0; co < Cog; ++co)
              std::memcpy(phase.weight.data() + ((g * nth * ntw + i * ntw + j) * Cog + co) * Cg,
                          w + (((g * Cog + co) * s.kh + th[i]) * s.kw + tw[j]) * Cg, sizeof(float) * Cg);
      phases.push_back(std::move(phase));
    }
  return phases;
}

}  // namespace

void conv2d_backward_data_nhwc(const Conv2dShape& s, const float* dy, const float* w, float* dx, ConvParallel par) {
  const std::vector<NhwcPhase> phases = nhwc_phases(s, dy, w);
  const int64_t Cg = s.Cg();
  const bool unit_stride = s.sh == 1 && s.sw == 1;
  int64_t widest = 1;
  std::vector<int64_t> grid_pixels;
  for (const NhwcPhase& ph : phases) {
    widest = std::max(widest, ph.K());
    grid_pixels.push_back(ph.pixels(s.N));
  }
  const int64_t rows = block_rows(widest);
  const std::vector<RowTask> tasks = row_tasks(grid_pixels, s.groups, rows);
  const bool spread = spread_tasks(par, static_cast<int64_t>(tasks.size()));
  // Per thread: the gathered rows, then (strided phases) the block's dx rows before they scatter.
  const int64_t gather_floats = rows * widest, buffer = gather_floats + (unit_stride ? 0 : rows * Cg);
  run_row_tasks(tasks, spread, buffer, conv_flops(s), [&](const RowTask& t, float* buf) {
    const NhwcPhase& ph = phases[t.grid];
    const NhwcGather& gather = ph.gathers[t.g];
    float* out = unit_stride ? dx + t.q0 * s.C + t.g * Cg : buf + gather_floats;
    const int64_t ldc = unit_stride ? s.C : Cg, K = ph.K();
    if (K == 0) {  // no tap reaches this phase
      for (int64_t r = 0; r < t.count; ++r) std::fill(out + r * ldc, out + r * ldc + Cg, 0.f);
    } else {
      const Rows a = gathered(gather, t.q0, t.count, buf);
      gemm_packed(t.count, Cg, K, 1.f, DenseA(a.data, a.ld, 1), DenseB(ph.weight.data() + t.g * K * Cg, Cg, 1), 0.f,
                  out, ldc);
    }
    if (unit_stride) return;
    int64_t n = t.q0 / gather.pixels(), a = t.q0 % gather.pixels() / gather.Wo, b = t.q0 % gather.Wo;
    for (int64_t r = 0; r < t.count; ++r) {
      float* to = dx + ((n * s.H + ph.rh + s.sh * a) * s.W + ph.rw + s.sw * b) * s.C + t.g * Cg;
      std::memcpy(to, out + r * Cg, sizeof(float) * Cg);
      if (++b == gather.Wo) {
        b = 0;
        if (++a == gather.Ho) a = 0, ++n;
      }
    }
  });
}

// ---- backward-weight -----------------------------------------------------------------------

void conv2d_backward_weight_nhwc(const Conv2dShape& s, const float* dy, const float* x, float* dw, ConvParallel par) {
  const int64_t Cog = s.Cog(), P = s.N * s.Ho * s.Wo;
  std::vector<NhwcGather> gathers;
  for (int64_t g = 0; g < s.groups; ++g) gathers.push_back(forward_gather(s, x + g * s.Cg()));
  const int64_t K = gathers[0].cols(), rows = block_rows(K), block = Cog * K;
  const int threads = omp_get_max_threads();
  const int64_t buffer = gathers[0].is_identity() ? 0 : rows * K;

  // out (+)= dy[q0:q1, g]^T @ im2col(x)[q0:q1, g], block by block (the first block overwrites).
  auto accumulate = [&](int64_t g, int64_t q0, int64_t q1, float* out, float* buf) {
    for (int64_t q = q0; q < q1; q += rows) {
      const int64_t count = std::min(rows, q1 - q);
      const Rows b = gathered(gathers[g], q, count, buf);
      gemm_packed(Cog, K, count, 1.f, DenseA(dy + q * s.Co + g * Cog, 1, s.Co), DenseB(b.data, b.ld, 1),
                  q == q0 ? 0.f : 1.f, out, K);
    }
  };

  bool images;
  if (par == ConvParallel::automatic)
    images = tasks_balance(s.groups, threads) || P >= 2048 * int64_t(threads);  // conv.cpp's rule
  else
    images = par == ConvParallel::images;
  if (!images) {
    std::vector<float> buf(buffer);
    for (int64_t g = 0; g < s.groups; ++g) accumulate(g, 0, P, dw + g * block, buf.data());
    return;
  }
  const int64_t slices = s.groups >= threads ? 1 : std::min<int64_t>((threads + s.groups - 1) / s.groups, P);
  std::vector<float> partial((slices - 1) * s.groups * block), buffers(buffer * threads);
  parallel_tasks(s.groups * slices, [&](int64_t task, int thread) {
    const int64_t g = task / slices, slice = task % slices;
    float* out = slice == 0 ? dw + g * block : partial.data() + (g * (slices - 1) + slice - 1) * block;
    accumulate(g, P * slice / slices, P * (slice + 1) / slices, out, buffers.data() + thread * buffer);
  }, conv_flops(s));
  if (slices == 1) return;
  add_partial_dw(dw, partial.data(), s.groups, block, slices);
}

}  // namespace pn
