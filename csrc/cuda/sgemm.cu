// SGEMM on CUDA cores: C = alpha * op(A) * op(B) + beta * C (+ bias[n], ReLU), fp32, row-major
// (C-contiguous) operands with leading dimensions, any M, N, K, all four transpose combinations.
//
// Tiling and why: 128 x 128 x 8 block tiles, 64 x 32 warp tiles, 8 x 8 register blocking per
// thread, a 4-stage cp.async pipeline; the reasoning is in gemm_tile.cuh, shared with the
// implicit-GEMM convolutions. In row-major terms op(A) is "P-contiguous" (16-byte copies) when A
// is transposed and op(B) when B is not; the other cases copy 4 bytes into the transposed place.
//
// Epilogue: each thread owns 8 rows x (2 x 4) columns; a row's 4 consecutive columns are stored
// as one float4 where C allows (ldc % 4 == 0, 16-byte aligned, in range), element-wise at the
// edges. beta == 0 never reads C (NaN there does not propagate). bias (length N, may be null) is
// added after alpha scaling; relu != 0 clamps at zero last: the fused Linear + bias + ReLU.
//
// Launch (pyneural/cuda/gemm.py): grid (ceil(N / 128), ceil(M / 128)), block 256, no dynamic
// shared memory.
#include "gemm_tile.cuh"

namespace pn {

template <bool TRANS_A, bool TRANS_B>
__device__ __forceinline__ void sgemm(const float* __restrict__ A, const float* __restrict__ B, float* C,
                                      const float* __restrict__ bias, int M, int N, int K, int lda, int ldb,
                                      int ldc, float alpha, float beta, int relu) {
  __shared__ __align__(16) SharedTiles sm;
  const int m0 = blockIdx.y * TILE_M, n0 = blockIdx.x * TILE_N;
  // op(A)(m, k) is A[m * lda + k] (K contiguous) or, transposed, A[k * lda + m].
  const MatrixLoader<!TRANS_A> la(A, m0, M, K, lda);
  // op(B)(k, n) is B[k * ldb + n] (N contiguous) or, transposed, B[n * ldb + k].
  const MatrixLoader<TRANS_B> lb(B, n0, N, K, ldb);
  const ThreadTile tt;
  float acc[8][8];
#pragma unroll
  for (int i = 0; i < 8; ++i)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[i][j] = 0.f;

  gemm_mainloop(sm, la, lb, 0, (K + TILE_K - 1) / TILE_K, tt, acc);

  const bool vec = (ldc % 4 == 0) && ((reinterpret_cast<unsigned long long>(C) & 15) == 0);
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int m = m0 + tt.row(i);
    if (m >= M) continue;
    float* crow = C + static_cast<i64>(m) * ldc;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int n = n0 + tt.col(4 * h);
      if (n >= N) continue;
      float v[4];
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const bool in = n + q < N;
        float x = alpha * acc[i][4 * h + q];
        if (beta != 0.f && in) x = fmaf(beta, crow[n + q], x);
        if (bias != nullptr && in) x += bias[n + q];
        if (relu) x = fmaxf(x, 0.f);
        v[q] = x;
      }
      if (vec && n + 3 < N) {
        *reinterpret_cast<float4*>(crow + n) = make_float4(v[0], v[1], v[2], v[3]);
      } else {
#pragma unroll
        for (int q = 0; q < 4; ++q)
          if (n + q < N) crow[n + q] = v[q];
      }
    }
  }
}

}  // namespace pn

#define PN_SGEMM_KERNEL(name, ta, tb)                                                                       \
  extern "C" __global__ void __launch_bounds__(pn::TILE_THREADS, 2)                                          \
      name(const float* A, const float* B, float* C, const float* bias, int M, int N, int K, int lda, int ldb, \
           int ldc, float alpha, float beta, int relu) {                                                      \
    pn::sgemm<ta, tb>(A, B, C, bias, M, N, K, lda, ldb, ldc, alpha, beta, relu);                              \
  }

PN_SGEMM_KERNEL(pn_sgemm_nn, false, false)
PN_SGEMM_KERNEL(pn_sgemm_nt, false, true)
PN_SGEMM_KERNEL(pn_sgemm_tn, true, false)
PN_SGEMM_KERNEL(pn_sgemm_tt, true, true)
