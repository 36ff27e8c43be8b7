// 2-D convolution as implicit GEMM, fp32 on CUDA cores: forward (with fused bias + ReLU),
// backward-data and backward-weight, NCHW and NHWC, any stride / padding / dilation / groups.
// No im2col buffer: the GEMM tile loaders gather the operand elements straight from the tensors.
//
// Layouts. NCHW: x (N, C, H, W), w (OC, C/G, KH, KW) [OIHW], y (N, OC, OH, OW).
//          NHWC: x (N, H, W, C), w (OC, KH, KW, C/G) [OHWI], y (N, OH, OW, OC).
// Per group g (blockIdx.z), with Cg = C/G, OCg = OC/G and "pixels" the flattened (n, h, w):
//   forward      y[oc, pix]   = sum_k  w[oc, k]      * x_col[k, pix]     M=OCg N=N*OH*OW K=Cg*KH*KW
//   backward-data dx[c, pix]  = sum_k  w^T[c, k]     * dy_col[k, pix]    M=Cg  N=N*H*W   K=OCg*KH*KW
//   backward-weight dw[oc, j] = sum_pix dy[oc, pix]  * x_col[pix, j]     M=OCg N=Cg*KH*KW K=N*OH*OW
// The reduction index k runs over (c, kh, kw) for NCHW and (kh, kw, c) for NHWC, so the fastest
// k is the one contiguous in memory and matches the weight layout.
//
// Tiling and why: the 128 x 128 x 8 block tile, 8 x 8 thread tile and 4-stage cp.async pipeline
// of gemm_tile.cuh (shared with sgemm.cu). Each gathered operand puts the lanes of a warp along
// whichever index is contiguous in memory (pixels for NCHW activations, channels for NHWC), so
// the 4-byte copies coalesce; the index arithmetic of the pixel side is done once per block
// (GatherLoader caches it) and the k side once per k-tile with multiply-shift division.
// Out-of-image taps and ragged edges are zero-filled by cp.async, so nothing is special-cased.
// Backward-weight has a small M x N (e.g. 64 x 576) and a huge K, so it splits K over
// gridDim.z / G slices that atomically add into a zeroed dw (the launcher zeroes it); with one
// slice it stores plainly and is deterministic.
//
// Launch (pyneural/cuda/conv.py): grid (ceil(N_gemm / 128), ceil(M_gemm / 128), G * splits),
// block 256, no dynamic shared memory. All kernels take the same argument list.
#include "gemm_tile.cuh"

