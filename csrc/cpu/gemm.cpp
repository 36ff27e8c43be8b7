// SGEMM on the CPU, BLIS style (the loop nest of Goto & van de Geijn, "Anatomy of High-Performance
// Matrix Multiplication"). C = alpha * A @ B + beta * C is computed as
//
//   jc: N in panels of nc columns
//     pc: K in blocks of kc            pack B[pc, jc] (kc x nc) into nr-wide slivers   -> L3, shared
//       ic: M in blocks of mc          pack A[ic, pc] (mc x kc) into mr-tall slivers   -> L2, per thread
//         jr: B slivers                one kc x nr sliver stays in L1 ...
//           ir: A slivers              ... while the A slivers stream past it from L2
//             microkernel: mr x nr tile of C in registers (gemm_kernel_<isa>.cpp)
//
// Threads (OpenMP), two ways, chosen per call in make_plan():
//  - column slabs (M <= 1024, or C too short to split by rows): each thread runs the loops above on
//    its own run of B's slivers and C's columns, with its own B panel and its own copy of the A
//    blocks. Nothing is shared, so no barrier and no packed line ever crosses cores; that beat a
//    shared panel at every size measured here, by 1.5x at 128..256 where handing a freshly packed
//    panel from one core to the other costs as much as the multiply.
//    Each thread takes its run in two chunks and, when done, steals chunks from the back of a
//    slower thread's run (StealingRanges, parallel_team.h).
//  - shared B panel (large M): the team packs each panel together, then takes the A blocks from a
//    dynamic worksharing loop (equal blocks, a whole number per thread), so a thread slowed down
//    by another process on its core simply takes fewer.
// Small products run on the calling thread: waking the team costs more than it saves. On a
// loaded machine the team shrinks while helper threads arrive late (team_threads(), RegionClock:
// parallel_team.h); the partition stays the one planned, so the result does not change. Called from
// inside an OpenMP parallel region (convolution does this), everything runs on the calling thread
// with its own buffers.
//
// sgemm() sends M == 1 and N == 1 to matrix-vector loops (gemm_gemv.h) that skip the packing.
// Pack buffers are thread-local, 64-byte aligned and only ever grow, so a call allocates nothing in
// the steady state.
#include "cpu/gemm.h"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "common/cpu_features.h"
#include "cpu/gemm_microkernel.h"
#include "cpu/gemm_pack.h"
#include "cpu/parallel_team.h"

