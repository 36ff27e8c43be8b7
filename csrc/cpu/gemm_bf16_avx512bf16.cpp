// AVX512-BF16 bf16 GEMM path: a 14 x 32 float32 tile of C in 28 zmm accumulators, fed by vdpbf16ps.
//
// vdpbf16ps multiplies 16 lanes of bf16 pairs and adds both products to 16 float32 lanes:
//     acc[j] += A(r, 2p) * B(2p, j) + A(r, 2p + 1) * B(2p + 1, j)
// so K advances two at a time. With B packed in pairs (gemm_bf16_layout.h: one 32-bit word per column
// and pair), a step loads one 32-column row of pairs (2 zmm) and broadcasts 14 A pairs (32-bit words,
// straight from memory into the instruction's {1to16} operand): 28 vdpbf16ps against 2 vector loads
// and 14 broadcasts, the same shape as the float32 kernel (gemm_kernel_avx512.cpp) with twice the
// K per instruction. 28 + 2 registers of 32.
//
// Napkin math (this machine, AMD Zen 5 class: two 512-bit vdpbf16ps per cycle): 2 x 16 lanes x
// 2 products x 2 flops = 128 bf16 flops per cycle per core, twice float32's FMAs; 14 cycles per step
// against 128 + 56 bytes of operands (13 B/cycle), which the L2 delivers easily.
// Cache blocks: kc = 4096, mc = 56, nc = 1024: the B sliver (32 x 4096, 256 KiB) and the A block
// (56 x 4096, 448 KiB) share the 1 MiB L2, the B panel (8 MiB) sits in L3. Measured on one core
// (bench/NOTES.md): deep K blocks win, 2048-4096 over 1024 by ~15% at 2048^3 (each tile's C
// traffic and epilogue come once per K block), and K up to 4096 in one block keeps a bf16 C from
// needing the float32 workspace.
//
// Edge tiles: an instance per live row count (1..14) and 1 or 2 column vectors; the last vector is
// masked in the epilogue, so nothing outside C[0:m, 0:n] is touched. vdpbf16ps treats bf16
// subnormal inputs as zero and flushes subnormal results (as AMX does): products of normal bf16 are
// exact in float32, so only sums below 1.2e-38 differ from the portable path.
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <utility>

#include "cpu/gemm_bf16_epilogue.h"
#include "cpu/gemm_bf16_kernel.h"
#include "cpu/gemm_bf16_layout.h"
#include "cpu/gemm_bf16_pack_avx512.h"

namespace pn {
namespace {

constexpr int kMR = 14;
constexpr int kNR = 32;

using Pair = uint32_t __attribute__((__may_alias__));  // two bf16 read as one word

using TileFn = void (*)(int64_t, const uint16_t*, const uint16_t*, const Bf16Epilogue&, int64_t, int64_t, int);

// M live rows, NV live 16-column vectors, n live columns (16 * (NV - 1) < n <= 16 * NV).
template <int M, int NV>
void tile(int64_t pairs, const uint16_t* a16, const uint16_t* b16, const Bf16Epilogue& ep, int64_t row, int64_t col,
          int n) {
  const Pair* a = reinterpret_cast<const Pair*>(a16);
  const __m512i* b = reinterpret_cast<const __m512i*>(b16);
  __m512 acc[M][NV];
#pragma GCC unroll 16
  for (int r = 0; r < M; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();

  // C (or the running sum) is touched once per kc-deep product: start pulling its lines in now, off
  // the critical path (a row of the tile is 128 bytes of float32, or 64 of bf16).
  const bool to_c = ep.last;
  const char* target = to_c ? static_cast<const char*>(ep.c) : reinterpret_cast<const char*>(ep.acc);
  const int64_t row_bytes = to_c ? ep.ldc * (ep.c_bf16 ? 2 : 4) : ep.ldacc * 4;
  const int64_t col_bytes = col * (to_c && ep.c_bf16 ? 2 : 4);
#pragma GCC unroll 16
  for (int r = 0; r < M; ++r) {
    _mm_prefetch(target + (row + r) * row_bytes + col_bytes, _MM_HINT_T0);
    _mm_prefetch(target + (row + r) * row_bytes + col_bytes + 64 * NV - 1, _MM_HINT_T0);
  }

#pragma GCC unroll 4
  for (int64_t p = 0; p < pairs; ++p) {
    // The A sliver streams from L2 at 56 bytes per step: ask for it ~8 steps ahead.
    _mm_prefetch(reinterpret_cast<const char*>(a + 8 * kMR), _MM_HINT_T0);
    __m512bh bv[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) bv[v] = (__m512bh)_mm512_load_si512(b + v);
#pragma GCC unroll 16
    for (int r = 0; r < M; ++r) {
      const __m512bh ar = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[r]));
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], ar, bv[v]);
    }
    a += kMR;
    b += kNR / 16;
  }

#pragma GCC unroll 16
  for (int r = 0; r < M; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v)
      epilogue_vec16(ep, row + r, col + 16 * v, acc[r][v], v == NV - 1 ? lanes_mask(n - 16 * v) : 0xFFFF);
}

