// 2-D convolution on the tensor cores (sm_80+): bf16 / fp16 implicit GEMM with mma.sync m16n8k16,
// fp32 accumulation, fp32 or 16-bit output. Forward (fused bias + ReLU), backward-data and
// backward-weight; NCHW and NHWC (channels_last); any stride / padding / dilation / groups. No
// im2col buffer: the stage loaders gather the operands straight from the tensors.
//
// Layouts. NCHW: x (N, C, H, W), w (OC, C/G, KH, KW) [OIHW], y (N, OC, OH, OW).
//          NHWC: x (N, H, W, C), w (OC, KH, KW, C/G) [OHWI], y (N, OH, OW, OC).
// Per group g (blockIdx.z), Cg = C/G, OCg = OC/G, "pix" a flattened (n, oh, ow) of the output and
// "ipix" one of the input, a tap t = (c, kh, kw) for NCHW and (kh, kw, c) for NHWC (the weight's
// own order: its fastest index is the one contiguous in memory). The three GEMMs, laid out so that
// the output's contiguous index is the GEMM's N (accumulators come in column pairs: paired stores):
//   forward         NCHW  y[oc, pix]   = W[oc, t]     x_col[t, pix]     M=OCg   N=N*OH*OW  K=Cg*KH*KW
//                   NHWC  y[pix, oc]   = x_col[pix,t] W[oc, t]^T        M=N*OH*OW  N=OCg   K=Cg*KH*KW
//   backward-data   NCHW  dx[c, ipix]  = W^T[c, t']   dy_col[t', ipix]  M=Cg    N=N*H*W    K=OCg*KH*KW
//                   NHWC  dx[ipix, c]  = dy_col[ipix, t'] W[t', c]      M=N*H*W N=Cg       K=OCg*KH*KW
//   backward-weight both  dw[oc, t]    = dy[oc, pix]  x_col[pix, t]     M=OCg   N=Cg*KH*KW K=N*OH*OW
// with t' = (oc, kh, kw) / (kh, kw, oc) and dy_col[t', ipix] = dy at the output position whose tap
// t' reads input pixel ipix (zero where the stride skips it or it falls outside the output).
// Backward-weight has a small M x N and a huge K: it splits K over gridDim.z / G slices that add
// atomically into a zeroed fp32 dw (the launcher zeroes it); one slice stores plainly, deterministic.
//
// Tiling: the mma.sync block tile of gemm_tc_tile.cuh (128 x 128, BK = 32, warp tile 64 x 32,
// PN_TC_STAGES = 3 cp.async stages, 48 KB, XOR-swizzled 16-byte chunks, ldmatrix / .trans
// fragments). Each operand tile keeps the orientation of its contiguous index: K-major when that
// is k (NHWC activations: channels; the weights in forward), MN-major when it is m or n (NCHW
// activations: pixels). A Map (below) gives an operand's element address for (mn, k), with the
// per-block mn side (pixel decomposition, image pointer) cached by the loader and the k side
// recomputed per k-tile with multiply-shift division. Per 16-byte chunk (8 elements along the
// contiguous index) the Map says:
//   VEC   the 8 elements are contiguous, inside the tensor and 16-byte aligned: one cp.async;
//         always the case for NHWC when Cg (and OCg) are multiples of 8 and the base is aligned;
//         for NCHW when 8 consecutive pixels of one output row read one aligned run (stride 1,
//         the tap inside the image, e.g. 1x1 convolutions with W % 8 == 0);
//   ZERO  all 8 outside (padding, ragged edges): a 16-byte zero store;
//   MIXED otherwise: 8 element loads with bounds checks, zero-filled, one 16-byte store.
// Plain shared stores and cp.async share a stage safely: the stage being filled was released
// by the main loop's barrier, and the next barrier orders the stores before any fragment load.
//
// Napkin math, H200 (dense bf16 peak ~989 TFLOP/s, HBM ~4.8 TB/s, 132 SMs), ResNet-50 at batch 32,
// NHWC, bf16 in / bf16 out:
//  * 3x3 56x56 64->64: 2*100352*64*576 = 7.4 GFLOP (7.5 us at peak); x 12.8 MB + y 12.8 MB
//    = 5.4 us of HBM: compute-bound, but OCg = 64 fills half of a 128-wide tile, so at most half
//    of the issued mma is useful: >= 15 us.
//  * 3x3 7x7 512->512: 7.4 GFLOP on 13 x 4 = 52 tiles: 52 of 132 SMs busy (no split-K in
//    forward), so <= 39% of the mma.sync rate.
//  * 1x1 56x56 64->256: 3.3 GFLOP (3.3 us) against 12.8 MB + 51 MB (fp32 output: 103 MB) =
//    13 us (24 us) of HBM: memory-bound, K = 64 is two k-tiles.
// mma.sync on Hopper issues at roughly 0.6x the wgmma peak (the GEMM's notes), so a whole-network
// expectation is ~0.3-0.5x cuDNN; bench/NOTES.md has the per-layer prediction.
//
// Launch (one place: pyneural/cuda/conv_tc.py): grid (ceil(M/128) * ceil(N/128), 1, G * splits),
// 256 threads, dynamic shared memory PN_TC_STAGES * 16384 bytes. All kernels take one argument list.
#include "gemm_tc_tile.cuh"