namespace pn {

// ---- packers ---------------------------------------------------------------------------------

namespace {

// Both dense packers fill one sliver the same way: `width` lanes (rows of A, columns of B), of which
// the first `count` are live, lane i at step k read from src[i * lane_stride + k * k_stride] and
// written to dst[k * width + i]; lanes past `count` are zero.
void pack_sliver(const float* src, int64_t lane_stride, int64_t k_stride, int count, int64_t kc, int width,
                 float* dst) {
  const PackCopies& v = pack_copies();
  if (lane_stride == 1 && v.copy && width <= v.max_copy_width) return v.copy(src, k_stride, count, kc, dst, width);
  if (k_stride == 1 && pack_transpose_groups(v, src, lane_stride, count, kc, dst, width)) return;
  // Portable paths; the loop order reads the source sequentially where it can.
  if (lane_stride == 1) {
    for (int64_t k = 0; k < kc; ++k) std::memcpy(dst + k * width, src + k * k_stride, sizeof(float) * count);
  } else if (k_stride == 1) {
    for (int i = 0; i < count; ++i)
      for (int64_t k = 0; k < kc; ++k) dst[k * width + i] = src[i * lane_stride + k];
  } else {
    for (int64_t k = 0; k < kc; ++k)
      for (int i = 0; i < count; ++i) dst[k * width + i] = src[i * lane_stride + k * k_stride];
  }
  if (count < width)
    for (int64_t k = 0; k < kc; ++k) std::fill(dst + k * width + count, dst + (k + 1) * width, 0.f);
}

}  // namespace

const PackCopies& pack_copies() {
  static constexpr PackCopies avx512{&pack_copy_avx512, &pack_transpose_avx512, 64, 16};
  static constexpr PackCopies avx2{&pack_copy_avx2, &pack_transpose_avx2, 64, 8};
  static constexpr PackCopies portable{nullptr, nullptr, 0, 0};
  switch (active_isa()) {
    case Isa::avx512: return avx512;
    case Isa::avx2: return avx2;
    default: return portable;
  }
}

namespace {

// Where a sliver's lanes are consecutive floats (B as stored, row-major; A given transposed), its
// rows are the operand's rows, ld apart: a sliver packed whole walks kc of them, each on its own
// page once ld is a few KiB, which the prefetchers do not follow. So such blocks are packed
// kPackRows rows at a time across all their slivers: each pass reads that many runs of consecutive
// floats. Measured single-threaded (bench/NOTES.md): 64 x 3136 x 576 39.5 -> 71.0 GFLOP/s (numpy's
// OpenBLAS 74.0), 256 x 392 x 2304 69.4 -> 79.5; squares 512-4096 within +-3%.
constexpr int64_t kPackRows = 8;

// The slivers of one block, `lanes` wide in all (rows of A, columns of B), `width` per sliver: lane
// i at step k read from base[i * lane_stride + k * k_stride], sliver s written at dst + s*width*kc.
void pack_block(const float* base, int64_t lane_stride, int64_t k_stride, int64_t lanes, int64_t kc, int width,
                float* dst) {
  const int64_t pass = lane_stride == 1 ? kPackRows : kc;
  for (int64_t kk = 0; kk < kc; kk += pass) {
    const int64_t steps = std::min(pass, kc - kk);
    for (int64_t s = 0; s * width < lanes; ++s) {
      const int count = static_cast<int>(std::min<int64_t>(width, lanes - s * width));
      pack_sliver(base + s * width * lane_stride + kk * k_stride, lane_stride, k_stride, count, steps, width,
                  dst + s * width * kc + kk * width);
    }
  }
}

}  // namespace

void DenseA::pack(int64_t i0, int64_t mc, int64_t k0, int64_t kc, int mr, float* dst) const {
  pack_block(data + i0 * row_stride + k0 * col_stride, row_stride, col_stride, mc, kc, mr, dst);
}

void DenseB::pack(int64_t k0, int64_t kc, int64_t j0, int64_t nc, int nr, float* dst) const {
  pack_block(data + k0 * row_stride + j0 * col_stride, col_stride, row_stride, nc, kc, nr, dst);
}

// ---- blocked driver --------------------------------------------------------------------------

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Products below this many flops run on the calling thread (measured crossover: 96^3 = 1.8 MFLOP
// is faster on one core, 112^3 = 2.8 MFLOP and 32 x 512 x 64 = 2.1 MFLOP on two).
constexpr double kParallelFlops = 2.0e6;

// Up to this many rows of C, threads split C by columns (see make_plan).
constexpr int64_t kSlabRows = 1024;

// A grow-only, 64-byte aligned float buffer. Big ones (the 4 MiB B panel) are 2 MiB aligned and
// offered to transparent huge pages, so the panel needs 2 TLB entries instead of 1024.
class PackBuffer {
 public:
  PackBuffer() = default;
  PackBuffer(const PackBuffer&) = delete;
  PackBuffer& operator=(const PackBuffer&) = delete;
  ~PackBuffer() { std::free(data_); }

  float* get(int64_t floats) {
    const size_t bytes = static_cast<size_t>(floats) * sizeof(float);
    if (bytes > capacity_) {
      std::free(data_);
      data_ = nullptr;
      capacity_ = 0;
      const size_t align = bytes >= kHuge ? kHuge : 64;
      const size_t size = (bytes + align - 1) / align * align;
      void* p = std::aligned_alloc(align, size);
      if (p == nullptr) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
      if (align == kHuge) madvise(p, size, MADV_HUGEPAGE);
#endif
      data_ = static_cast<float*>(p);
      capacity_ = size;
    }
    return data_;
  }

 private:
  static constexpr size_t kHuge = size_t{2} << 20;
  float* data_ = nullptr;
  size_t capacity_ = 0;
};

thread_local PackBuffer tl_a_block;
thread_local PackBuffer tl_b_panel;

const GemmConfig& active_config() {
  switch (active_isa()) {
    case Isa::avx512: return gemm_config_avx512();
    case Isa::avx2: return gemm_config_avx2();
    default: return gemm_config_generic();
  }
}

// Splits `units` into `parts` contiguous ranges that differ by at most one; returns range p's start.
int64_t split(int64_t units, int64_t parts, int64_t p) { return units * p / parts; }

struct Problem {
  int64_t M, N, K;
  float alpha;
  const PackA& a;
  const PackB& b;
  float beta;
  float* c;  // C[0, 0] of this (sub)problem
  int64_t ldc;
  int64_t j0;  // column of B where this (sub)problem's columns start
  // Operands the microkernel reads in place instead of packing them (null: pack); see sgemm().
  // A: element (i, k) at a_direct[k * lda + i]. B: element (k, j) at b_direct[k * ldb + j].
  const float* a_direct = nullptr;
  int64_t lda = 0;
  const float* b_direct = nullptr;
  int64_t ldb = 0;
};

// How the work is cut. Serially, and with a shared B panel, each (jc, pc) step packs the B panel
// and walks m_blocks near-equal runs of A slivers (mc rows at most). With column slabs, every
// thread runs the serial loops on its own slab of B's and C's columns.
struct Plan {
  const GemmConfig& cfg;
  int64_t kc, nc;  // effective blocks: K, N (a multiple of nr)
  int64_t mc;      // the tallest A block (blocks differ by at most one sliver)
  int64_t m_blocks;
  int threads;
  bool column_slabs;
};

// Fraction of thread-time doing useful work when `extent` rows (or columns) are dealt to `parts`
// threads in slivers of `width`: the busiest thread gets ceil(slivers / parts) full slivers.
double balance(int64_t extent, int64_t width, int parts) {
  const int64_t busiest = ceil_div(ceil_div(extent, width), parts) * width;
  return static_cast<double>(extent) / static_cast<double>(busiest * parts);
}

Plan make_plan(const GemmConfig& cfg, const Problem& p, bool nested) {
  const int mr = cfg.mr;
  // Equal blocks rather than full blocks and a thin remainder.
  const int64_t kc = ceil_div(p.K, ceil_div(p.K, cfg.kc));
  const int64_t nc = round_up(ceil_div(p.N, ceil_div(p.N, cfg.nc)), cfg.nr);
  const int64_t m_slivers = ceil_div(p.M, mr);
  const auto blocks_of = [&](int64_t count) {  // M cut into `count` blocks of whole slivers
    count = std::min(count, m_slivers);
    return Plan{cfg, kc, nc, ceil_div(m_slivers, count) * mr, count, 1, false};
  };
  Plan serial = blocks_of(ceil_div(p.M, cfg.mc));

  const double flops = 2.0 * static_cast<double>(p.M) * static_cast<double>(p.N) * static_cast<double>(p.K);
  if (nested || flops < kParallelFlops) return serial;
  const int64_t n_slivers = ceil_div(p.N, cfg.nr);
  const int threads = static_cast<int>(std::min<int64_t>(omp_get_max_threads(), m_slivers * n_slivers));
  if (threads <= 1) return serial;

  // Column slabs up to M = kSlabRows (measured as fast as or faster than a shared panel at every
  // square size up to 3072 on this 2-core machine, and 1.5x at 128..256), or wherever they balance
  // clearly better; a shared panel with dynamically dealt A blocks for large M, where a thread
  // slowed by another process on its core can hand blocks to the other.
  const double row_balance = balance(p.M, mr, threads), col_balance = balance(p.N, cfg.nr, threads);
  if (col_balance >= 1.05 * row_balance || (p.M <= kSlabRows && col_balance >= 0.75 * row_balance)) {
    serial.threads = threads;
    serial.column_slabs = true;
    return serial;
  }
  Plan plan = blocks_of(threads * ceil_div(p.M, threads * cfg.mc));
  plan.threads = threads;
  return plan;
}

// Packs B slivers [s0, s1) of the panel at (pc, jc) into their places in `b_panel`.
void pack_b_slivers(const Problem& p, const Plan& plan, int64_t jc, int64_t nc, int64_t pc, int64_t kc, int64_t s0,
                    int64_t s1, float* b_panel) {
  const int nr = plan.cfg.nr;
  if (s1 > s0 && !p.b_direct)
    p.b.pack(pc, kc, p.j0 + jc + s0 * nr, std::min(nc, s1 * nr) - s0 * nr, nr, b_panel + s0 * nr * kc);
}

// K blocks up to this deep walk C row-block by row-block instead (see compute_block).
constexpr int64_t kShallowK = 64;

// One A block against the packed B panel of the (jc, pc) step: pack the block, then run the
// microkernel over it. Normally jr is outer: each B sliver stays in L1 while the block's A slivers
// pass by. A shallow K block (kc <= kShallowK: the dX = dY @ W of a 10-class layer has K = 10) is
// bound by writing C, not by the FMAs; there ir is outer, so C is written 14 whole rows at a time
// rather than in 32-column strips down a matrix whose rows are often a power of two apart (the
// strip's lines then crowd a few L1 sets). Operands read in place (Problem::a_direct, b_direct)
// go through the strided microkernel.
void compute_block(const Problem& p, const Plan& plan, int64_t block, int64_t jc, int64_t nc, int64_t pc, int64_t kc,
                   const float* b_panel, float* a_block) {
  const GemmConfig& cfg = plan.cfg;
  const int mr = cfg.mr, nr = cfg.nr;
  const int64_t m_slivers = ceil_div(p.M, mr);
  const int64_t ic = split(m_slivers, plan.m_blocks, block) * mr;
  const int64_t mc = std::min(p.M, split(m_slivers, plan.m_blocks, block + 1) * mr) - ic;
  if (mc <= 0) return;
  // Later K blocks accumulate onto what the first one wrote.
  const float beta = pc == 0 ? p.beta : 1.f;

  if (!p.a_direct) p.a.pack(ic, mc, pc, kc, mr, a_block);
  const bool strided = p.a_direct || p.b_direct;
  const int64_t a_step = p.a_direct ? p.lda : mr, b_step = p.b_direct ? p.ldb : nr;
  const auto tile = [&](int64_t js, int64_t ir) {
    const float* b_sliver = p.b_direct ? p.b_direct + pc * p.ldb + p.j0 + jc + js * nr : b_panel + js * nr * kc;
    const float* a_sliver = p.a_direct ? p.a_direct + pc * p.lda + ic + ir : a_block + ir * kc;
    const int m = static_cast<int>(std::min<int64_t>(mr, mc - ir));
    const int n = static_cast<int>(std::min<int64_t>(nr, nc - js * nr));
    float* c_tile = p.c + (ic + ir) * p.ldc + jc + js * nr;
    if (strided)
      cfg.kernel_strided(kc, a_sliver, a_step, b_sliver, b_step, c_tile, p.ldc, p.alpha, beta, m, n);
    else
      cfg.kernel(kc, a_sliver, b_sliver, c_tile, p.ldc, p.alpha, beta, m, n);
  };
  if (kc <= kShallowK) {
    for (int64_t ir = 0; ir < mc; ir += mr)
      for (int64_t js = 0; js * nr < nc; ++js) tile(js, ir);
  } else {
    for (int64_t js = 0; js * nr < nc; ++js)
      for (int64_t ir = 0; ir < mc; ir += mr) tile(js, ir);
  }
}

void run_serial(const Problem& p, const Plan& plan, float* b_panel, float* a_block) {
  for (int64_t jc = 0; jc < p.N; jc += plan.nc) {
    const int64_t nc = std::min(plan.nc, p.N - jc);
    for (int64_t pc = 0; pc < p.K; pc += plan.kc) {
      const int64_t kc = std::min(plan.kc, p.K - pc);
      pack_b_slivers(p, plan, jc, nc, pc, kc, 0, ceil_div(nc, plan.cfg.nr), b_panel);
      for (int64_t block = 0; block < plan.m_blocks; ++block)
        compute_block(p, plan, block, jc, nc, pc, kc, b_panel, a_block);
    }
  }
}

// Column slabs: thread t of the team runs the serial loops on the t-th run of B's slivers, with its
// own B panel. No barriers and no cache line crosses cores: the right cut for small products, where
// handing a freshly packed shared panel from one core to the other costs as much as the work. The
// runs are taken in chunks from StealingRanges, so a thread that finishes first takes the tail of
// a slower one's run; a chunk's columns come out the same bits as in one slab (K is blocked the
// same way, and chunks are whole slivers).
void run_slab(const Problem& p, const Plan& plan, StealingRanges& slivers, float* b_panel, float* a_block) {
  const int nr = plan.cfg.nr;
  int64_t s0, s1;
  while (slivers.next(omp_get_thread_num(), s0, s1)) {
    const int64_t j0 = s0 * nr, j1 = std::min(p.N, s1 * nr);
    Problem slab = p;
    slab.N = j1 - j0;
    slab.c = p.c + j0;
    slab.j0 = p.j0 + j0;
    run_serial(slab, plan, b_panel, a_block);
  }
}

// Shared panel: called by every thread of the team. The worksharing loops' closing barriers fence
// the panel: all of it is packed before anyone reads it, and nobody still reads it when it is
// repacked. A blocks go out dynamically when there are more than threads, so a thread slowed by
// another process on its core takes fewer; one per thread goes out statically, so a thread works on
// the same rows of C and A in every call, which the caches reward when products repeat.
void run_shared(const Problem& p, const Plan& plan, float* b_panel, float* a_block) {
  const int threads = omp_get_num_threads();
  for (int64_t jc = 0; jc < p.N; jc += plan.nc) {
    const int64_t nc = std::min(plan.nc, p.N - jc);
    const int64_t panel_slivers = ceil_div(nc, plan.cfg.nr);
    for (int64_t pc = 0; pc < p.K; pc += plan.kc) {
      const int64_t kc = std::min(plan.kc, p.K - pc);
#pragma omp for schedule(static)
      for (int t = 0; t < threads; ++t)
        pack_b_slivers(p, plan, jc, nc, pc, kc, split(panel_slivers, threads, t), split(panel_slivers, threads, t + 1),
                       b_panel);
      if (plan.m_blocks > threads) {
#pragma omp for schedule(dynamic, 1)
        for (int64_t block = 0; block < plan.m_blocks; ++block)
          compute_block(p, plan, block, jc, nc, pc, kc, b_panel, a_block);
      } else {
#pragma omp for schedule(static)
        for (int64_t block = 0; block < plan.m_blocks; ++block)
          compute_block(p, plan, block, jc, nc, pc, kc, b_panel, a_block);
      }
    }
  }
}

// alpha == 0 or K == 0: C = beta * C without touching A or B (the BLAS convention).
void scale_c(const Problem& p) {
  for (int64_t i = 0; i < p.M; ++i) {
    float* row = p.c + i * p.ldc;
    if (p.beta == 0.f)
      std::fill(row, row + p.N, 0.f);
    else
      for (int64_t j = 0; j < p.N; ++j) row[j] *= p.beta;
  }
}

}  // namespace

namespace {

void run_gemm(const Problem& p) {
  if (p.M <= 0 || p.N <= 0) return;
  if (p.K <= 0 || p.alpha == 0.f) return scale_c(p);

  // Inside someone else's parallel region (convolution), run on this thread alone: a worksharing
  // loop here would bind to the caller's team.
  const bool nested = omp_get_level() > 0;
  const Plan plan = make_plan(active_config(), p, nested);
  float* b_panel = tl_b_panel.get(plan.kc * plan.nc);
  if (plan.threads == 1) return run_serial(p, plan, b_panel, tl_a_block.get(plan.mc * plan.kc));

  // The plan is cut for plan.threads; the team that runs it may be smaller on a loaded machine
  // (parallel_team.h), which changes who computes which columns, not the result.
  const double work_ns = flops_ns(2.0 * static_cast<double>(p.M) * static_cast<double>(p.N) * static_cast<double>(p.K));
  const int team = std::min(plan.threads, team_threads(work_ns));
  if (team == 1) return run_serial(p, plan, b_panel, tl_a_block.get(plan.mc * plan.kc));
  StealingRanges slivers(ceil_div(p.N, plan.cfg.nr), team);
  RegionClock clock;

  // Exceptions must not cross the OpenMP region, and a thread that throws must not leave the others
  // waiting at a barrier: every thread allocates its buffers first, then all agree on the outcome.
  int failed = 0;
#pragma omp parallel num_threads(team)
  {
    clock.arrived();
    float* a_block = nullptr;
    float* own_b_panel = nullptr;
    try {
      a_block = tl_a_block.get(plan.mc * plan.kc);
      if (plan.column_slabs) own_b_panel = tl_b_panel.get(plan.kc * plan.nc);
    } catch (...) {
#pragma omp atomic write
      failed = 1;
    }
#pragma omp barrier
    int give_up;
#pragma omp atomic read
    give_up = failed;
    if (!give_up) {
      if (plan.column_slabs)
        run_slab(p, plan, slivers, own_b_panel, a_block);
      else
        run_shared(p, plan, b_panel, a_block);
    }
    clock.done();
  }
  clock.finish(team, work_ns);
  if (failed) throw std::bad_alloc();
}

}  // namespace

void gemm_packed(int64_t M, int64_t N, int64_t K, float alpha, const PackA& a, const PackB& b, float beta,
                 float* c, int64_t ldc) {
  run_gemm(Problem{M, N, K, alpha, a, b, beta, c, ldc, 0});
}

namespace {

// Direct-operand thresholds (measured single-threaded on the training shapes, bench/NOTES.md).
constexpr int64_t kDirectBMaxRows = 96;
constexpr int64_t kDirectAMaxCols = 128;
constexpr int64_t kDirectANarrow = 16;

// Matrix-vector products above this many matrix elements (2 MiB) are split over the threads.
constexpr int64_t kParallelGemvElements = int64_t{1} << 19;

// y = alpha * x @ B + beta * y (B is k x n) or, with rows_form false, y = alpha * A @ x + beta * y
// (A is n x k, y strided by incy): threads take contiguous ranges of y.
void run_gemv(const GemmConfig& cfg, bool rows_form, int64_t n, int64_t k, float alpha, const float* x,
              const float* mat, int64_t ld, float beta, float* y, int64_t incy) {
  const auto part = [&](int64_t j0, int64_t j1) {
    if (j1 <= j0) return;
    if (rows_form)
      cfg.gemv_rows(k, j1 - j0, alpha, x, mat + j0, ld, beta, y + j0);
    else
      cfg.gemv_dots(j1 - j0, k, alpha, mat + j0 * ld, ld, x, beta, y + j0 * incy, incy);
  };
  if (omp_get_level() > 0 || omp_get_max_threads() == 1 || n * k < kParallelGemvElements || n < 64)
    return part(0, n);
  // Ranges in whole 64-byte lines of y, so no two threads write one line.
  const int64_t lines = ceil_div(n, 16);
#pragma omp parallel num_threads(team_threads(elements_ns(double(n) * double(k))))
  {
    const int t = omp_get_thread_num(), threads = omp_get_num_threads();
    part(std::min(n, split(lines, threads, t) * 16), std::min(n, split(lines, threads, t + 1) * 16));
  }
}

}  // namespace

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (M > 0 && N > 0 && K > 0 && alpha != 0.f) {
    const GemmConfig& cfg = active_config();
    // M == 1: C's one row = op(A)'s one row (contiguous unless A^T has a stride) times op(B).
    if (M == 1 && (!trans_a || lda == 1)) {
      if (trans_b)
        run_gemv(cfg, false, N, K, alpha, a, b, ldb, beta, c, 1);
      else
        run_gemv(cfg, true, N, K, alpha, a, b, ldb, beta, c, 1);
      return;
    }
    // N == 1: C's one column = op(A) times op(B)'s one column.
    if (N == 1 && (trans_b || ldb == 1)) {
      if (!trans_a)
        return run_gemv(cfg, false, M, K, alpha, b, a, lda, beta, c, ldc);
      if (ldc == 1) return run_gemv(cfg, true, M, K, alpha, b, a, lda, beta, c, 1);
    }
  }
  const DenseA pa = trans_a ? DenseA(a, 1, lda) : DenseA(a, lda, 1);
  const DenseB pb = trans_b ? DenseB(b, 1, ldb) : DenseB(b, ldb, 1);
  Problem p{M, N, K, alpha, pa, pb, beta, c, ldc, 0};
  // Operands read in place (bench/NOTES.md, "Direct operands"): a row-major B when C has few rows,
  // so each packed element would feed only a few A slivers; A^T (stored K x M) when C has few
  // columns, or when it is so narrow (M <= 16) that its rows are one or two cache lines anyway.
  if (active_config().kernel_strided) {
    if (!trans_b && M <= kDirectBMaxRows) {
      p.b_direct = b;
      p.ldb = ldb;
    }
    if (trans_a && (N <= kDirectAMaxCols || M <= kDirectANarrow)) {
      p.a_direct = a;
      p.lda = lda;
    }
  }
  run_gemm(p);
}

}  // namespace pn
