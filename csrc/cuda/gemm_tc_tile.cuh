// The block tile of the mma.sync tensor-core kernels, shared by the GEMM (gemm_tc_mma.cu) and the
// implicit-GEMM convolutions (conv_tc.cu): tile constants, the swizzled shared-memory layout, the
// ldmatrix fragment loads, the multi-stage cp.async main loop and the output conversions. What the
// two files differ in -- how a stage's tiles are filled from global memory and how the accumulators
// are written out -- stays in each file; the main loop takes the stage loader as a callable.
//
// Tiling and why (the numbers are argued in gemm_tc_mma.cu's opening comment):
//  * Block tile BM x BN = 128 x 128, 8 warps as 2 (M) x 4 (N), warp tile 64 x 32: per k16 step a
//    warp issues 4 ldmatrix.x4 for A, 2 for B and 16 mma.sync, and holds 64 fp32 accumulators.
//  * One stage holds 64 bytes of K per operand row (BK = 32 for 16-bit types, 16 for tf32), so a
//    stage is 2 x 8 KB whatever the type; STAGES (PN_TC_STAGES, default 3: 48 KB, the dynamic
//    shared memory a launch gets without cudaFuncSetAttribute) stages in flight.
//  * A tile keeps its global orientation in shared memory: K-major (rows = M or N index, four
//    16-byte chunks of K each) or MN-major (rows = k, 128 M/N elements each), so every global ->
//    shared copy moves 16 contiguous bytes; the fragment load picks ldmatrix or ldmatrix.trans.
//  * XOR swizzle per 16-byte chunk: every ldmatrix phase (8 rows of 16 bytes) and every 16-byte
//    store phase hits 8 distinct 128-byte bank groups:
//      K-major, 64-byte rows:       chunk' = chunk ^ ((row >> 1) & 3)
//      MN-major, 256/512-byte rows: chunk' = chunk ^ (row & 7)
#pragma once

#ifndef PN_TC_STAGES
#define PN_TC_STAGES 3
#endif

#include "common.cuh"

namespace pn_tc {

constexpr int BM = 128;
constexpr int BN = 128;
constexpr int ROW_BYTES = 64;              // K extent of one stage, in bytes, for every type
constexpr int TILE_BYTES = 8192;           // one operand's tile per stage
constexpr int STAGE_BYTES = 2 * TILE_BYTES;
constexpr int STAGES = PN_TC_STAGES;
constexpr int THREADS = 256;
constexpr int WM = 64, WN = 32;            // warp tile
constexpr int MI = WM / 16, NI = WN / 8;   // mma tiles per warp
constexpr int GROUP_M = 8;

enum Kind { BF16 = 0, F16 = 1, TF32 = 2 };
enum Act { ACT_NONE = 0, ACT_RELU = 1, ACT_GELU = 2 };
enum OutKind { OUT_F32 = 0, OUT_BF16 = 1, OUT_F16 = 2 };

template <int KIND> struct Elem {
    static constexpr int BYTES = (KIND == TF32) ? 4 : 2;
    static constexpr int VEC = 16 / BYTES;              // elements per 16-byte chunk
    static constexpr int BK = ROW_BYTES / BYTES;        // K per stage
    static constexpr int MN_ROW_BYTES = 128 * BYTES;    // row of an M/N-contiguous tile
    static constexpr int MN_CHUNKS = 128 / VEC;         // chunks per such row
};

// Byte offset of 16-byte chunk `c` of row `r` in a tile.
__device__ __forceinline__ int off_kmajor(int r, int c) { return r * ROW_BYTES + ((c ^ ((r >> 1) & 3)) << 4); }
template <int KIND>
__device__ __forceinline__ int off_mnmajor(int r, int c) {
    return r * Elem<KIND>::MN_ROW_BYTES + ((c ^ (r & 7)) << 4);
}

template <int KIND>
__device__ __forceinline__ void mma(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
    if (KIND == BF16) pn::mma_bf16_16816(d, a, b);
    else if (KIND == F16) pn::mma_f16_16816(d, a, b);
    else pn::mma_tf32_1688(d, a, b);
}

// ---- shared -> registers: fragments for one k16 (k8 for tf32) step ------------------------------
// A fragment (16 x k): a0 (row g, k 2t..), a1 (row g+8), a2 (k+8), a3 (row g+8, k+8) [bf16/f16];
// tf32: a0 (g, t), a1 (g+8, t), a2 (g, t+4), a3 (g+8, t+4). g = lane/4, t = lane%4.
template <int KIND, bool K_MAJOR>
__device__ __forceinline__ void load_a(unsigned s_a, int m_base, int ks, unsigned (&a)[4]) {
    const int lane = threadIdx.x & 31;
    if (KIND != TF32) {
        if (K_MAJOR) {  // matrices: (rows 0-7,k0) (rows 8-15,k0) (rows 0-7,k8) (rows 8-15,k8)
            pn::ldsm_x4(s_a + off_kmajor(m_base + (lane & 15), ks * 2 + (lane >> 4)), a);
        } else {        // stored [k][m]: matrix j covers m + (j&1)*8, k + (j>>1)*8; .trans
            const int j = lane >> 3, r = lane & 7;
            pn::ldsm_x4_t(s_a + off_mnmajor<KIND>(ks * 16 + r + (j >> 1) * 8, (m_base + (j & 1) * 8) >> 3), a);
        }
    } else {
        const int g = lane >> 2, t = lane & 3;
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int m = m_base + g + (e & 1) * 8, k = ks * 8 + t + (e >> 1) * 4;
            const int off = K_MAJOR ? off_kmajor(m, k >> 2) + (k & 3) * 4 : off_mnmajor<KIND>(k, m >> 2) + (m & 3) * 4;
            a[e] = pn::to_tf32(__uint_as_float(pn::lds32(s_a + off)));
        }
    }
}