namespace pn_conv_tc {

using namespace pn_tc;
using pn::FastDiv;
using pn::i64;
typedef unsigned short u16;

struct Dims {
    int N, C, H, W, OC, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw, G, Cg, OCg;
};

enum Chunk { CHUNK_ZERO = 0, CHUNK_VEC = 1, CHUNK_MIXED = 2 };

__device__ __forceinline__ bool aligned16(const void* p) {
    return (reinterpret_cast<unsigned long long>(p) & 15ull) == 0;
}
// A chunk known to be all inside (and contiguous) or all outside; `first` is its first element.
__device__ __forceinline__ int whole_chunk(const u16* first, const u16*& src) {
    src = first;
    if (first == nullptr) return CHUNK_ZERO;
    return aligned16(first) ? CHUNK_VEC : CHUNK_MIXED;
}

template <bool B, class T, class F> struct Pick { typedef T type; };
template <class T, class F> struct Pick<false, T, F> { typedef F type; };

// ---- operand maps ---------------------------------------------------------------------------------
// Each: K_MAJOR (the contiguous index is k), MnInfo mn_info(int), KInfo k_info(int),
// const u16* at(MnInfo, KInfo) (nullptr: the element is zero), int chunk(MnInfo, KInfo, src) for
// the 8 elements from (mn, k) along the contiguous index (chunks start at multiples of 8).

// A row-major matrix: element (mn, k) at base[mn * ld + k] (K_MAJOR) or base[k * ld + mn].
template <bool K_MAJ>
struct PlainMap {
    static constexpr bool K_MAJOR = K_MAJ;
    struct MnInfo { int mn; };
    struct KInfo { int k; };
    const u16* base;
    int ld, MN, K;
    bool vec;  // chunks never straddle the edge or a row
    __device__ PlainMap(const u16* b, int ld_, int mn, int k)
        : base(b), ld(ld_), MN(mn), K(k), vec(ld_ % 8 == 0 && (K_MAJ ? k : mn) % 8 == 0) {}
    __device__ MnInfo mn_info(int mn) const { MnInfo r; r.mn = mn; return r; }
    __device__ KInfo k_info(int k) const { KInfo r; r.k = k; return r; }
    __device__ const u16* at(const MnInfo& m, const KInfo& k) const {
        if (m.mn >= MN || k.k >= K) return nullptr;
        return base + (K_MAJ ? static_cast<i64>(m.mn) * ld + k.k : static_cast<i64>(k.k) * ld + m.mn);
    }
    __device__ int chunk(const MnInfo& m, const KInfo& k, const u16*& src) const {
        if (!vec) { src = nullptr; return CHUNK_MIXED; }
        return whole_chunk(at(m, k), src);
    }
};

// x_col: element (pix, tap) = x[n, ih, iw, c] with ih = oh*sh - ph + kh*dh, iw likewise. The pixel
// is the GEMM's mn index (forward) or its k (backward-weight); contiguous: c (NHWC), pixels (NCHW).
template <bool NHWC, bool PIX_IS_MN>
struct ImageMap {
    static constexpr bool K_MAJOR = (NHWC == PIX_IS_MN);
    struct Pix { const u16* img; int ih0, iw0, ow; };  // img == nullptr: past the last pixel
    struct Tap { int off, kh, kw; bool ok; };          // off: c (NHWC) or c*H*W (NCHW)
    typedef typename Pick<PIX_IS_MN, Pix, Tap>::type MnInfo;
    typedef typename Pick<PIX_IS_MN, Tap, Pix>::type KInfo;
    const u16* base;
    Dims d;
    int taps, npix;
    FastDiv div_ohw, div_ow, div_t1, div_t2;  // taps: NHWC by KW*Cg, Cg; NCHW by KH*KW, KW
    __device__ ImageMap(const void* x, const Dims& d_, int g)
        : d(d_), taps(d_.Cg * d_.KH * d_.KW), npix(d_.N * d_.OH * d_.OW), div_ohw(d_.OH * d_.OW), div_ow(d_.OW),
          div_t1(NHWC ? d_.KW * d_.Cg : d_.KH * d_.KW), div_t2(NHWC ? d_.Cg : d_.KW) {
        base = static_cast<const u16*>(x) + static_cast<i64>(g) * d.Cg * (NHWC ? 1 : d.H * d.W);
    }
    __device__ void prep(int p, Pix& r) const {
        int rem, ow;
        const int n = div_ohw.divmod(p, rem), oh = div_ow.divmod(rem, ow);
        r.img = p < npix ? base + static_cast<i64>(n) * d.C * d.H * d.W : nullptr;
        r.ih0 = oh * d.sh - d.ph;
        r.iw0 = ow * d.sw - d.pw;
        r.ow = ow;
    }
    __device__ void prep(int t, Tap& r) const {
        int rem, b;
        const int a = div_t1.divmod(t, rem), c2 = div_t2.divmod(rem, b);
        if (NHWC) { r.kh = a * d.dh; r.kw = c2 * d.dw; r.off = b; }
        else { r.off = a * d.H * d.W; r.kh = c2 * d.dh; r.kw = b * d.dw; }
        r.ok = t < taps;
    }
    __device__ MnInfo mn_info(int i) const { MnInfo r; prep(i, r); return r; }
    __device__ KInfo k_info(int i) const { KInfo r; prep(i, r); return r; }
    __device__ const u16* at(const Pix& p, const Tap& t) const {
        const int ih = p.ih0 + t.kh, iw = p.iw0 + t.kw;
        if (p.img == nullptr || !t.ok || static_cast<unsigned>(ih) >= static_cast<unsigned>(d.H) ||
            static_cast<unsigned>(iw) >= static_cast<unsigned>(d.W))
            return nullptr;
        return NHWC ? p.img + static_cast<i64>(ih * d.W + iw) * d.C + t.off : p.img + t.off + ih * d.W + iw;
    }
    __device__ const u16* at(const Tap& t, const Pix& p) const { return at(p, t); }
    __device__ int chunk(const Pix& p, const Tap& t, const u16*& src) const {
        if (NHWC) {  // 8 channels of one tap of one pixel
            if (d.Cg % 8 != 0) { src = nullptr; return CHUNK_MIXED; }
            return whole_chunk(at(p, t), src);
        }
        src = nullptr;  // NCHW: 8 consecutive output pixels, one tap
        if (p.img == nullptr || !t.ok) return CHUNK_ZERO;
        if (d.sw != 1 || p.ow + 8 > d.OW) return CHUNK_MIXED;  // not one run of one input row
        const int ih = p.ih0 + t.kh, iw = p.iw0 + t.kw;
        if (static_cast<unsigned>(ih) >= static_cast<unsigned>(d.H) || iw + 8 <= 0 || iw >= d.W) return CHUNK_ZERO;
        if (iw < 0 || iw + 8 > d.W) return CHUNK_MIXED;
        src = p.img + t.off + ih * d.W + iw;
        return aligned16(src) ? CHUNK_VEC : CHUNK_MIXED;
    }
    __device__ int chunk(const Tap& t, const Pix& p, const u16*& src) const { return chunk(p, t, src); }
};

// dy_col (backward-data): element (ipix, tap') = dy[n, oh, ow, oc] where oh*sh = ih + ph - kh*dh
// and ow*sw likewise divide exactly and land inside the output. The input pixel is always mn.
template <bool NHWC>
struct GradImageMap {
    static constexpr bool K_MAJOR = NHWC;               // contiguous: oc (NHWC), pixels (NCHW)
    struct MnInfo { const u16* img; int ihp, iwp, iw; };  // ih + ph, iw + pw
    struct KInfo { int off, kh, kw; bool ok; };          // off: oc (NHWC) or oc*OH*OW (NCHW)
    const u16* base;
    Dims d;
    int taps, npix;
    FastDiv div_hw, div_w, div_t1, div_t2, div_sh, div_sw;
    __device__ GradImageMap(const void* dy, const Dims& d_, int g)
        : d(d_), taps(d_.OCg * d_.KH * d_.KW), npix(d_.N * d_.H * d_.W), div_hw(d_.H * d_.W), div_w(d_.W),
          div_t1(NHWC ? d_.KW * d_.OCg : d_.KH * d_.KW), div_t2(NHWC ? d_.OCg : d_.KW), div_sh(d_.sh),
          div_sw(d_.sw) {
        base = static_cast<const u16*>(dy) + static_cast<i64>(g) * d.OCg * (NHWC ? 1 : d.OH * d.OW);
    }
    __device__ MnInfo mn_info(int q) const {
        MnInfo r;
        int rem, iw;
        const int n = div_hw.divmod(q, rem), ih = div_w.divmod(rem, iw);
        r.img = q < npix ? base + static_cast<i64>(n) * d.OC * d.OH * d.OW : nullptr;
        r.ihp = ih + d.ph;
        r.iwp = iw + d.pw;
        r.iw = iw;
        return r;
    }
    __device__ KInfo k_info(int t) const {
        KInfo r;
        int rem, b;
        const int a = div_t1.divmod(t, rem), c2 = div_t2.divmod(rem, b);
        if (NHWC) { r.kh = a * d.dh; r.kw = c2 * d.dw; r.off = b; }
        else { r.off = a * d.OH * d.OW; r.kh = c2 * d.dh; r.kw = b * d.dw; }
        r.ok = t < taps;
        return r;
    }
    __device__ const u16* at(const MnInfo& p, const KInfo& t) const {
        const int th = p.ihp - t.kh, tw = p.iwp - t.kw;  // oh * sh, ow * sw when the tap hits
        if (p.img == nullptr || !t.ok || th < 0 || tw < 0) return nullptr;
        int rh, rw;
        const int oh = div_sh.divmod(th, rh), ow = div_sw.divmod(tw, rw);
        if (rh != 0 || rw != 0 || oh >= d.OH || ow >= d.OW) return nullptr;
        return NHWC ? p.img + static_cast<i64>(oh * d.OW + ow) * d.OC + t.off : p.img + t.off + oh * d.OW + ow;
    }
    __device__ int chunk(const MnInfo& p, const KInfo& t, const u16*& src) const {
        if (NHWC) {  // 8 output channels of one tap
            if (d.OCg % 8 != 0) { src = nullptr; return CHUNK_MIXED; }
            return whole_chunk(at(p, t), src);
        }
        src = nullptr;  // NCHW: 8 consecutive input pixels of one row; with sw == 1, 8 consecutive ow
        if (p.img == nullptr || !t.ok) return CHUNK_ZERO;
        if (d.sw != 1 || p.iw + 8 > d.W) return CHUNK_MIXED;
        const int th = p.ihp - t.kh, ow = p.iwp - t.kw;
        if (th < 0) return CHUNK_ZERO;
        int rh;
        const int oh = div_sh.divmod(th, rh);
        if (rh != 0 || oh >= d.OH || ow + 8 <= 0 || ow >= d.OW) return CHUNK_ZERO;
        if (ow < 0 || ow + 8 > d.OW) return CHUNK_MIXED;
        src = p.img + t.off + oh * d.OW + ow;
        return aligned16(src) ? CHUNK_VEC : CHUNK_MIXED;
    }
};

// dy as backward-weight's A for NCHW: element (oc, pix) = dy[n, oc, rem]; contiguous: pixels (k).
struct OutGradMap {
    static constexpr bool K_MAJOR = true;
    struct MnInfo { int off; bool ok; };     // oc * OH*OW
    struct KInfo { const u16* img; int rem; };
    const u16* base;
    int OCg, OC, OHOW, npix;
    FastDiv div_ohw;
    __device__ OutGradMap(const void* dy, const Dims& d, int g)
        : OCg(d.OCg), OC(d.OC), OHOW(d.OH * d.OW), npix(d.N * d.OH * d.OW), div_ohw(d.OH * d.OW) {
        base = static_cast<const u16*>(dy) + static_cast<i64>(g) * d.OCg * OHOW;
    }
    __device__ MnInfo mn_info(int oc) const { MnInfo r; r.off = oc * OHOW; r.ok = oc < OCg; return r; }
    __device__ KInfo k_info(int p) const {
        KInfo r;
        const int n = div_ohw.divmod(p, r.rem);
        r.img = p < npix ? base + static_cast<i64>(n) * OC * OHOW : nullptr;
        return r;
    }
    __device__ const u16* at(const MnInfo& m, const KInfo& k) const {
        return (m.ok && k.img != nullptr) ? k.img + m.off + k.rem : nullptr;
    }
    __device__ int chunk(const MnInfo& m, const KInfo& k, const u16*& src) const {
        src = nullptr;
        if (!m.ok || k.img == nullptr) return CHUNK_ZERO;
        if (k.rem + 8 > OHOW) return CHUNK_MIXED;  // the run crosses into the next image
        src = k.img + m.off + k.rem;
        return aligned16(src) ? CHUNK_VEC : CHUNK_MIXED;
    }
};

// W^T for backward-data: element (c, tap') = w[oc, c, kh, kw] (OIHW, tap' = (oc, kh, kw)) or
// w[oc, kh, kw, c] (OHWI, tap' = (kh, kw, oc)). mn = c; contiguous in c for OHWI (and for OIHW
// only when KH*KW == 1), so the tile is MN-major.
template <bool NHWC>
struct WeightTMap {
    static constexpr bool K_MAJOR = false;
    struct MnInfo { int c; };
    struct KInfo { int off; bool ok; };
    const u16* base;
    int Cg, KHKW, taps, c_stride;
    FastDiv div_t;  // NCHW: by KH*KW -> (oc, r); NHWC: by OCg -> (r, oc)
    __device__ WeightTMap(const void* w, const Dims& d, int g)
        : Cg(d.Cg), KHKW(d.KH * d.KW), taps(d.OCg * d.KH * d.KW), c_stride(NHWC ? 1 : d.KH * d.KW),
          div_t(NHWC ? d.OCg : d.KH * d.KW) {
        base = static_cast<const u16*>(w) + static_cast<i64>(g) * d.OCg * d.Cg * d.KH * d.KW;
    }
    __device__ MnInfo mn_info(int c) const { MnInfo r; r.c = c; return r; }
    __device__ KInfo k_info(int t) const {
        KInfo r;
        int b;
        const int a = div_t.divmod(t, b);
        r.off = NHWC ? (b * KHKW + a) * Cg : a * Cg * KHKW + b;
        r.ok = t < taps;
        return r;
    }
    __device__ const u16* at(const MnInfo& m, const KInfo& k) const {
        return (m.c < Cg && k.ok) ? base + k.off + m.c * c_stride : nullptr;
    }
    __device__ int chunk(const MnInfo& m, const KInfo& k, const u16*& src) const {
        if (c_stride != 1 || Cg % 8 != 0) { src = nullptr; return CHUNK_MIXED; }
        return whole_chunk(at(m, k), src);
    }
};

// ---- global -> shared: one operand's tile for one stage -----------------------------------------------
// The thread -> chunk assignment of gemm_tc_mma.cu's load_tile: K-major, rows r and r + 64
// (r = tid / 4), chunk tid % 4; MN-major, rows r and r + 16 (r = tid / 16), chunk tid % 16.
template <class Map>
struct TileLoader {
    typedef typename Map::MnInfo MnInfo;
    typedef typename Map::KInfo KInfo;
    static constexpr bool K_MAJOR = Map::K_MAJOR;
    const Map& map;
    int mn_first;                   // K-major: this thread's first row; MN-major: its chunk's first column
    MnInfo mn[K_MAJOR ? 2 : 1];     // cached for the whole block

