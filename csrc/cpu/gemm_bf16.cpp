// bf16 GEMM driver: the same BLIS loop nest as the float32 GEMM (gemm.cpp), over bf16 operands
// packed in each path's layout, with float32 sums and a fused epilogue.
//
//   jc: C's columns in panels of nc                  pack B[pc, jc] (kc x nc)  -> L2/L3
//     pc: K in blocks of kc                          (the epilogue stage: first / middle / last)
//       ic: C's rows in blocks of mc                 pack A[ic, pc] (mc x kc)  -> L2
//         block(): the path's microkernel over every tile of the C block (gemm_bf16_<isa>.cpp)
//
// K blocks: the first adds beta * C (or nothing when beta == 0: C is write-only then), later ones
// add onto the float32 running sum, and the last applies bias and ReLU and writes C, rounding to
// bf16 if C is bf16. The running sum lives in C when C is float32; a bf16 C summed over several K
// blocks gets a float32 workspace for the call, so no partial sum is ever rounded to bf16.
//
// Threads (OpenMP): each thread owns a rectangle of C and packs its own operands, so the threads
// never wait for each other until the region ends; the grid (threads along M x along N) is the one
// of least modelled time, counting the busiest rectangle's multiply-adds and its packing. A shared
// B panel with dynamically dealt A blocks (the float32 GEMM's choice for large M) was tried and
// measured worse on this shared machine: its two barriers per panel each wait out a descheduled
// thread (bench/NOTES.md, bf16 GEMM item 3).
// Small products and calls from inside a parallel region (convolution) run on the calling thread.
//
// Paths (chosen per call, never at build time): AMX tiles, else AVX512-BF16, else portable C++;
// amx_emulated only by name (gemm_bf16.h).
#include "cpu/gemm_bf16.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <exception>
#include <memory>
#include <new>
#include <vector>

#include "common/check.h"
#include "common/cpu_features.h"
#include "cpu/gemm_bf16_epilogue.h"
#include "cpu/gemm_bf16_kernel.h"

namespace pn {

// ---- which path ---------------------------------------------------------------------------------

const char* bf16_gemm_isa_name(Bf16GemmIsa isa) {
  switch (isa) {
    case Bf16GemmIsa::amx: return "amx";
    case Bf16GemmIsa::amx_emulated: return "amx_emulated";
    case Bf16GemmIsa::avx512bf16: return "avx512bf16";
    default: return "generic";
  }
}

bool bf16_gemm_isa_available(Bf16GemmIsa isa) {
  switch (isa) {
    case Bf16GemmIsa::amx: return cpu_has_amx_bf16();
    case Bf16GemmIsa::amx_emulated: return detected_isa() == Isa::avx512;
    case Bf16GemmIsa::avx512bf16: return cpu_has_avx512bf16();
    default: return true;
  }
}

Bf16GemmIsa bf16_gemm_detected_isa() {
  if (cpu_has_amx_bf16()) return Bf16GemmIsa::amx;
  if (cpu_has_avx512bf16()) return Bf16GemmIsa::avx512bf16;
  return Bf16GemmIsa::generic;
}

namespace {

std::string why_unavailable(Bf16GemmIsa isa) {
  switch (isa) {
    case Bf16GemmIsa::amx: return amx_unavailable_reason();
    case Bf16GemmIsa::amx_emulated: return "the AMX emulation needs AVX-512 (F/BW/DQ/VL)";
    default: return "the CPU has no AVX512-BF16";
  }
}

}  // namespace

Bf16GemmIsa bf16_gemm_isa_from_name(const std::string& name) {
  Bf16GemmIsa isa;
  if (name == "amx")
    isa = Bf16GemmIsa::amx;
  else if (name == "amx_emulated")
    isa = Bf16GemmIsa::amx_emulated;
  else if (name == "avx512bf16")
    isa = Bf16GemmIsa::avx512bf16;
  else if (name == "generic")
    isa = Bf16GemmIsa::generic;
  else
    throw std::invalid_argument(concat("bf16 GEMM: unknown path '", name,
                                       "' (expected 'amx', 'avx512bf16', 'generic' or 'amx_emulated')"));
  PN_CHECK(bf16_gemm_isa_available(isa), "bf16 GEMM: path '", name, "' is not available: ", why_unavailable(isa),
           " (best here: '", bf16_gemm_isa_name(bf16_gemm_detected_isa()), "')");
  return isa;
}

namespace {

// PYNEURAL_BF16_ISA, or the detected path. A bad value throws at every call until it is fixed (a
// static whose initialiser throws is retried on the next call).
std::atomic<int>& active_slot() {
  static std::atomic<int> slot{[] {
    const char* forced = std::getenv("PYNEURAL_BF16_ISA");
    if (forced == nullptr || forced[0] == '\0') return static_cast<int>(bf16_gemm_detected_isa());
    try {
      return static_cast<int>(bf16_gemm_isa_from_name(forced));
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(concat("PYNEURAL_BF16_ISA=", forced, ": ", e.what()));
    }
  }()};
  return slot;
}

}  // namespace

Bf16GemmIsa bf16_gemm_active_isa() { return static_cast<Bf16GemmIsa>(active_slot().load(std::memory_order_relaxed)); }

void set_bf16_gemm_isa(Bf16GemmIsa isa) {
  PN_CHECK(bf16_gemm_isa_available(isa), "bf16 GEMM: path '", bf16_gemm_isa_name(isa),
           "' is not available: ", why_unavailable(isa));
  active_slot().store(static_cast<int>(isa), std::memory_order_relaxed);
}

// ---- blocked driver -----------------------------------------------------------------------------

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }
int64_t split(int64_t units, int64_t parts, int64_t p) { return units * p / parts; }

