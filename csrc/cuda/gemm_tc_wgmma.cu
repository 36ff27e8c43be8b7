// Hopper (sm_90a) tensor-core GEMM: TMA -> 128B-swizzled shared memory -> wgmma, with a
// warp-specialised producer/consumer pipeline on mbarriers and a persistent tile scheduler.
//
//   C[M,N] = act( alpha * A @ B^T + beta * C + bias[N] )      A [M,K], B [N,K] row-major, K % 8 == 0
//
// This is the "nt" layout of gemm_tc_mma.cu (a Linear layer's forward x @ W^T): both operands
// K-contiguous, which is the layout wgmma reads from 128B-swizzled shared memory without
// transposition. The other layouts (and K % 8 != 0, misaligned bases) go to the mma.sync kernel;
// pyneural/cuda/tensor_core.py decides. bf16 and fp16 inputs, fp32 accumulation, fp32 / bf16 / fp16
// output with the same fused epilogue (alpha, beta, bias, ReLU / GELU, cast) as gemm_tc_mma.cu.
//
// Design (block = 3 warpgroups = 384 threads, one block per SM, 1 cluster = 1 CTA):
//  * Block tile 128 x 256 x 64. Warpgroup 0 is the producer: after setmaxnreg.dec to 40
//    registers one thread issues, per K step, two TMA tile loads (A box 64 x 128, B box 64 x 256,
//    bf16, CU_TENSOR_MAP_SWIZZLE_128B) into one of STAGES = 4 shared-memory stages of 48 KB and
//    arms that stage's "full" mbarrier with the expected byte count (arrive.expect_tx).
//  * Warpgroups 1 and 2 are consumers (setmaxnreg.inc to 232): consumer c owns rows 64c..64c+63
//    of the tile and all 256 columns, i.e. two wgmma.m64n128k16 per k16 step, 128 fp32
//    accumulators per thread. Per stage: wait "full" (phase parity), 4 x 2 wgmma, commit,
//    wait_group 0, arrive on the stage's "empty" mbarrier (256 arrivals), which the producer waits
//    on before it refills the stage. Parity: the i-th use of stage s waits for phase (i/STAGES)&1
//    on "full"; the producer waits for the opposite parity on "empty", so its first pass through
//    fresh barriers does not block.
//  * Persistent: grid = min(#tiles, #SMs); block b takes tiles b, b + grid, ... in grouped order
//    (8 M-tiles per group, for L2 reuse of B). The producer runs ahead into the next tile while
//    the consumers run the epilogue, so loads overlap the stores.
//  * Shared-memory descriptors: K-major, 128B swizzle (layout type 1 in bits 62-63), stride byte
//    offset 1024 (8 rows x 128 B), leading byte offset unused (16); the k16 step inside the
//    128-byte swizzle row advances the start address by 32 bytes. Stage bases are 1024-aligned,
//    so the swizzle phase of TMA writes and wgmma reads agree.
//  * Edges: TMA fills rows/columns outside M, N, K with zeros (and still counts the full box
//    bytes), the epilogue stores only rows < M and columns < N.
//
// Expected performance at 8192^3 bf16 on H100 SXM (cuBLAS ~790-800 TFLOP/s; a published
// hand-written kernel's steps, which this file follows): TMA + wgmma alone ~490; + producer /
// consumer warp specialisation ~635; + persistent scheduling ~658; + mbarrier phase-parity
// pipelining without __syncthreads ~778 (this file is at this step); + 2-CTA clusters with TMA
// multicast ~800 (not done). Next tuning steps: keep one wgmma group in flight (wait_group 1 and
// release the previous stage), epilogue through shared memory + TMA store, clusters/multicast,
// hint-free mbarrier spins. NOTHING IN THIS FILE HAS RUN ON A GPU YET.
//
// Launch (one place: pyneural/cuda/tensor_core.py): grid = min(tiles, SMs), 384 threads,
// dynamic shared memory SMEM_BYTES (needs cudaFuncAttributeMaxDynamicSharedMemorySize), the two
// tensor maps (cuTensorMapEncodeTiled, 2-D, dims {K, rows}, box {64, 128} / {64, 256},
// SWIZZLE_128B, OOB fill zero) passed by value as __grid_constant__ parameters.
// Compiles for any target; on anything but sm_90a the kernel body is a trap.
// No includes: compiles with nvcc and NVRTC.