    __device__ TileLoader(const Map& m, int mn0) : map(m) {
        if (K_MAJOR) {
            mn_first = mn0 + (threadIdx.x >> 2);
#pragma unroll
            for (int i = 0; i < (K_MAJOR ? 2 : 1); ++i) mn[i] = map.mn_info(mn_first + 64 * i);
        } else {
            mn_first = mn0 + (threadIdx.x & 15) * 8;
            mn[0] = map.mn_info(mn_first);
        }
    }

    __device__ __forceinline__ void load(unsigned s_tile, int k0) const {
        if (K_MAJOR) {
            const int r = threadIdx.x >> 2, c = threadIdx.x & 3, k = k0 + c * 8;
            const KInfo ki = map.k_info(k);
#pragma unroll
            for (int i = 0; i < (K_MAJOR ? 2 : 1); ++i)
                put(s_tile + off_kmajor(r + 64 * i, c), mn[i], ki, mn_first + 64 * i, k);
        } else {
            const int r = threadIdx.x >> 4, c = threadIdx.x & 15;
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                const int k = k0 + r + 16 * i;
                put(s_tile + off_mnmajor<BF16>(r + 16 * i, c), mn[0], map.k_info(k), mn_first, k);
            }
        }
    }

    // One 16-byte chunk: (mn, k) is its first element, the other 7 follow along the contiguous index.
    __device__ __forceinline__ void put(unsigned dst, const MnInfo& mi, const KInfo& ki, int mn, int k) const {
        const u16* src;
        const int kind = map.chunk(mi, ki, src);
        if (kind == CHUNK_VEC) {
            pn::cp_async16(dst, src, true);
            return;
        }
        unsigned w[4] = {0u, 0u, 0u, 0u};
        if (kind == CHUNK_MIXED) {
#pragma unroll
            for (int e = 0; e < 8; ++e) {
                const u16* p = K_MAJOR ? map.at(mi, map.k_info(k + e)) : map.at(map.mn_info(mn + e), ki);
                if (p != nullptr) w[e >> 1] |= static_cast<unsigned>(*p) << (16 * (e & 1));
            }
        }
        pn::sts128(dst, w);
    }
};