// Products below this many flops run on the calling thread (about where the float32 GEMM's
// crossover falls, in time: bf16 runs about twice as many flops per cycle).
constexpr double kParallelFlops = 4.0e6;

// Packing cost in the thread-grid model, in multiply-add time per packed element.
constexpr double kPackCostFlops = 128.0;


const Bf16GemmKernel& kernel_for(Bf16GemmIsa isa) {
  switch (isa) {
    case Bf16GemmIsa::amx: return bf16_kernel_amx();
    case Bf16GemmIsa::amx_emulated: return bf16_kernel_amx_emulated();
    case Bf16GemmIsa::avx512bf16: return bf16_kernel_avx512bf16();
    default: return bf16_kernel_generic();
  }
}

// A grow-only, 64-byte aligned buffer (one per thread for the packed operands).
template <typename T>
class GrowBuffer {
 public:
  GrowBuffer() = default;
  GrowBuffer(const GrowBuffer&) = delete;
  GrowBuffer& operator=(const GrowBuffer&) = delete;
  T* get(int64_t count) {
    const size_t bytes = static_cast<size_t>(count) * sizeof(T);
    if (bytes > capacity_) {
      const size_t size = (bytes + 63) / 64 * 64;
      void* p = std::aligned_alloc(64, size);
      if (p == nullptr) throw std::bad_alloc();
      data_.reset(static_cast<T*>(p));
      capacity_ = size;
    }
    return data_.get();
  }

 private:
  struct Free {
    void operator()(T* p) const { std::free(p); }
  };
  std::unique_ptr<T, Free> data_;
  size_t capacity_ = 0;
};

thread_local GrowBuffer<uint16_t> tl_a_block;
thread_local GrowBuffer<uint16_t> tl_b_panel;

// A dense operand's source: the path's own packer on the matrix in place.
void pack_dense_a(const void* self, const Bf16GemmKernel& kernel, int64_t i0, int64_t mc, int64_t k0, int64_t kc,
                  uint16_t* dst) {
  kernel.pack_a(*static_cast<const Bf16Operand*>(self), i0, mc, k0, kc, dst);
}

void pack_dense_b(const void* self, const Bf16GemmKernel& kernel, int64_t j0, int64_t nc, int64_t k0, int64_t kc,
                  uint16_t* dst) {
  kernel.pack_b(*static_cast<const Bf16Operand*>(self), k0, kc, j0, nc, dst);
}

struct Problem {
  const Bf16GemmArgs& g;
  const Bf16GemmKernel& kernel;
  Bf16OperandSource a, b;
  int64_t kc, k_blocks;  // K in k_blocks blocks of kc (a multiple of k_step; the last may be short)
  float* workspace;      // float32 running sum (M x N) for a bf16 C over several K blocks, else null
};

// The threads' grid over C: grid_m x grid_n rectangles of whole slivers.
struct Grid {
  int m = 1, n = 1;
};

Grid choose_grid(const Problem& p, int threads) {
  const Bf16GemmArgs& g = p.g;
  const int64_t m_slivers = ceil_div(g.M, p.kernel.mr), n_slivers = ceil_div(g.N, p.kernel.nr);
  Grid best;
  double best_time = -1;
  for (int t = threads; t >= 1 && best_time < 0; --t)
    for (int gm = 1; gm <= t; ++gm) {
      const int gn = t / gm;
      if (gm * gn != t || gm > m_slivers || gn > n_slivers) continue;
      const double rows = static_cast<double>(ceil_div(m_slivers, gm) * p.kernel.mr);
      const double cols = static_cast<double>(ceil_div(n_slivers, gn) * p.kernel.nr);
      const double panels = std::ceil(cols / static_cast<double>(p.kernel.nc));
      const double k = static_cast<double>(g.K);
      const double time = 2.0 * rows * cols * k + kPackCostFlops * (rows * k * panels + k * cols);
      if (best_time < 0 || time < best_time) {
        best_time = time;
        best = Grid{gm, gn};
      }
    }
  return best;
}