namespace pn {

struct ConvDims {
  int N, C, H, W, OC, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw, G, Cg, OCg;
};

// ---- forward: B operand = x_col[k, pix] ------------------------------------------------------
template <bool NHWC>
struct FwdInput {
  struct PInfo { const float* img; int ih0, iw0; };  // img == nullptr: pixel out of range
  struct KInfo { int off, kh, kw; bool ok; };
  const float* base;
  ConvDims d;
  int K, npix;
  FastDiv div_ohw, div_ow, div_k1, div_k2;  // NCHW: KH*KW, KW; NHWC: KW*Cg, Cg
  __device__ FwdInput(const float* x, const ConvDims& d_, int g)
      : base(x), d(d_), K(d_.Cg * d_.KH * d_.KW), npix(d_.N * d_.OH * d_.OW), div_ohw(d_.OH * d_.OW),
        div_ow(d_.OW), div_k1(NHWC ? d_.KW * d_.Cg : d_.KH * d_.KW), div_k2(NHWC ? d_.Cg : d_.KW) {
    base = x + static_cast<i64>(g) * d.Cg * (NHWC ? 1 : d.H * d.W);
  }
  __device__ PInfo prep_p(int p) const {
    PInfo r;
    int rem, ow;
    const int n = div_ohw.divmod(p, rem), oh = div_ow.divmod(rem, ow);
    r.img = p < npix ? base + static_cast<i64>(n) * d.C * d.H * d.W : nullptr;
    r.ih0 = oh * d.sh - d.ph;
    r.iw0 = ow * d.sw - d.pw;
    return r;
  }
  __device__ KInfo prep_k(int k) const {
    KInfo r;
    int rem, b;
    const int a = div_k1.divmod(k, rem), c2 = div_k2.divmod(rem, b);
    if (NHWC) {  // k = (kh, kw, c)
      r.kh = a * d.dh; r.kw = c2 * d.dw; r.off = b;
    } else {     // k = (c, kh, kw)
      r.off = a * d.H * d.W; r.kh = c2 * d.dh; r.kw = b * d.dw;
    }
    r.ok = k < K;
    return r;
  }
  __device__ const float* addr(const PInfo& p, const KInfo& k) const {
    const int ih = p.ih0 + k.kh, iw = p.iw0 + k.kw;
    if (p.img == nullptr || !k.ok || static_cast<unsigned>(ih) >= static_cast<unsigned>(d.H) ||
        static_cast<unsigned>(iw) >= static_cast<unsigned>(d.W))
      return nullptr;
    return NHWC ? p.img + (ih * d.W + iw) * d.C + k.off : p.img + k.off + ih * d.W + iw;
  }
};

// ---- backward-data: A operand = w^T[c, k], k = (oc, kh, kw) or (kh, kw, oc) --------------------
template <bool NHWC>
struct BwdDataWeight {
  struct PInfo { int c; bool ok; };
  struct KInfo { int off; bool ok; };
  const float* base;
  int Cg, KHKW, K;
  FastDiv div_k;  // NCHW: KH*KW; NHWC: OCg
  __device__ BwdDataWeight(const float* w, const ConvDims& d, int g)
      : Cg(d.Cg), KHKW(d.KH * d.KW), K(d.OCg * d.KH * d.KW), div_k(NHWC ? d.OCg : d.KH * d.KW) {
    base = w + static_cast<i64>(g) * d.OCg * d.Cg * d.KH * d.KW;
  }
  __device__ PInfo prep_p(int c) const { PInfo r; r.c = c; r.ok = c < Cg; return r; }
  __device__ KInfo prep_k(int k) const {
    KInfo r;
    int b;
    const int a = div_k.divmod(k, b);
    // NCHW (OIHW): k = (oc=a, r=b) -> (oc * Cg + c) * KHKW + r
    // NHWC (OHWI): k = (r=a, oc=b) -> (oc * KHKW + r) * Cg + c
    r.off = NHWC ? (b * KHKW + a) * Cg : a * Cg * KHKW + b;
    r.ok = k < K;
    return r;
  }
  __device__ const float* addr(const PInfo& p, const KInfo& k) const {
    if (!p.ok || !k.ok) return nullptr;
    return base + k.off + (NHWC ? p.c : p.c * KHKW);
  }
};

// ---- backward-data: B operand = dy_col[k, pix over the input image] -----------------------------
template <bool NHWC>
struct BwdDataGrad {
  struct PInfo { const float* img; int ihp, iwp; };  // ih + ph, iw + pw
  struct KInfo { int off, kh, kw; bool ok; };
  const float* base;
  ConvDims d;
  int K, npix;
  FastDiv div_hw, div_w, div_k1, div_k2, div_sh, div_sw;
  __device__ BwdDataGrad(const float* dy, const ConvDims& d_, int g)
      : d(d_), K(d_.OCg * d_.KH * d_.KW), npix(d_.N * d_.H * d_.W), div_hw(d_.H * d_.W), div_w(d_.W),
        div_k1(NHWC ? d_.KW * d_.OCg : d_.KH * d_.KW), div_k2(NHWC ? d_.OCg : d_.KW), div_sh(d_.sh),
        div_sw(d_.sw) {
    base = dy + static_cast<i64>(g) * d.OCg * (NHWC ? 1 : d.OH * d.OW);
  }
  __device__ PInfo prep_p(int p) const {
    PInfo r;
    int rem, iw;
    const int n = div_hw.divmod(p, rem), ih = div_w.divmod(rem, iw);
    r.img = p < npix ? base + static_cast<i64>(n) * d.OC * d.OH * d.OW : nullptr;
    r.ihp = ih + d.ph;
    r.iwp = iw + d.pw;
    return r;
  }
  __device__ KInfo prep_k(int k) const {
    KInfo r;
    int rem, b;
    const int a = div_k1.divmod(k, rem), c2 = div_k2.divmod(rem, b);
    if (NHWC) {  // k = (kh, kw, oc)
      r.kh = a * d.dh; r.kw = c2 * d.dw; r.off = b;
    } else {     // k = (oc, kh, kw)
      r.off = a * d.OH * d.OW; r.kh = c2 * d.dh; r.kw = b * d.dw;
    }
    r.ok = k < K;
    return r;
  }
  __device__ const float* addr(const PInfo& p, const KInfo& k) const {
    const int th = p.ihp - k.kh, tw = p.iwp - k.kw;  // oh * sh, ow * sw when the tap hits
    if (p.img == nullptr || !k.ok || th < 0 || tw < 0) return nullptr;
    int rh, rw;
    const int oh = div_sh.divmod(th, rh), ow = div_sw.divmod(tw, rw);
    if (rh != 0 || rw != 0 || oh >= d.OH || ow >= d.OW) return nullptr;
    return NHWC ? p.img + (oh * d.OW + ow) * d.OC + k.off : p.img + k.off + oh * d.OW + ow;
  }
};

// ---- backward-weight: A operand = dy[oc, pix] -------------------------------------------------
template <bool NHWC>
struct BwdWeightGrad {
  struct PInfo { int off; bool ok; };
  struct KInfo { i64 off; bool ok; };
  const float* base;
  int OC, OCg, OHOW, K;
  FastDiv div_ohw;
  __device__ BwdWeightGrad(const float* dy, const ConvDims& d, int g)
      : OC(d.OC), OCg(d.OCg), OHOW(d.OH * d.OW), K(d.N * d.OH * d.OW), div_ohw(d.OH * d.OW) {
    base = dy + static_cast<i64>(g) * d.OCg * (NHWC ? 1 : OHOW);
  }
  __device__ PInfo prep_p(int oc) const { PInfo r; r.off = NHWC ? oc : oc * OHOW; r.ok = oc < OCg; return r; }
  __device__ KInfo prep_k(int pix) const {
    KInfo r;
    int rem;
    const int n = div_ohw.divmod(pix, rem);
    r.off = NHWC ? static_cast<i64>(pix) * OC : static_cast<i64>(n) * OC * OHOW + rem;
    r.ok = pix < K;
    return r;
  }
  __device__ const float* addr(const PInfo& p, const KInfo& k) const {
    return (p.ok && k.ok) ? base + k.off + p.off : nullptr;
  }
};

// ---- backward-weight: B operand = x_col[pix, j], j = (c, kh, kw) or (kh, kw, c) ----------------
template <bool NHWC>
struct BwdWeightInput {
  struct PInfo { int off, kh, kw; bool ok; };
  struct KInfo { const float* img; int ih0, iw0; };
  const float* base;
  ConvDims d;
  int J, K;
  FastDiv div_ohw, div_ow, div_j1, div_j2;
  __device__ BwdWeightInput(const float* x, const ConvDims& d_, int g)
      : d(d_), J(d_.Cg * d_.KH * d_.KW), K(d_.N * d_.OH * d_.OW), div_ohw(d_.OH * d_.OW), div_ow(d_.OW),
        div_j1(NHWC ? d_.KW * d_.Cg : d_.KH * d_.KW), div_j2(NHWC ? d_.Cg : d_.KW) {
    base = x + static_cast<i64>(g) * d.Cg * (NHWC ? 1 : d.H * d.W);
  }
  __device__ PInfo prep_p(int j) const {
    PInfo r;
    int rem, b;
    const int a = div_j1.divmod(j, rem), c2 = div_j2.divmod(rem, b);
    if (NHWC) {
      r.kh = a * d.dh; r.kw = c2 * d.dw; r.off = b;
    } else {
      r.off = a * d.H * d.W; r.kh = c2 * d.dh; r.kw = b * d.dw;
    }
    r.ok = j < J;
    return r;
  }
  __device__ KInfo prep_k(int pix) const {
    KInfo r;
    int rem, ow;
    const int n = div_ohw.divmod(pix, rem), oh = div_ow.divmod(rem, ow);
    r.img = pix < K ? base + static_cast<i64>(n) * d.C * d.H * d.W : nullptr;
    r.ih0 = oh * d.sh - d.ph;
    r.iw0 = ow * d.sw - d.pw;
    return r;
  }
  __device__ const float* addr(const PInfo& p, const KInfo& k) const {
    const int ih = k.ih0 + p.kh, iw = k.iw0 + p.kw;
    if (k.img == nullptr || !p.ok || static_cast<unsigned>(ih) >= static_cast<unsigned>(d.H) ||
        static_cast<unsigned>(iw) >= static_cast<unsigned>(d.W))
      return nullptr;
    return NHWC ? k.img + (ih * d.W + iw) * d.C + p.off : k.img + p.off + ih * d.W + iw;
  }
};

__device__ __forceinline__ void zero(float (&acc)[8][8]) {
#pragma unroll
  for (int i = 0; i < 8; ++i)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[i][j] = 0.f;
}

template <bool NHWC>
__device__ __forceinline__ void conv_fwd(const float* x, const float* w, const float* bias, float* y,
                                         const ConvDims& d, int relu) {
  __shared__ __align__(16) SharedTiles sm;
  const int g = blockIdx.z, m0 = blockIdx.y * TILE_M, n0 = blockIdx.x * TILE_N;
  const int K = d.Cg * d.KH * d.KW, OHOW = d.OH * d.OW, npix = d.N * OHOW;
  const MatrixLoader<true> la(w + static_cast<i64>(g) * d.OCg * K, m0, d.OCg, K, K);
  const FwdInput<NHWC> map(x, d, g);
  const GatherLoader<!NHWC, FwdInput<NHWC> > lb(map, n0);
  const ThreadTile tt;
  float acc[8][8];
  zero(acc);
  gemm_mainloop(sm, la, lb, 0, (K + TILE_K - 1) / TILE_K, tt, acc);
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const int p = n0 + tt.col(j);
    if (p >= npix) continue;
    const int n = p / OHOW, r = p - n * OHOW;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int oc = m0 + tt.row(i);
      if (oc >= d.OCg) continue;
      const int ocg = g * d.OCg + oc;
      float v = acc[i][j];
      if (bias != nullptr) v += bias[ocg];
      if (relu) v = fmaxf(v, 0.f);
      if (NHWC)
        y[static_cast<i64>(p) * d.OC + ocg] = v;
      else
        y[(static_cast<i64>(n) * d.OC + ocg) * OHOW + r] = v;
    }
  }
}

