// Tensor-core GEMM for sm_80 and later: mma.sync + ldmatrix + a multi-stage cp.async pipeline.
//
//   C[M,N] = act( alpha * op(A) @ op(B) + beta * C + bias[N] )       (fp32 accumulation)
//
// All matrices are row-major (numpy / CuPy C order). op(A) is M x K: A is stored [M,K] ("n") or,
// transposed, [K,M] ("t"); op(B) is K x N: B is stored [K,N] ("n") or [N,K] ("t"). A Linear layer
// needs three of the four layouts: forward y = x @ W^T is "nt", dX = dY @ W is "nn",
// dW = dY^T @ X is "tn"; "tt" comes for free. Inputs: bf16 or fp16 (m16n8k16), or fp32 computed as
// tf32 (m16n8k8, operands rounded with cvt.rna). Output: fp32, bf16 or fp16 (out_kind), so a
// Linear layer is one kernel: bias, ReLU / GELU (exact erf) and the cast happen in registers.
// beta == 0 never reads C (C may hold garbage or NaN).
//
// Tiling and why:
//  * Block tile 128 x 128, 8 warps as 2 (M) x 4 (N), warp tile 64 x 32: per k16 step a warp
//    issues 4 ldmatrix.x4 for A, 2 for B and 16 mma, i.e. 6 shared loads per 16 mma, and holds
//    64 fp32 accumulators per thread -- large enough for register reuse, small enough that
//    256 threads x ~128 registers leave room for 2 blocks per SM when shared memory allows.
//  * K step per stage is 64 bytes of each operand row: BK = 32 (bf16/fp16) or 16 (tf32), so one
//    stage is 2 x 8 KB whatever the type; PN_TC_STAGES stages (default 3 = 48 KB, the limit that
//    needs no cudaFuncSetAttribute; 4 stages = 64 KB is the first thing to tune on the H100).
//  * Tiles keep their global orientation in shared memory, so every cp.async copies 16 contiguous
//    bytes. The fragment load picks ldmatrix (K-contiguous tile) or ldmatrix.trans (M/N-contiguous
//    tile); tf32 uses plain 32-bit loads (ldmatrix has no 32-bit transpose).
//  * Shared memory is XOR-swizzled per 16-byte chunk, which makes every ldmatrix phase (8 rows of
//    16 bytes) and every cp.async phase hit 8 distinct 128-byte bank groups:
//      K-contiguous tile, 64-byte rows:   chunk' = chunk ^ ((row >> 1) & 3)
//      M/N-contiguous tile, 256/512-byte rows: chunk' = chunk ^ (row & 7)
//  * Edges: cp.async with a zero-fill source size for rows/columns outside M, N, K. A 16-byte
//    chunk can be used when the operand's base is 16-byte aligned and its leading dimension is a
//    multiple of 8 (16-bit) / 4 (fp32) elements (flags bits 0, 1 from the launcher); otherwise the
//    same tile is filled element by element with bounds checks (correct for any shape, slower).
//  * Blocks are rasterised in groups of 8 M-tiles so consecutive blocks share B tiles in L2.
//  * The tile constants, swizzle, fragment loads and the pipelined main loop are in
//    gemm_tc_tile.cuh (shared with the implicit-GEMM convolutions of conv_tc.cu); the operand
//    loader and the alpha / beta / bias / activation epilogue below are this file's own.
//
// Launch (one place: pyneural/cuda/tensor_core.py): grid = ceil(M/128) * ceil(N/128) blocks (1-D),
// 256 threads, dynamic shared memory = PN_TC_STAGES * 16384 bytes.

#include "gemm_tc_tile.cuh"

