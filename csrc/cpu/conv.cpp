// 2-D convolution (NCHW, float32) as GEMMs over implicit-im2col packers (conv_pack.h): the column
// matrix is never materialised, the packers copy the image straight into the GEMM's panels.
//
// Per run of images n (see "Small images") and group g, with K = C/g*kh*kw and P = Ho*Wo:
//
// forward          y[n,g] (Co/g x P) = W[g] (Co/g x K) @ im2col(x[n,g]) (K x P)
//                  A is the weight as stored (DenseA); B packs straight from the image. Bias and
//                  ReLU are applied to each block right after its GEMM, while it is in cache.
//
// backward-data    dx = conv_transpose(dy, W). Rather than a GEMM into a (K x H*W) column buffer
//                  followed by a col2im scatter-add (a buffer kh*kw times the size of dx, and
//                  kh*kw read-modify-write passes over dx), dx is computed as a convolution of dy:
//                  dx[c, ih, iw] gathers dy[co, oh, ow] * w[co, c, ki, kj] over ih = oh*sh - ph + ki*dh.
//                  Split dx into the sh*sw stride phases (ih mod sh, iw mod sw). Within one phase a
//                  tap ki contributes only if (ih + ph - ki*dh) is a multiple of sh, for every ih of
//                  the phase, and then oh = a + (rh + ph - ki*dh)/sh with ih = rh + sh*a: an
//                  unstrided convolution of dy with the phase's subset of flipped taps. Each phase
//                  is one GEMM  dx_phase (C/g x pixels) = W_phase^T (C/g x Co/g*taps) @ im2col(dy)
//                  whose packers read dy and W in place (Im2colB, PhaseWeightA).
//                  Stride 1 has one phase and its GEMM writes dx directly; otherwise each phase
//                  goes through a per-thread buffer of C/g x pixels-of-the-phase and is copied
//                  into its strided positions. No multiply-by-zero, no accumulation into dx.
//
// backward-weight  dW[g] (Co/g x K) = sum_n dy[n,g] (Co/g x P) @ im2col(x[n,g])^T (P x K),
//                  one GEMM whose K dimension runs over the batch: both packers walk pixels
//                  across image boundaries, so the batch sum happens inside the GEMM's registers.
//
// Small images. A GEMM with a few dozen columns (7x7, 8x8 outputs) wastes much of its edge
// slivers and repacks the weight for little work, so forward and backward-data batch images: one
// GEMM covers a run of images whose pixels add up to kWideGemm columns or more (the packers walk
// across image boundaries). Its result is not a strided matrix inside y (the images are Co*P
// apart), so it lands in a per-thread buffer and is copied out, bias and ReLU applied on the way.
// A run of one image writes y in place.
//
// Sharing the two cores (ConvParallel):
//   images  threads take whole (run of images, group) tasks and call single-threaded GEMMs: no
//           synchronisation at all. Chosen when the tasks deal out evenly (the digits CNN: 8x8
//           images at batch 512 is 32 runs of 16 images; ResNet's 56x56 at batch 8 is 8 tasks).
//           Backward-weight splits the batch's pixels into one slice per thread; each slice's
//           GEMM writes its own partial dW, and the partials are summed in a fixed order
//           afterwards (no races; the same bits on every run with the same thread count). With
//           groups >= threads the threads take whole groups instead and nothing is reduced.
//   gemm    one task after another, each GEMM spreading its blocks over all threads: for a batch
//           that does not split evenly, and backward-weight on small images (the partial dWs
//           would cost more to reduce than the slice of GEMM they save).
//   automatic also sends depthwise shapes (groups == C) to the direct kernel of conv_depthwise.h,
//           and on AVX2 and AVX-512 the stride-1 layers with few channels to the
//           direct kernel of conv_direct.h; images and gemm force the GEMM path for them too (tests
//           compare the two).
#include "cpu/conv.h"
#include "cpu/conv_depthwise.h"
#include "cpu/conv_direct.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "common/check.h"
#include "cpu/conv_pack.h"
#include "cpu/conv_tasks.h"
#include "cpu/parallel_team.h"
#include "cpu/gemm.h"

