// AVX2 + FMA SGEMM microkernel: a 6 x 16 tile of C held in 12 ymm accumulators.
//
// Per k step: 2 ymm loads of the B sliver row, 6 broadcasts of A, 12 FMAs. 12 accumulators + 2 B
// registers + 1 broadcast use 15 of the 16 ymm registers, and 12 independent FMA chains cover the
// FMA latency x throughput (4-5 cycles x 2 ports) of Haswell-to-Golden-Cove cores. This is the
// classic Haswell shape; a wider tile would spill.
//
// Cache blocks: kc = 512 gives a 32 KiB B sliver (kc x 16) that stays in L1, the mc x kc A block
// (mc = 192 rows, 384 KiB) sits in L2, the kc x nc B panel (nc = 2048, 4 MiB) in L3.
//
// Edge tiles: one instance per row count m = 1..6; the last column vector goes through
// vmaskmov loads/stores so nothing outside C[0:m, 0:n] is touched.
#include <immintrin.h>

#include <array>
#include <utility>

#include "cpu/avx2_lanes.h"
#include "cpu/gemm_gemv.h"
#include "cpu/gemm_microkernel.h"

namespace pn {
namespace {

constexpr int kMR = 6;
constexpr int kNR = 16;

using TileFn = void (*)(int64_t, const float*, const float*, float*, int64_t, float, float, int);

template <int M, int NV>
void tile(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha, float beta, int n) {
  __m256 acc[M][NV];
#pragma GCC unroll 8
  for (int r = 0; r < M; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_setzero_ps();

#pragma GCC unroll 8
  for (int r = 0; r < M; ++r) {
    _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + 8 * NV - 1), _MM_HINT_T0);
  }

#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    _mm_prefetch(reinterpret_cast<const char*>(a + 8 * kMR), _MM_HINT_T0);
    __m256 bv[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) bv[v] = _mm256_load_ps(b + 8 * v);
#pragma GCC unroll 8
    for (int r = 0; r < M; ++r) {
      const __m256 ar = _mm256_broadcast_ss(a + r);
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_fmadd_ps(ar, bv[v], acc[r][v]);
    }
    a += kMR;
    b += kNR;
  }

  // vmaskmov is slow on some cores: only a partial last vector goes through it.
  const int tail_live = n - 8 * (NV - 1);
  const __m256i tail = avx2_first_lanes(tail_live);
  const __m256 valpha = _mm256_set1_ps(alpha);
  const __m256 vbeta = _mm256_set1_ps(beta);
#pragma GCC unroll 8
  for (int r = 0; r < M; ++r) {
    float* crow = c + r * ldc;
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {
      float* p = crow + 8 * v;
      const bool partial = v == NV - 1 && tail_live < 8;
      __m256 out = _mm256_mul_ps(valpha, acc[r][v]);
      if (beta != 0.f) {
        const __m256 old = partial ? _mm256_maskload_ps(p, tail) : _mm256_loadu_ps(p);
        out = _mm256_fmadd_ps(vbeta, old, out);
      }
      if (partial)
        _mm256_maskstore_ps(p, tail, out);
      else
        _mm256_storeu_ps(p, out);
    }
  }
}

template <int... Ms>
constexpr std::array<std::array<TileFn, 2>, kMR> make_table(std::integer_sequence<int, Ms...>) {
  return {{{{&tile<Ms + 1, 1>, &tile<Ms + 1, 2>}}...}};
}

constexpr auto kTiles = make_table(std::make_integer_sequence<int, kMR>{});

void microkernel(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha, float beta, int m,
                 int n) {
  kTiles[m - 1][n > 8 ? 1 : 0](kc, a, b, c, ldc, alpha, beta, n);
}

}  // namespace

const GemmConfig& gemm_config_avx2() {
  static const GemmConfig config{"avx2", kMR, kNR, 512, 192, 2048, &microkernel, &gemv_rows, &gemv_dots, nullptr};
  return config;
}

}  // namespace pn