// How a rectangle's rows are cut: near-equal blocks of whole slivers, mc rows at most.
struct RowBlocks {
  int64_t i0, slivers, blocks;
  int64_t begin(const Problem& p, int64_t b) const { return i0 + split(slivers, blocks, b) * p.kernel.mr; }
};

RowBlocks row_blocks(const Problem& p, int64_t i0, int64_t rows, int64_t mc) {
  const int64_t slivers = ceil_div(rows, p.kernel.mr);
  return RowBlocks{i0, slivers, std::min(slivers, ceil_div(rows, mc))};
}

int64_t panel_width(const Problem& p, int64_t cols) {  // equal panels rather than full ones and a thin rest
  return round_up(ceil_div(cols, ceil_div(cols, p.kernel.nc)), p.kernel.nr);
}

// Rows [ic, ic + mc) of C against the packed B panel of K block kb at columns [jc, jc + nc): pack the
// A block, then the path's block loop with this stage's epilogue.
void compute_block(const Problem& p, int64_t kb, int64_t jc, int64_t nc, int64_t ic, int64_t mc,
                   const uint16_t* b_panel, uint16_t* a_block) {
  const Bf16GemmArgs& g = p.g;
  const Bf16GemmKernel& kn = p.kernel;
  const int64_t pc = kb * p.kc, kcur = std::min(p.kc, g.K - pc);
  p.a.pack(p.a.self, kn, ic, mc, pc, kcur, a_block);
  Bf16Epilogue ep;
  ep.alpha = g.alpha;
  ep.beta = g.beta;
  ep.bias = g.bias ? g.bias + jc : nullptr;
  ep.row_bias = g.row_bias ? g.row_bias + ic : nullptr;
  ep.relu = g.relu;
  ep.first = kb == 0;
  ep.last = kb == p.k_blocks - 1;
  ep.c = static_cast<char*>(g.c) + (ic * g.ldc + jc) * (g.c_bf16 ? sizeof(uint16_t) : sizeof(float));
  ep.ldc = g.ldc;
  ep.c_bf16 = g.c_bf16;
  if (!g.c_bf16) {
    ep.acc = static_cast<float*>(ep.c);
    ep.ldacc = g.ldc;
  } else {
    ep.acc = p.workspace ? p.workspace + ic * g.N + jc : nullptr;
    ep.ldacc = g.N;
  }
  kn.block(round_up(kcur, kn.k_step), a_block, mc, b_panel, nc, ep);
}

// Rows [i0, i1) x columns [j0, j1) of C, on this thread alone.
void run_rect(const Problem& p, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  if (i1 <= i0 || j1 <= j0) return;
  const int64_t nc = panel_width(p, j1 - j0);
  const RowBlocks rows = row_blocks(p, i0, i1 - i0, p.kernel.mc);
  const int64_t kc_pad = round_up(p.kc, p.kernel.k_step);
  uint16_t* b_panel = tl_b_panel.get(nc * kc_pad);
  uint16_t* a_block = tl_a_block.get(ceil_div(rows.slivers, rows.blocks) * p.kernel.mr * kc_pad);
  for (int64_t jc = j0; jc < j1; jc += nc) {
    const int64_t ncur = std::min(nc, j1 - jc);
    for (int64_t kb = 0; kb < p.k_blocks; ++kb) {
      const int64_t pc = kb * p.kc;
      p.b.pack(p.b.self, p.kernel, jc, ncur, pc, std::min(p.kc, p.g.K - pc), b_panel);
      for (int64_t b = 0; b < rows.blocks; ++b) {
        const int64_t ic = rows.begin(p, b), mc = std::min(i1, rows.begin(p, b + 1)) - ic;
        if (mc > 0) compute_block(p, kb, jc, ncur, ic, mc, b_panel, a_block);
      }
    }
  }
}

// The first exception thrown on any thread of the team, kept to be rethrown after the parallel region
// (exceptions must not cross it). Once one is kept, guard() skips all further work.
class TeamFailure {
 public:
  template <typename Work>
  void guard(const Work& work) {
    if (failed_.load(std::memory_order_acquire)) return;
    try {
      work();
    } catch (...) {
#pragma omp critical(pn_gemm_bf16_failure)
      if (!first_) first_ = std::current_exception();
      failed_.store(true, std::memory_order_release);
    }
  }
  void rethrow() const {
    if (first_) std::rethrow_exception(first_);
  }