// B fragments for two n8 tiles (n_base .. n_base+15): b[0] for n_base, b[1] for n_base + 8.
// Each: b0 (k 2t.., n g), b1 (k 2t+8.., n g) [bf16/f16]; tf32: b0 (k t, n g), b1 (k t+4, n g).
template <int KIND, bool K_MAJOR>
__device__ __forceinline__ void load_b(unsigned s_b, int n_base, int ks, unsigned (&b)[2][2]) {
    const int lane = threadIdx.x & 31;
    if (KIND != TF32) {
        const int j = lane >> 3, r = lane & 7;
        unsigned x[4];
        if (K_MAJOR) {  // stored [n][k]: matrix j covers n + (j>>1)*8, k + (j&1)*8
            pn::ldsm_x4(s_b + off_kmajor(n_base + r + (j >> 1) * 8, ks * 2 + (j & 1)), x);
        } else {        // stored [k][n]: matrix j covers k + (j&1)*8, n + (j>>1)*8; .trans
            pn::ldsm_x4_t(s_b + off_mnmajor<KIND>(ks * 16 + r + (j & 1) * 8, (n_base + (j >> 1) * 8) >> 3), x);
        }
        b[0][0] = x[0]; b[0][1] = x[1]; b[1][0] = x[2]; b[1][1] = x[3];
    } else {
        const int g = lane >> 2, t = lane & 3;
#pragma unroll
        for (int h = 0; h < 2; ++h)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const int n = n_base + h * 8 + g, k = ks * 8 + t + e * 4;
                const int off =
                    K_MAJOR ? off_kmajor(n, k >> 2) + (k & 3) * 4 : off_mnmajor<KIND>(k, n >> 2) + (n & 3) * 4;
                b[h][e] = pn::to_tf32(__uint_as_float(pn::lds32(s_b + off)));
            }
    }
}

// ---- block geometry ----------------------------------------------------------------------------
// This warp's first row (M) and column (N) inside the block tile.
__device__ __forceinline__ int warp_m0() { return ((threadIdx.x >> 5) >> 2) * WM; }
__device__ __forceinline__ int warp_n0() { return ((threadIdx.x >> 5) & 3) * WN; }