// ---- registers -> global ----------------------------------------------------------------------------
struct Epilogue {
    void* out;
    const float* bias;  // per output channel, or nullptr
    int out_kind, relu;
    bool atomic;        // split-K backward-weight: fp32 atomicAdd into a zeroed output
    bool pair_aligned;  // the output base allows paired stores (8 bytes fp32, 4 bytes 16-bit)
    __device__ Epilogue(void* o, const float* b, int kind, int r, bool at)
        : out(o), bias(b), out_kind(kind), relu(r), atomic(at) {
        const unsigned long long a = reinterpret_cast<unsigned long long>(o);
        pair_aligned = (a & (kind == OUT_F32 ? 7ull : 3ull)) == 0;
    }
};

// Output element (row, col) at out[row * ld + off + col]: NHWC activations (rows pixels, columns
// channels from `off`) and dw (rows output channels of the group, columns taps).
struct RowMajorOut {
    int ld, off;
    __device__ RowMajorOut(int ld_, int off_) : ld(ld_), off(off_) {}
    __device__ i64 index(int row, int col) const { return static_cast<i64>(row) * ld + off + col; }
    __device__ int channel(int, int col) const { return off + col; }
};
// NCHW activations: rows channels from `off` (of `channels`), columns pixels of P-pixel images.
struct ImageOut {
    int P, channels, off;
    FastDiv div_p;
    __device__ ImageOut(int P_, int channels_, int off_) : P(P_), channels(channels_), off(off_), div_p(P_) {}
    __device__ i64 index(int row, int col) const {
        int rem;
        const int n = div_p.divmod(col, rem);
        return (static_cast<i64>(n) * channels + off + row) * P + rem;
    }
    __device__ int channel(int row, int) const { return off + row; }
};

