// Portable SGEMM microkernel: a 4 x 8 tile of C in plain C++, for CPUs without AVX2 (and as the
// readable statement of what the SIMD kernels compute).
//
// Written so the compiler can keep the tile in registers and vectorise the 8-wide column loop for
// whatever baseline it targets: on x86-64 (SSE2, 16 xmm registers) the 4 x 8 tile is 8 xmm
// accumulators + 2 B vectors + 1 broadcast, which fits without spilling; a 4 x 16 tile would not.
//
// Cache blocks: kc = 256 (8 KiB B sliver in L1), mc = 128 (128 KiB A block in L2), nc = 2048.
// Edge tiles compute the full (zero-padded) tile and write only C[0:m, 0:n].
#include "cpu/gemm_gemv.h"
#include "cpu/gemm_microkernel.h"

namespace pn {
namespace {

constexpr int kMR = 4;
constexpr int kNR = 8;

void microkernel(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha, float beta, int m,
                 int n) {
  float acc[kMR][kNR] = {};
  for (int64_t k = 0; k < kc; ++k, a += kMR, b += kNR)
    for (int r = 0; r < kMR; ++r)
      for (int j = 0; j < kNR; ++j) acc[r][j] += a[r] * b[j];

  for (int r = 0; r < m; ++r) {
    float* crow = c + r * ldc;
    if (beta == 0.f)
      for (int j = 0; j < n; ++j) crow[j] = alpha * acc[r][j];
    else
      for (int j = 0; j < n; ++j) crow[j] = alpha * acc[r][j] + beta * crow[j];
  }
}

}  // namespace

const GemmConfig& gemm_config_generic() {
  static const GemmConfig config{"generic", kMR, kNR, 256, 128, 2048, &microkernel, &gemv_rows, &gemv_dots, nullptr};
  return config;
}

}  // namespace pn