// Grouped rasterisation of a 1-D block index: GROUP_M consecutive M-tiles share each N-tile's
// panel in L2 while they run.
__device__ __forceinline__ void raster(int pid, int tiles_m, int tiles_n, int& tile_m, int& tile_n) {
    const int per_group = GROUP_M * tiles_n;
    const int first_m = (pid / per_group) * GROUP_M;
    const int group_rows = min(tiles_m - first_m, GROUP_M);
    tile_m = first_m + (pid % per_group) % group_rows;
    tile_n = (pid % per_group) / group_rows;
}

__device__ __forceinline__ void zero(float (&acc)[MI][NI][4]) {
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;
}

// ---- the main loop ---------------------------------------------------------------------------------
// acc += the block's A tile x B tile over k-tiles [kt_begin, kt_end) of Elem<KIND>::BK. `load_stage(s,
// kt)` fills stage s (A at s, B at s + TILE_BYTES, 32-bit shared addresses) with k-tile kt, by
// cp.async or by plain shared stores; the loop commits one cp.async group per stage either way.
// Ends with every copy landed.
template <int KIND, bool A_KMAJOR, bool B_KMAJOR, class LoadStage>
__device__ __forceinline__ void mainloop(unsigned s_base, int kt_begin, int kt_end, const LoadStage& load_stage,
                                         float (&acc)[MI][NI][4]) {
    const int wm = warp_m0(), wn = warp_n0();
    const int k_tiles = kt_end - kt_begin;

    // prologue: fill STAGES-1 stages (always commit, so group counting stays uniform)
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < k_tiles) load_stage(s_base + s * STAGE_BYTES, kt_begin + s);
        pn::cp_async_commit();
    }

    for (int kt = 0; kt < k_tiles; ++kt) {
        pn::cp_async_wait<STAGES - 2>();  // tile kt has landed (this thread's copies) ...
        __syncthreads();                  // ... everyone's, and stage (kt-1) % STAGES is free again
        const int next = kt + STAGES - 1;
        if (next < k_tiles) load_stage(s_base + (next % STAGES) * STAGE_BYTES, kt_begin + next);
        pn::cp_async_commit();

        const unsigned s_a = s_base + (kt % STAGES) * STAGE_BYTES, s_b = s_a + TILE_BYTES;
#pragma unroll
        for (int ks = 0; ks < 2; ++ks) {  // 2 x k16 (bf16/f16) or 2 x k8 (tf32) per stage
            unsigned a[MI][4], b[NI][2];
#pragma unroll
            for (int i = 0; i < MI; ++i) load_a<KIND, A_KMAJOR>(s_a, wm + i * 16, ks, a[i]);
#pragma unroll
            for (int p = 0; p < NI / 2; ++p) {
                unsigned bb[2][2];
                load_b<KIND, B_KMAJOR>(s_b, wn + p * 16, ks, bb);
                b[2 * p][0] = bb[0][0]; b[2 * p][1] = bb[0][1];
                b[2 * p + 1][0] = bb[1][0]; b[2 * p + 1][1] = bb[1][1];
            }
#pragma unroll
            for (int i = 0; i < MI; ++i)
#pragma unroll
                for (int j = 0; j < NI; ++j) mma<KIND>(acc[i][j], a[i], b[j]);
        }
    }
    pn::cp_async_wait<0>();
}

// ---- epilogue helpers ----------------------------------------------------------------------------
__device__ __forceinline__ float activate(float v, int act) {
    if (act == ACT_RELU) return v > 0.f ? v : 0.f;
    if (act == ACT_GELU) return 0.5f * v * (1.f + erff(v * 0.70710678118654752f));
    return v;
}
__device__ __forceinline__ float load_out(const void* c, long long i, int out_kind) {
    if (out_kind == OUT_F32) return reinterpret_cast<const float*>(c)[i];
    const unsigned short h = reinterpret_cast<const unsigned short*>(c)[i];
    if (out_kind == OUT_BF16) return __uint_as_float(static_cast<unsigned>(h) << 16);
    return pn::f16_to_f32(h);
}
// Two 16-bit values packed as (lo = x, hi = y), round to nearest even.
__device__ __forceinline__ unsigned pack2(float x, float y, int out_kind) {
    return out_kind == OUT_BF16 ? pn::pack_bf16x2(x, y) : pn::pack_f16x2(x, y);
}

}  // namespace pn_tc