template <class Out>
__device__ __forceinline__ void store2(const Out& o, const Epilogue& ep, int row, int col, bool has1, float v0,
                                       float v1) {
    const i64 i0 = o.index(row, col), i1 = has1 ? o.index(row, col + 1) : i0;
    if (ep.bias != nullptr) {
        v0 += ep.bias[o.channel(row, col)];
        if (has1) v1 += ep.bias[o.channel(row, col + 1)];
    }
    if (ep.relu) { v0 = activate(v0, ACT_RELU); v1 = activate(v1, ACT_RELU); }
    const bool pair = has1 && i1 == i0 + 1 && (i0 & 1) == 0 && ep.pair_aligned;
    if (ep.atomic) {
        float* y = static_cast<float*>(ep.out);
        atomicAdd(y + i0, v0);
        if (has1) atomicAdd(y + i1, v1);
    } else if (ep.out_kind == OUT_F32) {
        float* y = static_cast<float*>(ep.out);
        if (pair) {
            pn::stg64(y + i0, v0, v1);
        } else {
            y[i0] = v0;
            if (has1) y[i1] = v1;
        }
    } else {
        const unsigned p = pack2(v0, v1, ep.out_kind);
        u16* y = static_cast<u16*>(ep.out);
        if (pair) {
            *reinterpret_cast<unsigned*>(y + i0) = p;
        } else {
            y[i0] = static_cast<u16>(p & 0xffffu);
            if (has1) y[i1] = static_cast<u16>(p >> 16);
        }
    }
}