 private:
  std::atomic<bool> failed_{false};
  std::exception_ptr first_;
};

// alpha == 0 or K == 0: C = relu?(beta * C + bias + row_bias), A and B never read (the BLAS convention).
void epilogue_only(const Bf16GemmArgs& g) {
  const std::vector<float> zeros(static_cast<size_t>(g.N), 0.f);
  Bf16Epilogue ep{g.alpha, g.beta, g.bias, g.relu, true, true, g.c, g.ldc, g.c_bf16, nullptr, 0, g.row_bias};
  for (int64_t i = 0; i < g.M; ++i) epilogue_row_scalar(ep, i, 0, zeros.data(), static_cast<int>(g.N));
}

}  // namespace

void gemm_bf16(const Bf16GemmArgs& g, Bf16GemmIsa isa) { gemm_bf16_from_sources(g, nullptr, nullptr, isa); }

void gemm_bf16_from_sources(const Bf16GemmArgs& g, const Bf16OperandSource* a_source,
                            const Bf16OperandSource* b_source, Bf16GemmIsa isa) {
  PN_CHECK(bf16_gemm_isa_available(isa), "bf16 GEMM: path '", bf16_gemm_isa_name(isa),
           "' is not available: ", why_unavailable(isa));
  if (g.M <= 0 || g.N <= 0) return;
  if (g.K <= 0 || g.alpha == 0.f) return epilogue_only(g);

  const Bf16GemmKernel& kernel = kernel_for(isa);
  const int64_t k_blocks = ceil_div(g.K, kernel.kc);
  const int64_t kc = round_up(ceil_div(g.K, k_blocks), kernel.k_step);
  std::unique_ptr<float[]> workspace;
  if (g.c_bf16 && ceil_div(g.K, kc) > 1) workspace.reset(new float[static_cast<size_t>(g.M * g.N)]);
  const Bf16Operand a = g.trans_a ? Bf16Operand{g.a, 1, g.lda} : Bf16Operand{g.a, g.lda, 1};
  const Bf16Operand b = g.trans_b ? Bf16Operand{g.b, 1, g.ldb} : Bf16Operand{g.b, g.ldb, 1};
  const Problem p{g, kernel, a_source ? *a_source : Bf16OperandSource{&pack_dense_a, &a},
                  b_source ? *b_source : Bf16OperandSource{&pack_dense_b, &b}, kc, ceil_div(g.K, kc),
                  workspace.get()};

  const double flops = 2.0 * static_cast<double>(g.M) * static_cast<double>(g.N) * static_cast<double>(g.K);
  const bool serial = omp_get_level() > 0 || flops < kParallelFlops || omp_get_max_threads() == 1;
  const Grid grid = serial ? Grid{} : choose_grid(p, omp_get_max_threads());
  const int64_t m_slivers = ceil_div(g.M, kernel.mr), n_slivers = ceil_div(g.N, kernel.nr);
  const auto rect = [&](int t) {
    const int tm = t / grid.n, tn = t % grid.n;
    run_rect(p, std::min(g.M, split(m_slivers, grid.m, tm) * kernel.mr),
             std::min(g.M, split(m_slivers, grid.m, tm + 1) * kernel.mr),
             std::min(g.N, split(n_slivers, grid.n, tn) * kernel.nr),
             std::min(g.N, split(n_slivers, grid.n, tn + 1) * kernel.nr));
  };
  if (grid.m * grid.n == 1) return rect(0);
  // The threads never wait for each other, so one giving up strands nobody.
  TeamFailure team;
#pragma omp parallel num_threads(grid.m * grid.n)
  for (int t = omp_get_thread_num(); t < grid.m * grid.n; t += omp_get_num_threads()) team.guard([&] { rect(t); });
  team.rethrow();
}

// ---- measured peak ------------------------------------------------------------------------------

double bf16_dot_peak_gflops(Bf16GemmIsa isa, double seconds) {
  PN_CHECK(isa == Bf16GemmIsa::amx || isa == Bf16GemmIsa::avx512bf16,
           "bf16 peak: measured for 'amx' and 'avx512bf16' only, not '", bf16_gemm_isa_name(isa), "'");
  PN_CHECK(bf16_gemm_isa_available(isa), "bf16 peak: path '", bf16_gemm_isa_name(isa),
           "' is not available: ", why_unavailable(isa));
  double rate = 0;  // the threads' best windows, added up
#pragma omp parallel reduction(+ : rate)
  rate += isa == Bf16GemmIsa::amx ? bf16_dot_peak_loop_amx(seconds) : bf16_dot_peak_loop_avx512bf16(seconds);
  return rate / 1e9;
}

}  // namespace pn