template <bool NHWC>
__device__ __forceinline__ void conv_bwd_data(const float* dy, const float* w, float* dx, const ConvDims& d) {
  __shared__ __align__(16) SharedTiles sm;
  const int g = blockIdx.z, m0 = blockIdx.y * TILE_M, n0 = blockIdx.x * TILE_N;
  const int K = d.OCg * d.KH * d.KW, HW = d.H * d.W, npix = d.N * HW;
  const BwdDataWeight<NHWC> amap(w, d, g);
  const GatherLoader<NHWC, BwdDataWeight<NHWC> > la(amap, m0);
  const BwdDataGrad<NHWC> bmap(dy, d, g);
  const GatherLoader<!NHWC, BwdDataGrad<NHWC> > lb(bmap, n0);
  const ThreadTile tt;
  float acc[8][8];
  zero(acc);
  gemm_mainloop(sm, la, lb, 0, (K + TILE_K - 1) / TILE_K, tt, acc);
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const int p = n0 + tt.col(j);
    if (p >= npix) continue;
    const int n = p / HW, r = p - n * HW;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int c = m0 + tt.row(i);
      if (c >= d.Cg) continue;
      const int cg = g * d.Cg + c;
      if (NHWC)
        dx[static_cast<i64>(p) * d.C + cg] = acc[i][j];
      else
        dx[(static_cast<i64>(n) * d.C + cg) * HW + r] = acc[i][j];
    }
  }
}