namespace pn {

Conv2dShape make_conv2d_shape(int64_t N, int64_t C, int64_t H, int64_t W, int64_t Co, int64_t Cw, int64_t kh,
                              int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw,
                              int64_t groups) {
  PN_CHECK(N > 0 && C > 0 && H > 0 && W > 0, "conv2d: input shape (", N, ", ", C, ", ", H, ", ", W,
           ") has a non-positive dimension");
  PN_CHECK(Co > 0 && Cw > 0 && kh > 0 && kw > 0, "conv2d: weight shape (", Co, ", ", Cw, ", ", kh, ", ", kw,
           ") has a non-positive dimension");
  PN_CHECK(sh >= 1 && sw >= 1, "conv2d: stride must be >= 1, got (", sh, ", ", sw, ")");
  PN_CHECK(dh >= 1 && dw >= 1, "conv2d: dilation must be >= 1, got (", dh, ", ", dw, ")");
  PN_CHECK(ph >= 0 && pw >= 0, "conv2d: padding must be >= 0, got (", ph, ", ", pw, ")");
  // Bounding the hyper-parameters keeps every index product below 2^63.
  constexpr int64_t kMax = int64_t(1) << 30;
  PN_CHECK(sh < kMax && sw < kMax && dh < kMax && dw < kMax && ph < kMax && pw < kMax,
           "conv2d: stride, padding and dilation must be below 2^30");
  PN_CHECK(groups >= 1, "conv2d: groups must be >= 1, got ", groups);
  PN_CHECK(C % groups == 0, "conv2d: input channels (", C, ") are not divisible by groups=", groups);
  PN_CHECK(Co % groups == 0, "conv2d: output channels (", Co, ") are not divisible by groups=", groups);
  PN_CHECK(C == Cw * groups, "conv2d: input has ", C, " channels, weight expects ", Cw * groups, " (groups=", groups,
           ")");
  const int64_t Ho = (H + 2 * ph - dh * (kh - 1) - 1) / sh + 1;
  const int64_t Wo = (W + 2 * pw - dw * (kw - 1) - 1) / sw + 1;
  PN_CHECK(H + 2 * ph >= dh * (kh - 1) + 1 && W + 2 * pw >= dw * (kw - 1) + 1, "conv2d: dilated kernel (",
           dh * (kh - 1) + 1, " x ", dw * (kw - 1) + 1, ") is larger than the padded input (", H + 2 * ph, " x ",
           W + 2 * pw, ")");
  return Conv2dShape{N, C, H, W, Co, kh, kw, sh, sw, ph, pw, dh, dw, groups, Ho, Wo};
}

ConvParallel conv_parallel_from_name(const char* name) {
  const std::string s(name);
  if (s == "auto") return ConvParallel::automatic;
  if (s == "images") return ConvParallel::images;
  if (s == "gemm") return ConvParallel::gemm;
  PN_CHECK(false, "conv2d: parallel must be 'auto', 'images' or 'gemm', got '", s, "'");
  return ConvParallel::automatic;
}

namespace {

// GEMMs narrower than this many columns lose speed to edge slivers and per-call packing of the
// weights, so small images are batched: one GEMM covers several images' pixels.
constexpr int64_t kWideGemm = 1024;

// The batch is cut into `chunks` near-equal runs of images, one GEMM per (run, group).
struct Chunking {
  bool spread;  // threads take whole (run, group) tasks and run single-threaded GEMMs
  int64_t chunks;
  int64_t begin(int64_t N, int64_t c) const { return N * c / chunks; }
  int64_t widest(int64_t N) const { return (N + chunks - 1) / chunks; }
};

Chunking plan_chunks(ConvParallel par, int64_t N, int64_t groups, int64_t pixels, int threads) {
  const int64_t per_gemm = (kWideGemm + pixels - 1) / pixels;  // images to make a wide GEMM
  const int64_t fewest = (N + per_gemm - 1) / per_gemm;
  const Chunking whole_gemm{false, pixels >= kWideGemm ? N : 1};
  if (par == ConvParallel::gemm) return whole_gemm;
  if (par == ConvParallel::images) return Chunking{true, fewest};
  // Narrower GEMMs than wanted, if that is what it takes for the tasks to come out even.
  for (int64_t chunks = fewest; chunks <= N; ++chunks)
    if (tasks_balance(chunks * groups, threads)) return Chunking{true, chunks};
  return whole_gemm;
}

Im2colGrid forward_grid(const Conv2dShape& s) {
  return Im2colGrid(s.C * s.H * s.W, s.Cg(), s.H, s.W, s.Ho, s.Wo, s.sh, s.sw, forward_taps(s.kh, s.dh, s.ph),
                    forward_taps(s.kw, s.dw, s.pw));
}

// dst = src + b, or max(src + b, 0) with relu; src may be dst.
void store_row(const float* src, float* dst, int64_t len, float b, bool relu) {
  if (relu) {
    for (int64_t p = 0; p < len; ++p) dst[p] = std::max(src[p] + b, 0.f);
  } else {
    for (int64_t p = 0; p < len; ++p) dst[p] = src[p] + b;
  }
}

}  // namespace

// ---- forward -------------------------------------------------------------------------------

void conv2d_forward(const Conv2dShape& s, const float* x, const float* w, const float* bias, bool relu, float* y,
                    ConvParallel par) {
  if (par == ConvParallel::automatic && conv2d_is_depthwise(s)) return conv2d_depthwise_forward(s, x, w, bias, relu, y);
  if (par == ConvParallel::automatic && conv2d_direct_forward_applies(s))
    return conv2d_direct_forward(s, x, w, bias, relu, y);
  const Im2colGrid grid = forward_grid(s);
  const int64_t P = s.Ho * s.Wo, HW = s.H * s.W, K = grid.rows(), Cog = s.Cog();
  const int threads = omp_get_max_threads();
  const Chunking plan = plan_chunks(par, s.N, s.groups, P, threads);
  const int64_t tasks = plan.chunks * s.groups, widest = plan.widest(s.N);
  // A run of several images is computed into a buffer (its columns are not one strided matrix in
  // y) and copied out with the bias and ReLU; a single image is written in place.
  const int64_t buffer = widest > 1 ? Cog * widest * P : 0;

  auto gemm = [&](int64_t n0, int64_t nb, int64_t g, float* out, int64_t ldc) {
    const DenseA a(w + g * Cog * K, K, 1);
    if (nb == 1 && grid.is_identity())
      gemm_packed(Cog, P, K, 1.f, a, DenseB(x + (n0 * s.C + g * s.Cg()) * HW, P, 1), 0.f, out, ldc);
    else
      gemm_packed(Cog, nb * P, K, 1.f, a, Im2colB(grid, x + g * s.Cg() * HW, n0 * P), 0.f, out, ldc);
  };
  // Rows r = i*Cog + co in [r0, r1) of a run's result (image n0 + i, channel co) into y.
  auto finish = [&](const float* out, int64_t n0, int64_t nb, int64_t g, int64_t r0, int64_t r1) {
    if (nb == 1 && !bias && !relu) return;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t i = r / Cog, co = r % Cog;
      const float* src = nb == 1 ? out + co * P : out + co * nb * P + i * P;
      store_row(src, y + ((n0 + i) * s.Co + g * Cog + co) * P, P, bias ? bias[g * Cog + co] : 0.f, relu);
    }
  };
  auto run_of = [&](int64_t task, int64_t& n0, int64_t& nb, int64_t& g) {
    const int64_t c = task / s.groups;
    g = task % s.groups;
    n0 = plan.begin(s.N, c);
    nb = plan.begin(s.N, c + 1) - n0;
  };