// ---- one block: tile of the implicit GEMM ----------------------------------------------------------
template <int KIND, class MapA, class MapB, class Out>
__device__ __forceinline__ void implicit_gemm(const MapA& amap, const MapB& bmap, int M, int N, int kt_begin,
                                              int kt_end, const Out& out, const Epilogue& ep) {
    const unsigned s_base = pn::smem_u32(pn::dynamic_smem());
    int tile_m, tile_n;
    raster(blockIdx.x, (M + BM - 1) / BM, (N + BN - 1) / BN, tile_m, tile_n);
    const int m0 = tile_m * BM, n0 = tile_n * BN;
    const TileLoader<MapA> la(amap, m0);
    const TileLoader<MapB> lb(bmap, n0);
    float acc[MI][NI][4];
    zero(acc);
    auto load_stage = [&](unsigned s, int kt) {
        la.load(s, kt * Elem<KIND>::BK);
        lb.load(s + TILE_BYTES, kt * Elem<KIND>::BK);
    };
    mainloop<KIND, MapA::K_MAJOR, MapB::K_MAJOR>(s_base, kt_begin, kt_end, load_stage, acc);

    // accumulator (i, j) holds rows g, g+8 and columns 2t, 2t+1 of an m16n8 tile
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int wm = warp_m0(), wn = warp_n0();
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j) {
            const int col = n0 + wn + j * 8 + 2 * t;
            if (col >= N) continue;
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int row = m0 + wm + i * 16 + g + h * 8;
                if (row < M) store2(out, ep, row, col, col + 1 < N, acc[i][j][2 * h], acc[i][j][2 * h + 1]);
            }
        }
}

