// The register-blocked heart of the GEMM (see gemm.cpp for the cache-blocking loops around it).
//
// A microkernel multiplies one packed A sliver (kc x MR, a[k * MR + r]) by one packed B sliver
// (kc x NR, b[k * NR + c]) into an MR x NR register tile, then writes the top-left m x n corner of
//   C = alpha * tile + beta * C        (beta == 0: C is write-only, never read)
// to row-major C with leading dimension ldc. Rows and columns past m / n are never read or written
// in C (the packed slivers are zero there, so they cost FLOPs but never correctness).
//
// Each ISA has its own file (gemm_kernel_<isa>.cpp, compiled with that ISA's flags) and exposes its
// tile and the cache blocks sized for it; gemm.cpp picks one at run time with pn::active_isa().
#pragma once
#include <cstdint>

namespace pn {

using GemmMicroKernel = void (*)(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha,
                                 float beta, int m, int n);

// The same with operand strides: a step k reads a[k * lda + r] and b[k * ldb + c] (packed slivers:
// lda = mr, ldb = nr), so an operand already laid out that way is read in place (see gemm.cpp).
using GemmMicroKernelStrided = void (*)(int64_t kc, const float* a, int64_t lda, const float* b, int64_t ldb,
                                        float* c, int64_t ldc, float alpha, float beta, int m, int n);

// Matrix-vector products for M == 1 / N == 1 (gemm_gemv.h holds the loops and their contracts).
using GemvRows = void (*)(int64_t k, int64_t n, float alpha, const float* x, const float* b, int64_t ldb, float beta,
                          float* y);
using GemvDots = void (*)(int64_t m, int64_t k, float alpha, const float* a, int64_t lda, const float* x, float beta,
                          float* y, int64_t incy);

struct GemmConfig {
  const char* name;
  int mr, nr;          // register tile: the packers are asked for slivers of this shape
  int64_t kc, mc, nc;  // cache blocks: B sliver kc x nr in L1, A block mc x kc in L2, B panel kc x nc in L3
  GemmMicroKernel kernel;
  GemvRows gemv_rows;  // y = alpha * x @ B + beta * y
  GemvDots gemv_dots;  // y = alpha * A @ x + beta * y
  GemmMicroKernelStrided kernel_strided;  // null where the ISA has none: operands are always packed
};

const GemmConfig& gemm_config_generic();
const GemmConfig& gemm_config_avx2();
const GemmConfig& gemm_config_avx512();

}  // namespace pn
