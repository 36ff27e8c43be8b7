// The block-tile main loop shared by the SGEMM (sgemm.cu) and the implicit-GEMM convolutions
// (conv.cu). A block of 256 threads computes a 128 x 128 tile of C = A * B (A is P_a x K, B is
// K x P_b; "P" is the outer index of an operand: M for A, N for B).
//
// Tiling and why:
//  * Block tile 128 x 128 x 8: each k-step loads 2 x 128 x 8 floats (8 KiB) and does 128 x 128 x 8
//    FMAs, 64 FMAs per loaded float, enough to keep the FMA pipes busy from shared memory.
//  * Warp tile 64 x 32 (8 warps as 2 x 4), thread tile 8 x 8 held as 2 x 2 sub-tiles of 4 x 4
//    spaced 32 rows / 16 columns apart: per k a thread reads two float4 of A and two of B
//    (LDS.128) for 64 FMAs, and the 8 lanes of a quarter-warp read 8 consecutive float4 of A
//    (no bank conflict) while sharing one float4 of B (broadcast).
//  * Shared tiles are stored k-major, s[k][p] with rows padded to 132 floats: the fragment reads
//    above are contiguous, rows stay 16-byte aligned for cp.async.16, and the transposing loads
//    (below) hit 32 different banks.
//  * 4-stage cp.async pipeline (4 x 2 x 8 x 132 x 4 B = 33 KiB static shared memory, 2 blocks per
//    SM at <= 128 registers): while the warps compute on stage s, the copies of the next three
//    k-tiles are in flight, hiding global latency without staging through registers.
//  * Operand loaders: an operand whose P index is contiguous in memory is copied with 16-byte
//    cp.async (32 lanes along P, one k row per warp) when the base and leading dimension allow it,
//    4-byte copies otherwise; an operand whose K index is contiguous (A not transposed, B
//    transposed) is copied 4 bytes at a time into the transposed place, lanes 8 along K x 4 along
//    P: every 8-lane group reads one full 32-byte sector and the 32 lanes write 32 different banks.
//    Out-of-range elements are zero-filled by the copy itself, so any M, N, K works.
#pragma once
#include "common.cuh"

namespace pn {

constexpr int TILE_M = 128, TILE_N = 128, TILE_K = 8, STAGES = 4, TILE_THREADS = 256;
constexpr int SROW = 132;  // padded shared row (floats)

typedef float SmemTile[TILE_K][SROW];

struct SharedTiles {
  SmemTile a[STAGES];
  SmemTile b[STAGES];
};

// Operand stored as a plain matrix with leading dimension ld. K_CONTIG: element (p, k) at
// base[p * ld + k]; otherwise at base[k * ld + p]. `base` points at the tile's first P index.
template <bool K_CONTIG>
struct MatrixLoader {
  const float* base;
  int p_rem, K, ld;
  bool vec;  // 16-byte copies allowed (P contiguous, base and ld aligned)

  __device__ MatrixLoader(const float* matrix, int p0, int P, int K_, int ld_) : p_rem(P - p0), K(K_), ld(ld_) {
    base = K_CONTIG ? matrix + static_cast<i64>(p0) * ld : matrix + p0;
    vec = !K_CONTIG && (ld % 4 == 0) && ((reinterpret_cast<unsigned long long>(matrix) & 15) == 0);
  }

  __device__ __forceinline__ void load(SmemTile& s, int k0) const {
    const int t = threadIdx.x;
    if (K_CONTIG) {
      const int kk = t & 7, k = k0 + kk;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int p = (t >> 3) + 32 * i;
        const bool ok = p < p_rem && k < K;
        cp_async4(&s[kk][p], ok ? base + static_cast<i64>(p) * ld + k : base, ok);
      }
    } else {
      const int kk = t >> 5, p = (t & 31) * 4, k = k0 + kk;
      const float* row = base + static_cast<i64>(k) * ld;
      if (vec && k < K && p + 3 < p_rem) {
        cp_async16(&s[kk][p], row + p, true);
      } else {
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const bool ok = k < K && p + q < p_rem;
          cp_async4(&s[kk][p + q], ok ? row + p + q : base, ok);
        }
      }
    }
  }
};

