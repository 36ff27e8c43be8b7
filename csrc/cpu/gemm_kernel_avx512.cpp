// AVX-512 SGEMM microkernel: a 14 x 32 tile of C held in 28 zmm accumulators.
//
// Per k step it loads one 32-float row of the B sliver (2 zmm) and broadcasts 14 A values straight
// from memory into the FMAs ({1to16} operands), so one step is 28 FMAs against 2 vector loads +
// 14 broadcast loads: the two FMA ports stay busy while the load ports have room to spare, and
// 28 independent accumulators hide the 4-cycle FMA latency many times over. 28 + 2 B registers
// fill 30 of the 32 zmm registers; 16 x 32 would need 32 + 2 and spill.
//
// Cache blocks (Sapphire Rapids class core: L1d 48 KiB, L2 2 MiB): kc = 512, mc = 336, nc = 2048.
// The A block (336 x 512, 672 KiB) sits in L2 and the B panel (512 x 2048, 4 MiB) in L3. The
// textbook choice keeps the B sliver (kc x 32) in L1, i.e. kc <= ~256, but measured on this CPU
// kc = 512 is ~5% faster at 2048^3: one k step needs only 128 + 56 bytes per 14 cycles, which L2
// delivers easily, while a longer kc halves the C tile loads/stores and the number of panel
// passes (bench/NOTES.md has the sweep).
//
// Edge tiles: a template instance per row count m = 1..14 computes only the live rows, and the
// last column vector is written through a mask, so no element outside C[0:m, 0:n] is touched.
//
// Direct operands (microkernel_strided): for small products, packing costs as much as the multiply
// (a B element packed for M = 32 rows feeds 32 FMAs), so gemm.cpp can hand the kernel an operand
// in place: A^T stored row-major (element (r, k) at a[k * lda + r]) or B stored row-major (element
// (k, c) at b[k * ldb + c]). The Direct instances read B with unaligned loads, the last vector
// masked so nothing past column n is read, and prefetch the strided rows a few steps ahead.
#include <immintrin.h>

#include <array>
#include <utility>

#include "cpu/gemm_gemv.h"
#include "cpu/gemm_microkernel.h"

namespace pn {
namespace {

constexpr int kMR = 14;
constexpr int kNR = 32;

using TileFn = void (*)(int64_t, const float*, int64_t, const float*, int64_t, float*, int64_t, float, float, int);

// M live rows, NV live 16-float column vectors; n = live columns (16 * (NV - 1) < n <= 16 * NV).
// A step k reads a[k * lda + r] and b[k * ldb + c]: lda = kMR, ldb = kNR for packed slivers.
template <int M, int NV, bool Direct>
void tile(int64_t kc, const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc, float alpha,
          float beta, int n) {
  const __mmask16 tail = static_cast<__mmask16>((1u << (n - 16 * (NV - 1))) - 1u);
  __m512 acc[M][NV];
#pragma GCC unroll 16
  for (int r = 0; r < M; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();

  // C is touched once per kc-long product: start pulling its lines in now, off the critical path.
#pragma GCC unroll 16
  for (int r = 0; r < M; ++r) {
    _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + 16 * NV - 1), _MM_HINT_T0);
  }

#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    // The A sliver streams in from L2 at 56 bytes per step: ask for it ~8 steps ahead.
    _mm_prefetch(reinterpret_cast<const char*>(a + 8 * lda), _MM_HINT_T0);
    __m512 bv[NV];
    if constexpr (Direct) {
      // Each step is a new row of B (often a new page, which the hardware prefetchers do not cross).
      _mm_prefetch(reinterpret_cast<const char*>(b + 8 * ldb), _MM_HINT_T0);
      if (NV == 2) _mm_prefetch(reinterpret_cast<const char*>(b + 8 * ldb + 31), _MM_HINT_T0);
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v)
        bv[v] = v == NV - 1 ? _mm512_maskz_loadu_ps(tail, b + 16 * v) : _mm512_loadu_ps(b + 16 * v);
    } else {
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) bv[v] = _mm512_load_ps(b + 16 * v);
    }