template <bool NHWC>
__device__ __forceinline__ void conv_bwd_weight(const float* x, const float* dy, float* dw, const ConvDims& d) {
  __shared__ __align__(16) SharedTiles sm;
  const int splits = gridDim.z / d.G, g = blockIdx.z / splits, split = blockIdx.z % splits;
  const int m0 = blockIdx.y * TILE_M, n0 = blockIdx.x * TILE_N;
  const int J = d.Cg * d.KH * d.KW, K = d.N * d.OH * d.OW;
  const int ktiles = (K + TILE_K - 1) / TILE_K;
  const int kt_begin = static_cast<int>(static_cast<i64>(ktiles) * split / splits);
  const int kt_end = static_cast<int>(static_cast<i64>(ktiles) * (split + 1) / splits);
  const BwdWeightGrad<NHWC> amap(dy, d, g);
  const GatherLoader<NHWC, BwdWeightGrad<NHWC> > la(amap, m0);
  const BwdWeightInput<NHWC> bmap(x, d, g);
  const GatherLoader<NHWC, BwdWeightInput<NHWC> > lb(bmap, n0);
  const ThreadTile tt;
  float acc[8][8];
  zero(acc);
  gemm_mainloop(sm, la, lb, kt_begin, kt_end, tt, acc);
  float* out = dw + static_cast<i64>(g) * d.OCg * J;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int oc = m0 + tt.row(i);
    if (oc >= d.OCg) continue;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int col = n0 + tt.col(j);
      if (col >= J) continue;
      float* dst = out + static_cast<i64>(oc) * J + col;
      if (splits > 1)
        atomicAdd(dst, acc[i][j]);
      else
        *dst = acc[i][j];
    }
  }
}

