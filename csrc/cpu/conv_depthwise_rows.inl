// Depthwise convolution, one source for every SIMD path: conv_depthwise.cpp, _avx2.cpp and
// _avx512.cpp include it inside an anonymous namespace, and their compile flags decide the vector
// width of the `omp simd` loops below.
//
// Planes. Output channel co reads input channel c = co / m (m = Co / C). Every pass works on whole
// H x W planes, which stay in L1/L2 (a 56x56 plane is 12.5 KiB), and threads take whole planes
// (schedule(dynamic): on a busy machine a descheduled thread does not hold up a static share of
// the work), so no two threads write the same element and nothing is reduced across threads.
//
// forward          per (n, co) plane and output row ho: row = bias; for each tap (i, j) whose
//                  input row h = ho*sh - ph + i*dh exists, row[wo] += w[co,i,j] * x[h, wo*sw - pw + j*dw]
//                  over the wo whose input column exists. That range depends on j only and is
//                  computed once, so the inner loop has no branch and vectorises over wo (stride 1
//                  reads x contiguously); then ReLU. The row accumulates in place in y (in L1).
// backward-data    per (n, c) plane: dx = 0, then for its m output channels co, each dy row ho and
//                  tap (i, j): dx[h, wo*sw - pw + j*dw] += w[co,i,j] * dy[ho, wo] over the same wo
//                  range: forward's loop transposed, a scatter but into the thread's own plane.
// backward-weight  per output channel co (a thread owns dw[co]): dw[co,i,j] = sum over n, ho of
//                  one dot product over the valid wo of dy[n,co,ho,:] and x[n,c,h,:] (strided by sw).
//
// Napkin math (the MobileNet-like 3x3, 64 channels, 28x28, batch 32 of bench/conv.py): 2*9*32*64*784
// = 29 MFLOP per pass against 6.4 MB of x and 6.4 MB of y, 2.3 FLOP per byte: memory (about 20 GB/s
// on two cores here: 0.65 ms) rules, not the FMAs (2 cores x 2 FMA x 8 lanes x 2 FLOP x ~3 GHz =
// 190 GFLOP/s: 0.15 ms). So the kernel reads and writes each plane once per pass, and the kh*kw
// reuse of every input row comes from L1; the GEMM path instead packs a kh*kw-times larger
// im2col panel per channel for an m-row GEMM.

// The output columns wo in [*lo, *hi) whose input column wo*stride + off lies in [0, W).
inline void valid_columns(int64_t off, int64_t stride, int64_t W, int64_t Wo, int64_t* lo, int64_t* hi) {
  const int64_t first = off >= 0 ? 0 : (-off + stride - 1) / stride;  // wo*stride + off >= 0
  const int64_t last = W - 1 - off < 0 ? -1 : (W - 1 - off) / stride;  // wo*stride + off <= W - 1
  *lo = std::min(first, Wo);
  *hi = std::max(*lo, std::min(last + 1, Wo));
}

// The valid output-column range of every kernel column j (it does not depend on the row).
struct ColumnRanges {
  std::vector<int64_t> lo, hi, off;
  explicit ColumnRanges(const Conv2dShape& s) : lo(s.kw), hi(s.kw), off(s.kw) {
    for (int64_t j = 0; j < s.kw; ++j) {
      off[j] = j * s.dw - s.pw;
      valid_columns(off[j], s.sw, s.W, s.Wo, &lo[j], &hi[j]);
    }
  }
};

// Planes per dynamic chunk: about 16K multiply-adds each, so scheduling costs little.
inline int64_t plane_chunk(const Conv2dShape& s) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, s.Ho * s.Wo * s.kh * s.kw));
}

