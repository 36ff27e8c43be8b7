// AVX-512 copies for the dense packers.
//
// pack_copy: the sliver's order matches the source (B row-major, A^T): each k row is one or two
// masked loads and stores, zero padding included, instead of a memcpy + memset call per row, which
// dominated the packing of narrow operands (N = 10 classifier outputs).
//
// pack_transpose: the slow case is a sliver whose source runs along k (row-major A, or B^T),
// because the sliver wants the opposite order, k-major.
// 16 source rows are read 16 floats at a time (16 streams in flight, which the hardware
// prefetchers follow and which hides DRAM latency far better than one row after another), the
// 16 x 16 block is transposed in registers (unpack 32-bit, unpack 64-bit, two 128-bit lane
// shuffles: 64 shuffles per 256 floats), and each k row of the sliver is written with one masked
// store. Measured: the scalar row-by-row scatter took ~6 cycles per float on a 2048 x 2048 A, this
// takes well under 1.
#include <immintrin.h>

#include "cpu/gemm_pack.h"

namespace pn {
namespace {

// In-place transpose of a 16 x 16 block held in r[0..15].
inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
    r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
    r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
  }
  // Each 128-bit lane now holds a transposed 4 x 4 block; two rounds of 128-bit lane shuffles move
  // the blocks to their transposed places.
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);       // lanes 0,2 of r[i], 0,2 of r[i+4]
    t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xDD);   // lanes 1,3
    t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xDD);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD);
    r[i + 4] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0x88);
    r[i + 12] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0xDD);
  }
}

}  // namespace

void pack_copy_avx512(const float* src, int64_t ld, int count, int64_t kc, float* dst, int width) {
  constexpr int kMaxChunks = 4;
  __mmask16 load_mask[kMaxChunks], store_mask[kMaxChunks];
  const int chunks = (width + 15) / 16;
  for (int q = 0; q < chunks; ++q) {
    const int lanes = width - 16 * q < 16 ? width - 16 * q : 16;
    const int live = count - 16 * q < 0 ? 0 : (count - 16 * q < lanes ? count - 16 * q : lanes);
    load_mask[q] = static_cast<__mmask16>((1u << live) - 1u);
    store_mask[q] = static_cast<__mmask16>((1u << lanes) - 1u);
  }
  for (int64_t k = 0; k < kc; ++k, src += ld, dst += width)
    for (int q = 0; q < chunks; ++q)
      _mm512_mask_storeu_ps(dst + 16 * q, store_mask[q], _mm512_maskz_loadu_ps(load_mask[q], src + 16 * q));
}

void pack_transpose_avx512(const float* src, int64_t ld, int count, int64_t kc, float* dst, int dst_stride,
                           int lanes) {
  const __mmask16 store_mask = static_cast<__mmask16>((1u << lanes) - 1u);
  __m512 r[16];
  for (int64_t k0 = 0; k0 < kc; k0 += 16) {
    const int klive = static_cast<int>(kc - k0 < 16 ? kc - k0 : 16);
    const __mmask16 load_mask = static_cast<__mmask16>((1u << klive) - 1u);
    for (int i = 0; i < 16; ++i)
      r[i] = i < count ? _mm512_maskz_loadu_ps(load_mask, src + i * ld + k0) : _mm512_setzero_ps();
    transpose16(r);
    for (int j = 0; j < klive; ++j) _mm512_mask_storeu_ps(dst + (k0 + j) * dst_stride, store_mask, r[j]);
  }
}

}  // namespace pn