template <int... Ms>
constexpr std::array<std::array<TileFn, 2>, kMR> make_table(std::integer_sequence<int, Ms...>) {
  return {{{{&tile<Ms + 1, 1>, &tile<Ms + 1, 2>}}...}};
}

constexpr auto kTiles = make_table(std::make_integer_sequence<int, kMR>{});

// jr outer, ir inner: each B sliver stays in L1 while the block's A slivers pass by from L2.
void block(int64_t kc_padded, const uint16_t* a, int64_t mc, const uint16_t* b, int64_t nc, const Bf16Epilogue& ep) {
  for (int64_t j = 0; j < nc; j += kNR) {
    const int n = static_cast<int>(nc - j < kNR ? nc - j : kNR);
    for (int64_t i = 0; i < mc; i += kMR) {
      const int m = static_cast<int>(mc - i < kMR ? mc - i : kMR);
      kTiles[m - 1][n > 16 ? 1 : 0](kc_padded / 2, a + i * kc_padded, b + j * kc_padded, ep, i, j, n);
    }
  }
}

void pack_a(const Bf16Operand& a, int64_t i0, int64_t mc, int64_t k0, int64_t kc, uint16_t* dst) {
  const int64_t kc_pad = round_up_to(kc, 2);
  if (a.y_stride != 1 && a.x_stride != 1) return pack_a_pairs_scalar(a, i0, mc, k0, kc, kMR, dst);
  for (int64_t s = 0; s * kMR < mc; ++s) {
    const int rows = static_cast<int>(mc - s * kMR < kMR ? mc - s * kMR : kMR);
    const uint16_t* src = a.data + (i0 + s * kMR) * a.x_stride + k0 * a.y_stride;
    uint16_t* sliver = dst + s * kMR * kc_pad;
    if (a.y_stride == 1)  // row-major A: each row's pairs are words, transpose 14 rows
      pack_pairs_transposed(src, a.x_stride, rows, kc, reinterpret_cast<uint32_t*>(sliver), kMR, kMR);
    else  // A^T stored K x M: rows of A run along memory
      pack_pairs_interleaved(src, a.y_stride, rows, kc, sliver, 2 * kMR, kMR);
  }
}

void pack_b(const Bf16Operand& b, int64_t k0, int64_t kc, int64_t j0, int64_t nc, uint16_t* dst) {
  const int64_t kc_pad = round_up_to(kc, 2);
  if (b.x_stride != 1 && b.y_stride != 1) return pack_b_pairs_scalar(b, k0, kc, j0, nc, kNR, dst);
  for (int64_t s = 0; s * kNR < nc; ++s) {
    const int cols = static_cast<int>(nc - s * kNR < kNR ? nc - s * kNR : kNR);
    const uint16_t* src = b.data + k0 * b.x_stride + (j0 + s * kNR) * b.y_stride;
    uint16_t* sliver = dst + s * kNR * kc_pad;
    if (b.y_stride == 1) {  // row-major B: interleave k rows
      pack_pairs_interleaved(src, b.x_stride, cols, kc, sliver, 2 * kNR, kNR);
    } else {  // B^T stored N x K: each column's pairs are words, transpose in groups of 16 columns
      uint32_t* words = reinterpret_cast<uint32_t*>(sliver);
      for (int g = 0; g < kNR; g += 16) {
        const int live = cols - g < 0 ? 0 : (cols - g < 16 ? cols - g : 16);
        pack_pairs_transposed(src + g * b.y_stride, b.y_stride, live, kc, words + g, kNR, 16);
      }
    }
  }
}

}  // namespace

const Bf16GemmKernel& bf16_kernel_avx512bf16() {
  static const Bf16GemmKernel kernel{"avx512bf16", kMR, kNR, 2, 4096, 56, 1024, &pack_a, &pack_b, &block};
  return kernel;
}

// 24 independent accumulators (more than latency x throughput needs), operands in registers.
// Returns the best rate of ~1 ms windows: on a shared machine the undisturbed windows are the peak.
double bf16_dot_peak_loop_avx512bf16(double seconds) {
  constexpr int kChains = 24, kInner = 1024;
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_setzero_ps();
  const __m512bh x = (__m512bh)_mm512_set1_epi32(0x3F803F80), y = (__m512bh)_mm512_set1_epi32(0x3A803A80);
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  double best = 0;
  while (std::chrono::duration<double>(Clock::now() - start).count() < seconds) {
    const auto window = Clock::now();
    for (int it = 0; it < kInner; ++it)
#pragma GCC unroll 24
      for (int i = 0; i < kChains; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], x, y);
    const double elapsed = std::chrono::duration<double>(Clock::now() - window).count();
    best = std::max(best, double(kInner) * kChains * 16 * 2 * 2 / elapsed);
  }
  __m512 sum = acc[0];
  for (int i = 1; i < kChains; ++i) sum = _mm512_add_ps(sum, acc[i]);
  volatile float sink = _mm512_reduce_add_ps(sum);  // keeps the loop from being optimised away
  (void)sink;
  return best;
}

}  // namespace pn