namespace pn_tc_mma {

using namespace pn_tc;  // tile constants, swizzle, fragments, main loop (gemm_tc_tile.cuh)
using pn::cp_async16;

enum Flags { A_VEC = 1, B_VEC = 2, C_PAIR = 4 };

// ---- global -> shared: one operand's tile for one stage ----------------------------------------
// K_MAJOR: element (mn, k) at g[mn * ld + k]; tile rows are mn (128), 4 chunks of K each.
// otherwise: element (k, mn) at g[k * ld + mn]; tile rows are k (BK), MN_CHUNKS chunks each.
// Every tile has 512 chunks: 2 per thread.
template <int KIND, bool K_MAJOR>
__device__ __forceinline__ void load_tile(unsigned s_tile, const char* g, int ld, int mn0, int mn_lim, int k0,
                                          int k_lim, bool vec) {
    using E = Elem<KIND>;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        const int q = threadIdx.x + i * THREADS;
        int r, c, mn, k, off;
        if (K_MAJOR) {
            r = q >> 2; c = q & 3;
            mn = mn0 + r; k = k0 + c * E::VEC;
            off = off_kmajor(r, c);
        } else {
            r = q / E::MN_CHUNKS; c = q % E::MN_CHUNKS;
            k = k0 + r; mn = mn0 + c * E::VEC;
            off = off_mnmajor<KIND>(r, c);
        }
        const long long row = K_MAJOR ? mn : k, col = K_MAJOR ? k : mn;
        const int row_lim = K_MAJOR ? mn_lim : k_lim, col_lim = K_MAJOR ? k_lim : mn_lim;
        if (vec) {  // col_lim is a multiple of VEC here: a chunk is all in or all out
            const bool ok = row < row_lim && col < col_lim;
            const char* src = ok ? g + (row * ld + col) * E::BYTES : g;
            cp_async16(s_tile + off, src, ok);
        } else {
            unsigned w[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                if (E::BYTES == 4) {
                    const bool ok = row < row_lim && col + e < col_lim;
                    w[e] = ok ? reinterpret_cast<const unsigned*>(g)[row * ld + col + e] : 0u;
                } else {
                    const unsigned short* gs = reinterpret_cast<const unsigned short*>(g);
                    const bool ok0 = row < row_lim && col + 2 * e < col_lim;
                    const bool ok1 = row < row_lim && col + 2 * e + 1 < col_lim;
                    const unsigned lo = ok0 ? gs[row * ld + col + 2 * e] : 0u;
                    const unsigned hi = ok1 ? gs[row * ld + col + 2 * e + 1] : 0u;
                    w[e] = lo | (hi << 16);
                }
            }
            pn::sts128(s_tile + off, w);
        }
    }
}

// ---- epilogue -----------------------------------------------------------------------------------
// Writes C[row, col] and C[row, col+1] (those inside N) from two accumulators.
__device__ __forceinline__ void store_pair(void* c, const float* bias, int N, int ldc, int row, int col, float v0,
                                           float v1, float alpha, float beta, int act, int out_kind, bool pair_ok) {
    const long long i = static_cast<long long>(row) * ldc + col;
    const bool has1 = col + 1 < N;
    v0 *= alpha; v1 *= alpha;
    if (beta != 0.f) {
        v0 += beta * load_out(c, i, out_kind);
        if (has1) v1 += beta * load_out(c, i + 1, out_kind);
    }
    if (bias != nullptr) {
        v0 += bias[col];
        if (has1) v1 += bias[col + 1];
    }
    v0 = activate(v0, act); v1 = activate(v1, act);
    if (out_kind == OUT_F32) {
        float* o = reinterpret_cast<float*>(c) + i;
        if (has1 && pair_ok) {
            pn::stg64(o, v0, v1);
        } else {
            o[0] = v0;
            if (has1) o[1] = v1;
        }
    } else {
        const unsigned p = pack2(v0, v1, out_kind);
        unsigned short* o = reinterpret_cast<unsigned short*>(c) + i;
        if (has1 && pair_ok) {
            *reinterpret_cast<unsigned*>(o) = p;
        } else {
            o[0] = static_cast<unsigned short>(p & 0xffffu);
            if (has1) o[1] = static_cast<unsigned short>(p >> 16);
        }
    }
}