  if (plan.spread) {
    std::vector<float> buffers(buffer * threads);
    parallel_tasks(tasks, [&](int64_t task, int thread) {
      int64_t n0, nb, g;
      run_of(task, n0, nb, g);
      float* out = nb == 1 ? y + (n0 * s.Co + g * Cog) * P : buffers.data() + thread * buffer;
      gemm(n0, nb, g, out, nb * P);
      finish(out, n0, nb, g, 0, nb * Cog);
    }, conv_flops(s));
    return;
  }
  std::vector<float> buf(buffer);
  for (int64_t task = 0; task < tasks; ++task) {
    int64_t n0, nb, g;
    run_of(task, n0, nb, g);
    float* out = nb == 1 ? y + (n0 * s.Co + g * Cog) * P : buf.data();
    gemm(n0, nb, g, out, nb * P);
    parallel_tasks(nb * Cog, [&](int64_t r, int) { finish(out, n0, nb, g, r, r + 1); });
  }
}

// ---- backward-data -------------------------------------------------------------------------

namespace {

// One stride phase of dx: the pixels ih = rh + sh*a, iw = rw + sw*b, and the kernel taps that
// reach them, as an unstrided convolution over dy (see the header comment).
struct DataPhase {
  int64_t rh, rw, Ha, Wb;
  Im2colGrid grid;            // over dy; rows (co, tap h, tap w)
  std::vector<int64_t> tap_src;  // tap t's offset inside a kh*kw weight block (PhaseWeightA)