#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define PN_TC_WGMMA_ENABLED 1
#else
#define PN_TC_WGMMA_ENABLED 0
#endif

// CUtensorMap: 128 opaque bytes, built on the host by cuTensorMapEncodeTiled.
struct alignas(128) PnTensorMap {
    unsigned long long opaque[16];
};

namespace pn_tc_wgmma {

constexpr int BM = 128, BN = 256, BK = 64, STAGES = 4;
constexpr int CONSUMERS = 2;
constexpr int THREADS = 128 * (CONSUMERS + 1);
constexpr int A_BYTES = BM * BK * 2, B_BYTES = BN * BK * 2;
constexpr int STAGE_BYTES = A_BYTES + B_BYTES;                       // 48 KB
constexpr int SMEM_BYTES = STAGES * STAGE_BYTES + 2 * STAGES * 8 + 1024;  // + barriers + alignment slack
constexpr int GROUP_M = 8;
static_assert(SMEM_BYTES <= 227 * 1024, "stages do not fit in an sm_90 block's shared memory");
static_assert(GROUP_M > 0 && BK * 2 == 128, "a K step must be one 128-byte swizzle row");

enum Kind { BF16 = 0, F16 = 1 };
enum Act { ACT_NONE = 0, ACT_RELU = 1, ACT_GELU = 2 };
enum OutKind { OUT_F32 = 0, OUT_BF16 = 1, OUT_F16 = 2 };
enum Flags { C_PAIR = 4 };

#if PN_TC_WGMMA_ENABLED

__device__ __forceinline__ unsigned smem_u32(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// ---- mbarrier --------------------------------------------------------------------------------
__device__ __forceinline__ void mbar_init(unsigned bar, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_expect_tx(unsigned bar, unsigned bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(unsigned bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_wait(unsigned bar, unsigned parity) {
    unsigned done = 0;
    while (!done) {
        asm volatile(
            "{\n.reg .pred p;\n"
            "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
            "selp.u32 %0, 1, 0, p;\n}\n"
            : "=r"(done)
            : "r"(bar), "r"(parity)
            : "memory");
    }
}

// ---- TMA ---------------------------------------------------------------------------------------
__device__ __forceinline__ void tma_load_2d(unsigned dst, const PnTensorMap* map, int x, int y, unsigned bar) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
        " [%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
        "l"(reinterpret_cast<unsigned long long>(map)), "r"(x), "r"(y), "r"(bar)
        : "memory");
}
__device__ __forceinline__ void tma_prefetch(const PnTensorMap* map) {
    asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<unsigned long long>(map)) : "memory");
}

// ---- wgmma -------------------------------------------------------------------------------------
// K-major operand in 128B-swizzled shared memory: start >> 4, LBO 16 B (unused), SBO 1024 B.
__device__ __forceinline__ unsigned long long smem_desc(unsigned addr) {
    return static_cast<unsigned long long>((addr & 0x3FFFF) >> 4) | (1ull << 16) | (64ull << 32) | (1ull << 62);
}
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Keeps the compiler from moving accumulator reads/writes across the asynchronous wgmma.
__device__ __forceinline__ void fence_acc(float (&d)[64]) {
#pragma unroll
    for (int i = 0; i < 64; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

#define PN_WGMMA_D64                                                                                          \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, "  \
    "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, "    \
    "%42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, "    \
    "%62, %63}"
#define PN_WGMMA_OPS64(d)                                                                                     \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),          \
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]),          \
        "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]),          \
        "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]),          \
        "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]),          \
        "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]),          \
        "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]),          \
        "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])