__device__ __forceinline__ int k_tiles(int K) { return (K + Elem<BF16>::BK - 1) / Elem<BF16>::BK; }

template <int KIND, bool NHWC>
__device__ __forceinline__ void conv_fwd(const void* x, const void* w, const float* bias, void* y, const Dims& d,
                                         int relu, int out_kind) {
    const int g = blockIdx.z, K = d.Cg * d.KH * d.KW, npix = d.N * d.OH * d.OW;
    const PlainMap<true> wmap(static_cast<const u16*>(w) + static_cast<i64>(g) * d.OCg * K, K, d.OCg, K);
    const ImageMap<NHWC, true> xmap(x, d, g);
    const Epilogue ep(y, bias, out_kind, relu, false);
    if constexpr (NHWC)
        implicit_gemm<KIND>(xmap, wmap, npix, d.OCg, 0, k_tiles(K), RowMajorOut(d.OC, g * d.OCg), ep);
    else
        implicit_gemm<KIND>(wmap, xmap, d.OCg, npix, 0, k_tiles(K), ImageOut(d.OH * d.OW, d.OC, g * d.OCg), ep);
}

template <int KIND, bool NHWC>
__device__ __forceinline__ void conv_bwd_data(const void* dy, const void* w, void* dx, const Dims& d, int out_kind) {
    const int g = blockIdx.z, K = d.OCg * d.KH * d.KW, npix = d.N * d.H * d.W;
    const WeightTMap<NHWC> wmap(w, d, g);
    const GradImageMap<NHWC> gmap(dy, d, g);
    const Epilogue ep(dx, nullptr, out_kind, 0, false);
    if constexpr (NHWC)
        implicit_gemm<KIND>(gmap, wmap, npix, d.Cg, 0, k_tiles(K), RowMajorOut(d.C, g * d.Cg), ep);
    else
        implicit_gemm<KIND>(wmap, gmap, d.Cg, npix, 0, k_tiles(K), ImageOut(d.H * d.W, d.C, g * d.Cg), ep);
}