  int64_t K() const { return grid.rows(); }
  int64_t pixels() const { return Ha * Wb; }
};

std::vector<DataPhase> data_phases(const Conv2dShape& s) {
  std::vector<DataPhase> phases;
  for (int64_t rh = 0; rh < std::min(s.sh, s.H); ++rh)
    for (int64_t rw = 0; rw < std::min(s.sw, s.W); ++rw) {
      std::vector<int64_t> th, tw, oh, ow;
      phase_taps(rh, s.sh, s.ph, s.dh, s.kh, th, oh);
      phase_taps(rw, s.sw, s.pw, s.dw, s.kw, tw, ow);
      const int64_t Ha = (s.H - rh + s.sh - 1) / s.sh, Wb = (s.W - rw + s.sw - 1) / s.sw;
      Im2colGrid grid(s.Co * s.Ho * s.Wo, s.Cog(), s.Ho, s.Wo, Ha, Wb, 1, 1, oh, ow);
      std::vector<int64_t> tap_src;
      for (int64_t i : th)
        for (int64_t j : tw) tap_src.push_back(i * s.kw + j);
      phases.push_back(DataPhase{rh, rw, Ha, Wb, std::move(grid), std::move(tap_src)});
    }
  return phases;
}

}  // namespace

void conv2d_backward_data(const Conv2dShape& s, const float* dy, const float* w, float* dx, ConvParallel par) {
  if (par == ConvParallel::automatic && conv2d_is_depthwise(s)) return conv2d_depthwise_backward_data(s, dy, w, dx);
  if (par == ConvParallel::automatic && conv2d_direct_backward_data_applies(s))
    return conv2d_direct_backward_data(s, dy, w, dx);
  const std::vector<DataPhase> phases = data_phases(s);
  const int64_t Cg = s.Cg(), Cog = s.Cog(), P = s.Ho * s.Wo, HW = s.H * s.W;
  const bool unit_stride = s.sh == 1 && s.sw == 1;
  int64_t phase_pixels = 0;
  for (const DataPhase& ph : phases) phase_pixels = std::max(phase_pixels, ph.pixels());
  const int threads = omp_get_max_threads();
  const Chunking plan = plan_chunks(par, s.N, s.groups, phase_pixels, threads);
  const int64_t tasks = plan.chunks * s.groups, widest = plan.widest(s.N);
  // Stride 1 writes one image's dx in place; every other case goes through a buffer of one phase
  // of a run of images, then to its strided places in dx.
  const int64_t buffer = unit_stride && widest == 1 ? 0 : Cg * widest * phase_pixels;

  // dx_phase (C/g x nb*pixels) = W_phase^T @ im2col(dy) for images [n0, n0+nb) of group g. A phase
  // that no tap reaches is all zeros.
  auto gemm = [&](const DataPhase& ph, int64_t n0, int64_t nb, int64_t g, float* out, int64_t ldc) {
    const int64_t K = ph.K(), cols = nb * ph.pixels();
    if (K == 0) {
      for (int64_t c = 0; c < Cg; ++c) std::fill(out + c * ldc, out + c * ldc + cols, 0.f);
      return;
    }
    const PhaseWeightA a(w + g * Cog * Cg * s.kh * s.kw, Cg, s.kh * s.kw, ph.tap_src);
    if (nb == 1 && ph.grid.is_identity())
      gemm_packed(Cg, cols, K, 1.f, a, DenseB(dy + (n0 * s.Co + g * Cog) * P, cols, 1), 0.f, out, ldc);
    else
      gemm_packed(Cg, cols, K, 1.f, a, Im2colB(ph.grid, dy + g * Cog * P, n0 * ph.pixels()), 0.f, out, ldc);
  };
  // Rows r = i*Cg + c in [r0, r1) of a buffered phase (image n0 + i, channel c) into dx.
  auto scatter = [&](const DataPhase& ph, const float* buf, int64_t n0, int64_t nb, int64_t g, int64_t r0,
                     int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t i = r / Cg, c = r % Cg;
      const float* from = buf + c * nb * ph.pixels() + i * ph.pixels();
      float* to = dx + ((n0 + i) * s.C + g * Cg + c) * HW + ph.rh * s.W + ph.rw;
      for (int64_t a = 0; a < ph.Ha; ++a)
        for (int64_t b = 0; b < ph.Wb; ++b) to[a * s.sh * s.W + b * s.sw] = from[a * ph.Wb + b];
    }
  };
  auto run_of = [&](int64_t task, int64_t& n0, int64_t& nb, int64_t& g) {
    const int64_t c = task / s.groups;
    g = task % s.groups;
    n0 = plan.begin(s.N, c);
    nb = plan.begin(s.N, c + 1) - n0;
  };

  if (plan.spread) {
    std::vector<float> buffers(buffer * threads);
    parallel_tasks(tasks, [&](int64_t task, int thread) {
      int64_t n0, nb, g;
      run_of(task, n0, nb, g);
      float* buf = buffers.data() + thread * buffer;
      for (const DataPhase& ph : phases) {
        if (unit_stride && nb == 1) {
          gemm(ph, n0, 1, g, dx + (n0 * s.C + g * Cg) * HW, HW);
        } else {
          gemm(ph, n0, nb, g, buf, nb * ph.pixels());
          scatter(ph, buf, n0, nb, g, 0, nb * Cg);
        }
      }
    }, conv_flops(s));
    return;
  }
  std::vector<float> buf(buffer);
  for (int64_t task = 0; task < tasks; ++task) {
    int64_t n0, nb, g;
    run_of(task, n0, nb, g);
    for (const DataPhase& ph : phases) {
      if (unit_stride && nb == 1) {
        gemm(ph, n0, 1, g, dx + (n0 * s.C + g * Cg) * HW, HW);
        continue;
      }
      gemm(ph, n0, nb, g, buf.data(), nb * ph.pixels());
      parallel_tasks(nb * Cg, [&](int64_t r, int) { scatter(ph, buf.data(), n0, nb, g, r, r + 1); });
    }
  }
}