void forward(const Conv2dShape& s, const float* x, const float* w, const float* bias, bool relu, float* y) {
  const int64_t m = s.Co / s.C, HW = s.H * s.W, P = s.Ho * s.Wo, taps = s.kh * s.kw, sw = s.sw;
  const ColumnRanges cols(s);
  const int64_t chunk = plane_chunk(s);
#pragma omp parallel for num_threads(team_threads()) schedule(dynamic, chunk)
  for (int64_t p = 0; p < s.N * s.Co; ++p) {
    const int64_t n = p / s.Co, co = p % s.Co;
    const float* xp = x + (n * s.C + co / m) * HW;
    const float* wp = w + co * taps;
    const float b = bias ? bias[co] : 0.f;
    for (int64_t ho = 0; ho < s.Ho; ++ho) {
      float* __restrict row = y + p * P + ho * s.Wo;
      for (int64_t k = 0; k < s.Wo; ++k) row[k] = b;
      for (int64_t i = 0; i < s.kh; ++i) {
        const int64_t h = ho * s.sh - s.ph + i * s.dh;
        if (h < 0 || h >= s.H) continue;
        const float* __restrict xr = xp + h * s.W;
        for (int64_t j = 0; j < s.kw; ++j) {
          const float a = wp[i * s.kw + j];
          const int64_t off = cols.off[j], hi = cols.hi[j];
          if (sw == 1) {
#pragma omp simd
            for (int64_t k = cols.lo[j]; k < hi; ++k) row[k] += a * xr[k + off];
          } else {
#pragma omp simd
            for (int64_t k = cols.lo[j]; k < hi; ++k) row[k] += a * xr[k * sw + off];
          }
        }
      }
      if (relu)
        for (int64_t k = 0; k < s.Wo; ++k) row[k] = std::max(row[k], 0.f);
    }
  }
}

void backward_data(const Conv2dShape& s, const float* dy, const float* w, float* dx) {
  const int64_t m = s.Co / s.C, HW = s.H * s.W, P = s.Ho * s.Wo, taps = s.kh * s.kw, sw = s.sw;
  const ColumnRanges cols(s);
  const int64_t chunk = std::max<int64_t>(1, plane_chunk(s) / m);
#pragma omp parallel for num_threads(team_threads()) schedule(dynamic, chunk)
  for (int64_t p = 0; p < s.N * s.C; ++p) {
    const int64_t n = p / s.C, c = p % s.C;
    float* dxp = dx + p * HW;
    std::memset(dxp, 0, sizeof(float) * HW);
    for (int64_t co = c * m; co < (c + 1) * m; ++co) {
      const float* dyp = dy + (n * s.Co + co) * P;
      const float* wp = w + co * taps;
      for (int64_t ho = 0; ho < s.Ho; ++ho) {
        const float* __restrict dyr = dyp + ho * s.Wo;
        for (int64_t i = 0; i < s.kh; ++i) {
          const int64_t h = ho * s.sh - s.ph + i * s.dh;
          if (h < 0 || h >= s.H) continue;
          float* __restrict dxr = dxp + h * s.W;
          for (int64_t j = 0; j < s.kw; ++j) {
            const float a = wp[i * s.kw + j];
            const int64_t off = cols.off[j], hi = cols.hi[j];
            if (sw == 1) {
#pragma omp simd
              for (int64_t k = cols.lo[j]; k < hi; ++k) dxr[k + off] += a * dyr[k];
            } else {
              for (int64_t k = cols.lo[j]; k < hi; ++k) dxr[k * sw + off] += a * dyr[k];
            }
          }
        }
      }
    }
  }
}

void backward_weight(const Conv2dShape& s, const float* dy, const float* x, float* dw) {
  const int64_t m = s.Co / s.C, HW = s.H * s.W, P = s.Ho * s.Wo, taps = s.kh * s.kw, sw = s.sw;
  const ColumnRanges cols(s);
#pragma omp parallel for num_threads(team_threads()) schedule(dynamic, 1)
  for (int64_t co = 0; co < s.Co; ++co) {
    float* dwp = dw + co * taps;
    for (int64_t t = 0; t < taps; ++t) dwp[t] = 0.f;
    for (int64_t n = 0; n < s.N; ++n) {
      const float* xp = x + (n * s.C + co / m) * HW;
      const float* dyp = dy + (n * s.Co + co) * P;
      for (int64_t ho = 0; ho < s.Ho; ++ho) {
        const float* __restrict dyr = dyp + ho * s.Wo;
        for (int64_t i = 0; i < s.kh; ++i) {
          const int64_t h = ho * s.sh - s.ph + i * s.dh;
          if (h < 0 || h >= s.H) continue;
          const float* __restrict xr = xp + h * s.W;
          for (int64_t j = 0; j < s.kw; ++j) {
            const int64_t off = cols.off[j], hi = cols.hi[j];
            float sum = 0.f;
            if (sw == 1) {
#pragma omp simd reduction(+ : sum)
              for (int64_t k = cols.lo[j]; k < hi; ++k) sum += dyr[k] * xr[k + off];
            } else {
#pragma omp simd reduction(+ : sum)
              for (int64_t k = cols.lo[j]; k < hi; ++k) sum += dyr[k] * xr[k * sw + off];
            }
            dwp[i * s.kw + j] += sum;
          }
        }
      }
    }
  }
}
