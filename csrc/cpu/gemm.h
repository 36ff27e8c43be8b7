// SGEMM on the CPU, BLIS style: C = alpha * A @ B + beta * C with A (M x K), B (K x N), C row-major.
//
// The GEMM never reads A or B in place. It asks a *packer* to copy one cache block at a time into
// the contiguous sliver layout its register-blocked microkernel streams. A dense matrix (either
// transpose) is one packer; an implicit im2col view of an image (conv.cpp) is another, which is how
// convolution runs on this GEMM without materialising the im2col matrix.
#pragma once
#include <cstdint>

namespace pn {

// Source of A (M x K). pack() copies A[i0:i0+mc, k0:k0+kc] into ceil(mc/mr) row slivers:
// sliver s holds rows s*mr .. s*mr+mr-1 as dst[s*mr*kc + k*mr + r]; rows at or past mc are zero.
struct PackA {
  virtual ~PackA() = default;
  virtual void pack(int64_t i0, int64_t mc, int64_t k0, int64_t kc, int mr, float* dst) const = 0;
};

// Source of B (K x N). pack() copies B[k0:k0+kc, j0:j0+nc] into ceil(nc/nr) column slivers:
// sliver s holds columns s*nr .. s*nr+nr-1 as dst[s*nr*kc + k*nr + c]; columns at or past nc are zero.
struct PackB {
  virtual ~PackB() = default;
  virtual void pack(int64_t k0, int64_t kc, int64_t j0, int64_t nc, int nr, float* dst) const = 0;
};

// Dense A: element (i, k) at data[i * row_stride + k * col_stride] (so A^T is a swap of strides).
struct DenseA final : PackA {
  const float* data;
  int64_t row_stride, col_stride;
  DenseA(const float* d, int64_t rs, int64_t cs) : data(d), row_stride(rs), col_stride(cs) {}
  void pack(int64_t i0, int64_t mc, int64_t k0, int64_t kc, int mr, float* dst) const override;
};

// Dense B: element (k, j) at data[k * row_stride + j * col_stride].
struct DenseB final : PackB {
  const float* data;
  int64_t row_stride, col_stride;
  DenseB(const float* d, int64_t rs, int64_t cs) : data(d), row_stride(rs), col_stride(cs) {}
  void pack(int64_t k0, int64_t kc, int64_t j0, int64_t nc, int nr, float* dst) const override;
};

// C (M x N, row-major with leading dimension ldc) = alpha * A @ B + beta * C.
// beta == 0 treats C as write-only: whatever C held (NaN included) never reaches the result.
// Runs on the OpenMP threads; called from inside a parallel region it runs on the calling thread.
void gemm_packed(int64_t M, int64_t N, int64_t K, float alpha, const PackA& a, const PackB& b, float beta,
                 float* c, int64_t ldc);

// BLAS-style entry: op(A) is M x K, op(B) is K x N, all row-major with leading dimensions lda/ldb/ldc.
void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

}  // namespace pn