// ---- backward-weight -----------------------------------------------------------------------

void conv2d_backward_weight(const Conv2dShape& s, const float* dy, const float* x, float* dw, ConvParallel par) {
  if (par == ConvParallel::automatic && conv2d_is_depthwise(s)) return conv2d_depthwise_backward_weight(s, dy, x, dw);
  if (par == ConvParallel::automatic && conv2d_direct_backward_weight_applies(s))
    return conv2d_direct_backward_weight(s, dy, x, dw);
  const Im2colGrid grid = forward_grid(s);
  const int64_t P = s.Ho * s.Wo, pixels = s.N * P, K = grid.rows(), Cog = s.Cog();
  const int threads = omp_get_max_threads();

  // dW[g] (+)= dy[:, g] @ im2col(x[:, g])^T over the batch pixels [q0, q1).
  auto gemm_slice = [&](int64_t g, int64_t q0, int64_t q1, float* out) {
    const BatchedPlanesA a(dy + g * Cog * P, s.Co * P, P, q0);
    const Im2colTransB b(grid, x + g * s.Cg() * s.H * s.W, q0);
    gemm_packed(Cog, K, q1 - q0, 1.f, a, b, 0.f, out, K);
  };

  bool images;
  if (par == ConvParallel::automatic)
    // Splitting the batch costs one partial dW per extra thread, read back once: worth it when
    // each slice still has thousands of pixels to amortise that over (every ResNet-50 layer but
    // the 7x7 and 14x14 ones at batch 8), or when whole groups go to threads and nothing is reduced.
    images = tasks_balance(s.groups, threads) || pixels >= 2048 * int64_t(threads);
  else
    images = par == ConvParallel::images;

  if (!images) {
    for (int64_t g = 0; g < s.groups; ++g) gemm_slice(g, 0, pixels, dw + g * Cog * K);
    return;
  }

  // Slices per group: enough that every thread has one, never more than there are pixels.
  const int64_t slices = s.groups >= threads ? 1 : std::min<int64_t>((threads + s.groups - 1) / s.groups, pixels);
  const int64_t block = Cog * K;  // one group's dW
  std::vector<float> partial((slices - 1) * s.groups * block);
  parallel_tasks(s.groups * slices, [&](int64_t task, int) {
    const int64_t g = task / slices, slice = task % slices;
    float* out = slice == 0 ? dw + g * block : partial.data() + (g * (slices - 1) + slice - 1) * block;
    gemm_slice(g, pixels * slice / slices, pixels * (slice + 1) / slices, out);
  }, conv_flops(s));
  if (slices == 1) return;
  add_partial_dw(dw, partial.data(), s.groups, block, slices);
}

}  // namespace pn