__device__ __forceinline__ ConvDims conv_dims(int N, int C, int H, int W, int OC, int KH, int KW, int OH, int OW,
                                              int sh, int sw, int ph, int pw, int dh, int dw, int G) {
  ConvDims d = {N, C, H, W, OC, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw, G, C / G, OC / G};
  return d;
}

}  // namespace pn

// in0, in1, bias, out: forward (x, w, bias, y), backward-data (dy, w, -, dx),
// backward-weight (x, dy, -, dw).
#define PN_CONV_KERNEL(name, body)                                                                            \
  extern "C" __global__ void __launch_bounds__(pn::TILE_THREADS, 2)                                            \
      name(const float* in0, const float* in1, const float* bias, float* out, int N, int C, int H, int W, int OC, \
           int KH, int KW, int OH, int OW, int sh, int sw, int ph, int pw, int dh, int dw, int G, int relu) {     \
    const pn::ConvDims d = pn::conv_dims(N, C, H, W, OC, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw, G);            \
    (void)bias;                                                                                                 \
    (void)relu;                                                                                                 \
    body;                                                                                                       \
  }

PN_CONV_KERNEL(pn_conv2d_fwd_nchw, pn::conv_fwd<false>(in0, in1, bias, out, d, relu))
PN_CONV_KERNEL(pn_conv2d_fwd_nhwc, pn::conv_fwd<true>(in0, in1, bias, out, d, relu))
PN_CONV_KERNEL(pn_conv2d_bwd_data_nchw, pn::conv_bwd_data<false>(in0, in1, out, d))
PN_CONV_KERNEL(pn_conv2d_bwd_data_nhwc, pn::conv_bwd_data<true>(in0, in1, out, d))
PN_CONV_KERNEL(pn_conv2d_bwd_weight_nchw, pn::conv_bwd_weight<false>(in0, in1, out, d))
PN_CONV_KERNEL(pn_conv2d_bwd_weight_nhwc, pn::conv_bwd_weight<true>(in0, in1, out, d))
