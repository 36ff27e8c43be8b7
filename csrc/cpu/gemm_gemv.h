// Matrix-vector products for the GEMMs with M == 1 or N == 1 (batch-1 inference, a single output
// unit). They read each matrix element exactly once, straight from the caller's array: packing,
// which is cheap against the O(n) reuse of a real GEMM, would triple the memory traffic here, and
// a 14 x 32 register tile would be 1/14 or 1/32 full.
//
// This header is included by each gemm_kernel_<isa>.cpp, so the same loops are compiled (and
// auto-vectorised) once per ISA; the anonymous namespace keeps the copies apart (without it the
// linker would keep one copy for all, possibly the AVX-512 one on a CPU without AVX-512).
#pragma once
#include <cstdint>

namespace pn {
namespace {

// y[j] = alpha * sum_k x[k] * b[k * ldb + j] + beta * y[j] for j < n: rows of b are streamed four
// at a time (four sequential streams the prefetchers follow) into y, which stays in L1/L2.
// beta == 0 never reads y.
void gemv_rows(int64_t k, int64_t n, float alpha, const float* x, const float* b, int64_t ldb, float beta,
               float* y) {
  if (beta == 0.f) {
    for (int64_t j = 0; j < n; ++j) y[j] = 0.f;
  } else if (beta != 1.f) {
    for (int64_t j = 0; j < n; ++j) y[j] *= beta;
  }
  int64_t r = 0;
  for (; r + 4 <= k; r += 4) {
    const float x0 = alpha * x[r], x1 = alpha * x[r + 1], x2 = alpha * x[r + 2], x3 = alpha * x[r + 3];
    const float *b0 = b + r * ldb, *b1 = b0 + ldb, *b2 = b1 + ldb, *b3 = b2 + ldb;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) y[j] += x0 * b0[j] + x1 * b1[j] + x2 * b2[j] + x3 * b3[j];
  }
  for (; r < k; ++r) {
    const float x0 = alpha * x[r];
    const float* b0 = b + r * ldb;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) y[j] += x0 * b0[j];
  }
}

// y[i * incy] = alpha * dot(a[i * lda : i * lda + k], x) + beta * y[i * incy] for i < m: four rows
// at a time share each load of x. beta == 0 never reads y.
void gemv_dots(int64_t m, int64_t k, float alpha, const float* a, int64_t lda, const float* x, float beta, float* y,
               int64_t incy) {
  const auto store = [&](int64_t i, float dot) {
    float& out = y[i * incy];
    out = beta == 0.f ? alpha * dot : alpha * dot + beta * out;
  };
  int64_t i = 0;
  for (; i + 4 <= m; i += 4) {
    const float *a0 = a + i * lda, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda;
    float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
    for (int64_t c = 0; c < k; ++c) {
      s0 += a0[c] * x[c];
      s1 += a1[c] * x[c];
      s2 += a2[c] * x[c];
      s3 += a3[c] * x[c];
    }
    store(i, s0);
    store(i + 1, s1);
    store(i + 2, s2);
    store(i + 3, s3);
  }
  for (; i < m; ++i) {
    const float* a0 = a + i * lda;
    float s0 = 0.f;
#pragma omp simd reduction(+ : s0)
    for (int64_t c = 0; c < k; ++c) s0 += a0[c] * x[c];
    store(i, s0);
  }
}

}  // namespace
}  // namespace pn