// ---- the kernel body ------------------------------------------------------------------------------
template <int KIND, bool TRANS_A, bool TRANS_B>
__device__ __forceinline__ void gemm(const void* A, const void* B, void* C, const float* bias, int M, int N, int K,
                                     int lda, int ldb, int ldc, float alpha, float beta, int act, int out_kind,
                                     int flags) {
    using E = Elem<KIND>;
    constexpr bool A_KMAJOR = !TRANS_A;  // A [M,K]: K contiguous
    constexpr bool B_KMAJOR = TRANS_B;   // B [N,K]: K contiguous
    const unsigned s_base = pn::smem_u32(pn::dynamic_smem());

    int tile_m, tile_n;
    raster(blockIdx.x, (M + BM - 1) / BM, (N + BN - 1) / BN, tile_m, tile_n);
    const int m0 = tile_m * BM, n0 = tile_n * BN;

    const int lane = threadIdx.x & 31;
    const int wm = warp_m0(), wn = warp_n0();
    const bool a_vec = flags & A_VEC, b_vec = flags & B_VEC;
    const char* gA = static_cast<const char*>(A);
    const char* gB = static_cast<const char*>(B);

    float acc[MI][NI][4];
    zero(acc);
    auto load_stage = [&](unsigned s, int kt) {
        load_tile<KIND, A_KMAJOR>(s, gA, lda, m0, M, kt * E::BK, K, a_vec);
        load_tile<KIND, B_KMAJOR>(s + TILE_BYTES, gB, ldb, n0, N, kt * E::BK, K, b_vec);
    };
    mainloop<KIND, A_KMAJOR, B_KMAJOR>(s_base, 0, (K + E::BK - 1) / E::BK, load_stage, acc);

    // epilogue straight from registers: accumulator (i, j) holds rows g, g+8 and columns 2t, 2t+1
    const int g = lane >> 2, t = lane & 3;
    const bool pair_ok = flags & C_PAIR;
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j) {
            const int col = n0 + wn + j * 8 + 2 * t;
            if (col >= N) continue;
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int row = m0 + wm + i * 16 + g + h * 8;
                if (row < M)
                    store_pair(C, bias, N, ldc, row, col, acc[i][j][2 * h], acc[i][j][2 * h + 1], alpha, beta, act,
                               out_kind, pair_ok);
            }
        }
}

}  // namespace pn_tc_mma

// ---- entry points: pn_tc_mma_<type>_<layout>, layout = op(A) op(B) with n = as stored, t = transposed
#define PN_TC_MMA_KERNEL(NAME, KIND, TA, TB)                                                                    \
    extern "C" __global__ void __launch_bounds__(pn_tc_mma::THREADS)                                            \
        NAME(const void* A, const void* B, void* C, const float* bias, int M, int N, int K, int lda, int ldb,    \
             int ldc, float alpha, float beta, int act, int out_kind, int flags) {                               \
        pn_tc_mma::gemm<KIND, TA, TB>(A, B, C, bias, M, N, K, lda, ldb, ldc, alpha, beta, act, out_kind, flags); \
    }

PN_TC_MMA_KERNEL(pn_tc_mma_bf16_nn, pn_tc_mma::BF16, false, false)
PN_TC_MMA_KERNEL(pn_tc_mma_bf16_nt, pn_tc_mma::BF16, false, true)
PN_TC_MMA_KERNEL(pn_tc_mma_bf16_tn, pn_tc_mma::BF16, true, false)
PN_TC_MMA_KERNEL(pn_tc_mma_bf16_tt, pn_tc_mma::BF16, true, true)
PN_TC_MMA_KERNEL(pn_tc_mma_f16_nn, pn_tc_mma::F16, false, false)
PN_TC_MMA_KERNEL(pn_tc_mma_f16_nt, pn_tc_mma::F16, false, true)
PN_TC_MMA_KERNEL(pn_tc_mma_f16_tn, pn_tc_mma::F16, true, false)
PN_TC_MMA_KERNEL(pn_tc_mma_f16_tt, pn_tc_mma::F16, true, true)
PN_TC_MMA_KERNEL(pn_tc_mma_tf32_nn, pn_tc_mma::TF32, false, false)
PN_TC_MMA_KERNEL(pn_tc_mma_tf32_nt, pn_tc_mma::TF32, false, true)
PN_TC_MMA_KERNEL(pn_tc_mma_tf32_tn, pn_tc_mma::TF32, true, false)
PN_TC_MMA_KERNEL(pn_tc_mma_tf32_tt, pn_tc_mma::TF32, true, true)