// d[64 x 128 tile of this warpgroup] += A(64 x 16, desc) * B(128 x 16, desc)^T
template <int KIND>
__device__ __forceinline__ void wgmma_m64n128k16(float (&d)[64], unsigned long long da, unsigned long long db) {
    const int one = 1;
    if (KIND == BF16) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " PN_WGMMA_D64
                     ", %64, %65, p, 1, 1, 0, 0;\n}\n"
                     : PN_WGMMA_OPS64(d)
                     : "l"(da), "l"(db), "r"(one));
    } else {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 " PN_WGMMA_D64
                     ", %64, %65, p, 1, 1, 0, 0;\n}\n"
                     : PN_WGMMA_OPS64(d)
                     : "l"(da), "l"(db), "r"(one));
    }
}

// ---- epilogue (same contract as gemm_tc_mma.cu) ---------------------------------------------------
__device__ __forceinline__ float activate(float v, int act) {
    if (act == ACT_RELU) return v > 0.f ? v : 0.f;
    if (act == ACT_GELU) return 0.5f * v * (1.f + erff(v * 0.70710678118654752f));
    return v;
}
__device__ __forceinline__ float load_out(const void* c, long long i, int out_kind) {
    if (out_kind == OUT_F32) return reinterpret_cast<const float*>(c)[i];
    const unsigned short h = reinterpret_cast<const unsigned short*>(c)[i];
    if (out_kind == OUT_BF16) return __uint_as_float(static_cast<unsigned>(h) << 16);
    float f;
    asm("cvt.f32.f16 %0, %1;\n" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ unsigned pack2(float x, float y, int out_kind) {  // lo = x, hi = y
    unsigned r;
    if (out_kind == OUT_BF16) asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(y), "f"(x));
    else asm("cvt.rn.f16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(y), "f"(x));
    return r;
}
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
            asm volatile("st.global.v2.f32 [%0], {%1,%2};\n" ::"l"(o), "f"(v0), "f"(v1) : "memory");
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

// tile index -> (m0, n0), grouped so that GROUP_M consecutive tiles share one B panel
__device__ __forceinline__ void tile_origin(int tile, int tiles_m, int tiles_n, int& m0, int& n0) {
    const int per_group = GROUP_M * tiles_n;
    const int first_m = (tile / per_group) * GROUP_M;
    const int rows = min(tiles_m - first_m, GROUP_M);
    m0 = (first_m + (tile % per_group) % rows) * BM;
    n0 = ((tile % per_group) / rows) * BN;
}

template <int KIND>
__device__ __forceinline__ void gemm(const PnTensorMap* map_a, const PnTensorMap* map_b, void* C, const float* bias,
                                     int M, int N, int K, int ldc, float alpha, float beta, int act, int out_kind,
                                     int flags) {
    extern __shared__ __align__(1024) unsigned char smem[];
    const unsigned tiles_base = (smem_u32(smem) + 1023u) & ~1023u;  // 128B swizzle wants 1024-aligned stages
    const unsigned full_bar = tiles_base + STAGES * STAGE_BYTES, empty_bar = full_bar + 8 * STAGES;

    if (threadIdx.x == 0) {
        for (int s = 0; s < STAGES; ++s) {
            mbar_init(full_bar + 8 * s, 1);                  // the producer's expect_tx arrival (+ bytes)
            mbar_init(empty_bar + 8 * s, CONSUMERS * 128);   // every consumer thread
        }
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    }
    __syncthreads();  // the only block-wide barrier: roles diverge below

    const int tiles_m = (M + BM - 1) / BM, tiles_n = (N + BN - 1) / BN, tiles = tiles_m * tiles_n;
    const int k_tiles = (K + BK - 1) / BK;
    const int wg = threadIdx.x / 128, t128 = threadIdx.x % 128;

    if (wg == 0) {  // ---------------- producer ----------------
        asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n" ::: "memory");
        if (t128 == 0) {
            tma_prefetch(map_a);
            tma_prefetch(map_b);
            int it = 0;
            for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
                int m0, n0;
                tile_origin(tile, tiles_m, tiles_n, m0, n0);
                for (int kt = 0; kt < k_tiles; ++kt, ++it) {
                    const int s = it % STAGES;
                    const unsigned phase = (it / STAGES) & 1;
                    mbar_wait(empty_bar + 8 * s, phase ^ 1);  // consumers released this stage
                    const unsigned sa = tiles_base + s * STAGE_BYTES, fb = full_bar + 8 * s;
                    mbar_expect_tx(fb, STAGE_BYTES);
                    tma_load_2d(sa, map_a, kt * BK, m0, fb);
                    tma_load_2d(sa + A_BYTES, map_b, kt * BK, n0, fb);
                }
            }
        }
    } else {  // ---------------- consumers ----------------
        asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n" ::: "memory");
        const int c = wg - 1;
        const int warp = t128 >> 5, lane = t128 & 31, g = lane >> 2, t = lane & 3;
        const bool pair_ok = flags & C_PAIR;
        int it = 0;
        for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
            int m0, n0;
            tile_origin(tile, tiles_m, tiles_n, m0, n0);
            float d[BN / 128][64];
#pragma unroll
            for (int h = 0; h < BN / 128; ++h)
#pragma unroll
                for (int i = 0; i < 64; ++i) d[h][i] = 0.f;

            for (int kt = 0; kt < k_tiles; ++kt, ++it) {
                const int s = it % STAGES;
                mbar_wait(full_bar + 8 * s, (it / STAGES) & 1);
                const unsigned sa = tiles_base + s * STAGE_BYTES + c * (64 * 128);  // this consumer's 64 rows
                const unsigned sb = tiles_base + s * STAGE_BYTES + A_BYTES;
                wgmma_fence();
#pragma unroll
                for (int kk = 0; kk < BK / 16; ++kk)
#pragma unroll
                    for (int h = 0; h < BN / 128; ++h)
                        wgmma_m64n128k16<KIND>(d[h], smem_desc(sa + kk * 32), smem_desc(sb + h * (128 * 128) + kk * 32));
                wgmma_commit();
                wgmma_wait<0>();
#pragma unroll
                for (int h = 0; h < BN / 128; ++h) fence_acc(d[h]);
                mbar_arrive(empty_bar + 8 * s);
            }

            // accumulator layout (m64nNk16, f32): warp w holds rows 16w + g and 16w + g + 8;
            // d[4j + 0, 1] -> row g, columns 8j + 2t, +1; d[4j + 2, 3] -> row g + 8
            const int row0 = m0 + c * 64 + warp * 16 + g;
#pragma unroll
            for (int h = 0; h < BN / 128; ++h)
#pragma unroll
                for (int j = 0; j < 16; ++j) {
                    const int col = n0 + h * 128 + j * 8 + 2 * t;
                    if (col >= N) continue;
#pragma unroll
                    for (int r = 0; r < 2; ++r) {
                        const int row = row0 + r * 8;
                        if (row < M)
                            store_pair(C, bias, N, ldc, row, col, d[h][4 * j + 2 * r], d[h][4 * j + 2 * r + 1],
                                       alpha, beta, act, out_kind, pair_ok);
                    }
                }
        }
    }
}

