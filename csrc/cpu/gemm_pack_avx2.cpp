// AVX2 copies for the dense packers: the same two jobs as gemm_pack_avx512.cpp, 8 lanes wide.
//
// pack_copy: a sliver in the source's order (B row-major, A^T): per k row, 8-lane loads (vmaskmov
// for a partial last vector: the lanes past `count` read as zero and touch no memory) and plain
// stores. A sliver narrower than a vector (the 6-row A^T sliver) is written with whole 8-lane
// stores in k order, each spilling into the start of the next k row, which the next store then
// overwrites; only the last row is a masked store (vmaskmov stores are slow on AMD's Zen cores).
//
// pack_transpose: a sliver whose source runs along k (row-major A, B^T): 8 source rows read 8
// floats at a time, the 8 x 8 block transposed in registers (unpack 32-bit, shuffle 64-bit, swap
// 128-bit halves: 24 shuffles per 64 floats), and each k row of the sliver stored at once. The
// portable loop it replaces writes one float per cycle or worse (a row-by-row scatter with a
// stride of `width`); this moves 8 per ~3 cycles. On the AVX2 machine here, packing was the
// largest item of a convolution after the FMAs (bench/NOTES.md, "Convolution", AVX2 packers).
#include <immintrin.h>

#include "cpu/avx2_lanes.h"
#include "cpu/gemm_pack.h"

namespace pn {
namespace {

// In-place transpose of an 8 x 8 block held in r[0..7].
inline void transpose8(__m256 r[8]) {
  __m256 t[8], s[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    s[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    s[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    s[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    s[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  // s[i] (i < 4) holds 4 x 4 blocks of rows 0-3 in its two 128-bit halves, s[i + 4] of rows 4-7.
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x31);
  }
}

// Stores lanes [0, lanes) of `v` at p; `spill_ok`: the 8 - lanes floats after them may be
// overwritten (a later store rewrites them).
inline void store_lanes(float* p, __m256 v, int lanes, __m256i mask, bool spill_ok) {
  if (lanes == 8 || spill_ok)
    _mm256_storeu_ps(p, v);
  else
    _mm256_maskstore_ps(p, mask, v);
}

}  // namespace

void pack_copy_avx2(const float* src, int64_t ld, int count, int64_t kc, float* dst, int width) {
  constexpr int kMaxChunks = 8;
  __m256i load_mask[kMaxChunks], store_mask[kMaxChunks];
  int live[kMaxChunks], lanes[kMaxChunks];
  const int chunks = (width + 7) / 8;
  for (int q = 0; q < chunks; ++q) {
    lanes[q] = width - 8 * q < 8 ? width - 8 * q : 8;
    live[q] = count - 8 * q < 0 ? 0 : (count - 8 * q < lanes[q] ? count - 8 * q : lanes[q]);
    load_mask[q] = avx2_first_lanes(live[q]);
    store_mask[q] = avx2_first_lanes(lanes[q]);
  }
  for (int64_t k = 0; k < kc; ++k, src += ld, dst += width) {
    const bool spill_ok = k + 1 < kc;  // only the last chunk can be partial; the next row follows it
    for (int q = 0; q < chunks; ++q) {
      const __m256 v = live[q] == 8   ? _mm256_loadu_ps(src + 8 * q)
                       : live[q] == 0 ? _mm256_setzero_ps()
                                      : _mm256_maskload_ps(src + 8 * q, load_mask[q]);
      store_lanes(dst + 8 * q, v, lanes[q], store_mask[q], spill_ok);
    }
  }
}

void pack_transpose_avx2(const float* src, int64_t ld, int count, int64_t kc, float* dst, int dst_stride, int lanes) {
  const __m256i store_mask = avx2_first_lanes(lanes);
  // Rows of the sliver follow each other without a gap: a whole-vector store may spill into the next.
  const bool packed = dst_stride == lanes;
  __m256 r[8];
  for (int64_t k0 = 0; k0 < kc; k0 += 8) {
    const int klive = static_cast<int>(kc - k0 < 8 ? kc - k0 : 8);
    const __m256i load_mask = avx2_first_lanes(klive);
    for (int i = 0; i < 8; ++i)
      r[i] = i >= count   ? _mm256_setzero_ps()
             : klive == 8 ? _mm256_loadu_ps(src + i * ld + k0)
                          : _mm256_maskload_ps(src + i * ld + k0, load_mask);
    transpose8(r);
    for (int j = 0; j < klive; ++j)
      store_lanes(dst + (k0 + j) * dst_stride, r[j], lanes, store_mask, packed && k0 + j + 1 < kc);
  }
}

}  // namespace pn