#pragma GCC unroll 16
    for (int r = 0; r < M; ++r) {
      const __m512 ar = _mm512_set1_ps(a[r]);
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(ar, bv[v], acc[r][v]);
    }
    a += lda;
    b += ldb;
  }

  const __m512 valpha = _mm512_set1_ps(alpha);
  const __m512 vbeta = _mm512_set1_ps(beta);
#pragma GCC unroll 16
  for (int r = 0; r < M; ++r) {
    float* crow = c + r * ldc;
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {
      const __mmask16 mask = v == NV - 1 ? tail : static_cast<__mmask16>(0xFFFF);
      __m512 out = _mm512_mul_ps(valpha, acc[r][v]);
      if (beta != 0.f) out = _mm512_fmadd_ps(vbeta, _mm512_maskz_loadu_ps(mask, crow + 16 * v), out);
      _mm512_mask_storeu_ps(crow + 16 * v, mask, out);
    }
  }
}

// A tile of at most 8 live columns (the remainder of a 196-column product of 4 ResNet 7x7
// images is 4) in ymm registers: AMD's Zen 4 issues two 256-bit FMAs per cycle but only one
// 512-bit one, so this edge takes half the time of a 16-column tile there; on Intel's cores,
// which issue two of either, it costs the same. Same arguments and semantics as tile<M, 1, Direct>.
template <int M, bool Direct>
void tile_half(int64_t kc, const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc, float alpha,
               float beta, int n) {
  const __mmask8 mask = static_cast<__mmask8>((1u << n) - 1u);
  __m256 acc[M];
#pragma GCC unroll 16
  for (int r = 0; r < M; ++r) acc[r] = _mm256_setzero_ps();
#pragma GCC unroll 16
  for (int r = 0; r < M; ++r) _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc), _MM_HINT_T0);
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    _mm_prefetch(reinterpret_cast<const char*>(a + 8 * lda), _MM_HINT_T0);
    __m256 bv;
    if constexpr (Direct) {
      _mm_prefetch(reinterpret_cast<const char*>(b + 8 * ldb), _MM_HINT_T0);
      bv = _mm256_maskz_loadu_ps(mask, b);
    } else {
      bv = _mm256_load_ps(b);
    }
#pragma GCC unroll 16
    for (int r = 0; r < M; ++r) acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(a[r]), bv, acc[r]);
    a += lda;
    b += ldb;
  }
  const __m256 valpha = _mm256_set1_ps(alpha), vbeta = _mm256_set1_ps(beta);
#pragma GCC unroll 16
  for (int r = 0; r < M; ++r) {
    __m256 out = _mm256_mul_ps(valpha, acc[r]);
    if (beta != 0.f) out = _mm256_fmadd_ps(vbeta, _mm256_maskz_loadu_ps(mask, c + r * ldc), out);
    _mm256_mask_storeu_ps(c + r * ldc, mask, out);
  }
}

// kTiles[m - 1][w]: m live rows; w = 0 for at most 8 live columns, 1 for 9-16, 2 for 17-32.
template <bool Direct, int... Ms>
constexpr std::array<std::array<TileFn, 3>, kMR> make_table(std::integer_sequence<int, Ms...>) {
  return {{{{&tile_half<Ms + 1, Direct>, &tile<Ms + 1, 1, Direct>, &tile<Ms + 1, 2, Direct>}}...}};
}

int width_class(int n) { return n > 16 ? 2 : n > 8 ? 1 : 0; }

constexpr auto kTiles = make_table<false>(std::make_integer_sequence<int, kMR>{});
constexpr auto kDirectTiles = make_table<true>(std::make_integer_sequence<int, kMR>{});

void microkernel(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha, float beta, int m,
                 int n) {
  kTiles[m - 1][width_class(n)](kc, a, kMR, b, kNR, c, ldc, alpha, beta, n);
}

void microkernel_strided(int64_t kc, const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
                         float alpha, float beta, int m, int n) {
  kDirectTiles[m - 1][width_class(n)](kc, a, lda, b, ldb, c, ldc, alpha, beta, n);
}

}  // namespace

const GemmConfig& gemm_config_avx512() {
  static const GemmConfig config{"avx512",   kMR,        kNR,       512, 336, 2048, &microkernel, &gemv_rows,
                                 &gemv_dots, &microkernel_strided};
  return config;
}

}  // namespace pn