#endif  // PN_TC_WGMMA_ENABLED

}  // namespace pn_tc_wgmma

#if PN_TC_WGMMA_ENABLED
#define PN_TC_WGMMA_BODY(KIND) \
    pn_tc_wgmma::gemm<KIND>(&map_a, &map_b, C, bias, M, N, K, ldc, alpha, beta, act, out_kind, flags);
#else
#define PN_TC_WGMMA_BODY(KIND) __trap();  // built for a target without wgmma: never launched there
#endif

#define PN_TC_WGMMA_KERNEL(NAME, KIND)                                                                      \
    extern "C" __global__ void __launch_bounds__(pn_tc_wgmma::THREADS, 1)                                   \
        NAME(const __grid_constant__ PnTensorMap map_a, const __grid_constant__ PnTensorMap map_b, void* C, \
             const float* bias, int M, int N, int K, int ldc, float alpha, float beta, int act, int out_kind,  \
             int flags) {                                                                                    \
        PN_TC_WGMMA_BODY(KIND)                                                                               \
    }

PN_TC_WGMMA_KERNEL(pn_tc_wgmma_bf16_nt, pn_tc_wgmma::BF16)
PN_TC_WGMMA_KERNEL(pn_tc_wgmma_f16_nt, pn_tc_wgmma::F16)