template <int KIND, bool NHWC>
__device__ __forceinline__ void conv_bwd_weight(const void* x, const void* dy, void* dw, const Dims& d,
                                                int out_kind) {
    const int splits = gridDim.z / d.G, g = blockIdx.z / splits, split = blockIdx.z % splits;
    const int J = d.Cg * d.KH * d.KW, tiles = k_tiles(d.N * d.OH * d.OW);
    const int kt_begin = static_cast<int>(static_cast<i64>(tiles) * split / splits);
    const int kt_end = static_cast<int>(static_cast<i64>(tiles) * (split + 1) / splits);
    const ImageMap<NHWC, false> xmap(x, d, g);
    const Epilogue ep(dw, nullptr, out_kind, 0, splits > 1);
    const RowMajorOut out(J, g * d.OCg * J);
    if constexpr (NHWC) {  // dy[pix, oc]: a plain [N*OH*OW, OC] matrix, oc contiguous
        const PlainMap<false> gmap(static_cast<const u16*>(dy) + static_cast<i64>(g) * d.OCg, d.OC, d.OCg,
                                   d.N * d.OH * d.OW);
        implicit_gemm<KIND>(gmap, xmap, d.OCg, J, kt_begin, kt_end, out, ep);
    } else {
        const OutGradMap gmap(dy, d, g);
        implicit_gemm<KIND>(gmap, xmap, d.OCg, J, kt_begin, kt_end, out, ep);
    }
}

}  // namespace pn_conv_tc

// in0, in1, bias, out: forward (x, w, bias, y), backward-data (dy, w, -, dx), backward-weight (x, dy, -, dw).
// out_kind: 0 fp32, 1 bf16, 2 fp16 (backward-weight with several K slices: fp32 only).
#define PN_CONV_TC_KERNEL(NAME, BODY)                                                                          \
    extern "C" __global__ void __launch_bounds__(pn_tc::THREADS)                                              \
        NAME(const void* in0, const void* in1, const float* bias, void* out, int N, int C, int H, int W, int OC, \
             int KH, int KW, int OH, int OW, int sh, int sw, int ph, int pw, int dh, int dw, int G, int relu,       \
             int out_kind) {                                                                                    \
        const pn_conv_tc::Dims d = {N, C, H, W, OC, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw, G, C / G, OC / G};    \
        (void)bias;                                                                                             \
        (void)relu;                                                                                             \
        BODY;                                                                                                   \
    }

#define PN_CONV_TC_KERNELS(TYPE, KIND)                                                                              \
    PN_CONV_TC_KERNEL(pn_conv_tc_fwd_nchw_##TYPE, (pn_conv_tc::conv_fwd<KIND, false>(in0, in1, bias, out, d, relu,     \
                                                                                    out_kind)))                       \
    PN_CONV_TC_KERNEL(pn_conv_tc_fwd_nhwc_##TYPE, (pn_conv_tc::conv_fwd<KIND, true>(in0, in1, bias, out, d, relu,      \
                                                                                   out_kind)))                        \
    PN_CONV_TC_KERNEL(pn_conv_tc_bwd_data_nchw_##TYPE, (pn_conv_tc::conv_bwd_data<KIND, false>(in0, in1, out, d,      \
                                                                                              out_kind)))             \
    PN_CONV_TC_KERNEL(pn_conv_tc_bwd_data_nhwc_##TYPE, (pn_conv_tc::conv_bwd_data<KIND, true>(in0, in1, out, d,       \
                                                                                             out_kind)))              \
    PN_CONV_TC_KERNEL(pn_conv_tc_bwd_weight_nchw_##TYPE, (pn_conv_tc::conv_bwd_weight<KIND, false>(in0, in1, out, d,  \
                                                                                                  out_kind)))         \
    PN_CONV_TC_KERNEL(pn_conv_tc_bwd_weight_nhwc_##TYPE, (pn_conv_tc::conv_bwd_weight<KIND, true>(in0, in1, out, d,   \
                                                                                                 out_kind)))

PN_CONV_TC_KERNELS(bf16, pn_tc::BF16)
PN_CONV_TC_KERNELS(f16, pn_tc::F16)