// Operand gathered element by element (convolutions). Map provides
//   PInfo prep_p(int p) const;  KInfo prep_k(int k) const;
//   const float* addr(const PInfo&, const KInfo&) const;  // nullptr where the element is zero
//   const float* base;                                     // any valid pointer (for zero-fill)
// P_FAST puts the 32 lanes of a warp along P (choose it when P is the contiguous index in
// memory); otherwise lanes go 8 along K x 4 along P, as for K-contiguous matrices. Each thread
// owns 4 elements per k-tile; the P side of their addresses is computed once per block.
template <bool P_FAST, class Map>
struct GatherLoader {
  typedef typename Map::PInfo PInfo;
  typedef typename Map::KInfo KInfo;
  const Map& map;
  PInfo pinfo[P_FAST ? 1 : 4];

  __device__ GatherLoader(const Map& m, int p0) : map(m) {
    const int t = threadIdx.x;
    if (P_FAST) {
      pinfo[0] = map.prep_p(p0 + (t & 127));
    } else {
#pragma unroll
      for (int i = 0; i < (P_FAST ? 1 : 4); ++i) pinfo[i] = map.prep_p(p0 + (t >> 3) + 32 * i);
    }
  }

  __device__ __forceinline__ void load(SmemTile& s, int k0) const {
    const int t = threadIdx.x;
    if (P_FAST) {
      const int p = t & 127;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int kk = (t >> 7) + 2 * i;
        const float* src = map.addr(pinfo[0], map.prep_k(k0 + kk));
        cp_async4(&s[kk][p], src ? src : map.base, src != nullptr);
      }
    } else {
      const int kk = t & 7;
      const KInfo ki = map.prep_k(k0 + kk);
#pragma unroll
      for (int i = 0; i < (P_FAST ? 1 : 4); ++i) {
        const float* src = map.addr(pinfo[i], ki);
        cp_async4(&s[kk][(t >> 3) + 32 * i], src ? src : map.base, src != nullptr);
      }
    }
  }
};

// Position of this thread's 8 x 8 sub-tile inside the 128 x 128 block tile.
struct ThreadTile {
  int row0, col0;  // first row / column; rows row0 + {0..3, 32..35}, columns col0 + {0..3, 16..19}
  __device__ ThreadTile() {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    row0 = (warp >> 2) * 64 + (lane & 7) * 4;
    col0 = (warp & 3) * 32 + (lane >> 3) * 4;
  }
  __device__ __forceinline__ int row(int i) const { return row0 + (i < 4 ? i : 28 + i); }
  __device__ __forceinline__ int col(int j) const { return col0 + (j < 4 ? j : 12 + j); }
};

// acc += A[:, k_begin:k_end] * B[k_begin:k_end, :] for this block's tile. The loaders index K
// from 0; tiles [kt_begin, kt_end) of TILE_K are processed. Ends with all copies drained.
template <class LoaderA, class LoaderB>
__device__ __forceinline__ void gemm_mainloop(SharedTiles& sm, const LoaderA& la, const LoaderB& lb, int kt_begin,
                                              int kt_end, const ThreadTile& tt, float (&acc)[8][8]) {
  const int ktiles = kt_end - kt_begin;
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < ktiles) {
      la.load(sm.a[s], (kt_begin + s) * TILE_K);
      lb.load(sm.b[s], (kt_begin + s) * TILE_K);
    }
    cp_async_commit();
  }
  for (int kt = 0; kt < ktiles; ++kt) {
    cp_async_wait<STAGES - 2>();
    __syncthreads();  // tile kt has landed for everyone; stage (kt - 1) % STAGES is free again
    const int next = kt + STAGES - 1;
    if (next < ktiles) {
      la.load(sm.a[next % STAGES], (kt_begin + next) * TILE_K);
      lb.load(sm.b[next % STAGES], (kt_begin + next) * TILE_K);
    }
    cp_async_commit();
    const SmemTile& sa = sm.a[kt % STAGES];
    const SmemTile& sb = sm.b[kt % STAGES];
#pragma unroll
    for (int kk = 0; kk < TILE_K; ++kk) {
      const float4 a0 = *reinterpret_cast<const float4*>(&sa[kk][tt.row0]);
      const float4 a1 = *reinterpret_cast<const float4*>(&sa[kk][tt.row0 + 32]);
      const float4 b0 = *reinterpret_cast<const float4*>(&sb[kk][tt.col0]);
      const float4 b1 = *reinterpret_cast<const float4*>(&sb[kk][tt.col0 + 16]);
      const float a[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
      const float b[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
  }
  cp_async_wait<0>();
}

}  // namespace pn
