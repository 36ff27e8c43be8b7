// AVX-512 packers for the bf16 GEMM's two layouts (gemm_bf16_layout.h), for the strides a dense
// matrix has: one of its two indices is contiguous in memory. Two moves cover every case:
//  - pairs contiguous (the k index runs along memory): each lane's pairs are already 32-bit words,
//    so a sliver is a 16 x 16 transpose of 32-bit words (16 source rows read at once, 16 streams the
//    prefetchers follow), as in the float32 packers;
//  - lanes contiguous (the other index runs along memory): two k rows are interleaved 16 bits at a
//    time (vpermt2w) into pairs.
// Ragged edges are masked loads (zeros come in) and masked stores. Anonymous namespace: each file
// compiled with AVX-512 flags keeps its own copy.
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace pn {
namespace {

inline __mmask32 bf16_lanes_mask(int64_t n) {
  return n >= 32 ? static_cast<__mmask32>(0xFFFFFFFFu) : static_cast<__mmask32>((1u << n) - 1u);
}

// In-place transpose of a 16 x 16 block of 32-bit words held in r[0..15].
inline void transpose16_epi32(__m512i r[16]) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  // Each 128-bit lane now holds a transposed 4 x 4 block; two rounds of 128-bit lane shuffles move
  // the blocks to their places.
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0xDD);
    t[i + 8] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0xDD);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0xDD);
    r[i + 4] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0x88);
    r[i + 12] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0xDD);
  }
}

// Pairs contiguous: element (lane, k) at src[lane * lane_stride + k], lanes < live (<= 16) of a
// 16-lane group, k < kc. For each pair p = 0 .. ceil(kc / 2) - 1 writes the group's 16 words
// (lanes past `live` zero) to dst + p * pair_stride words, of which the first `store_lanes` only.
inline void pack_pairs_transposed(const uint16_t* src, int64_t lane_stride, int live, int64_t kc, uint32_t* dst,
                                  int64_t pair_stride, int store_lanes) {
  const __mmask16 store = static_cast<__mmask16>(store_lanes >= 16 ? 0xFFFFu : (1u << store_lanes) - 1u);
  __m512i r[16];
  for (int64_t k0 = 0; k0 < kc; k0 += 32) {
    const int64_t klive = kc - k0 < 32 ? kc - k0 : 32;
    const __mmask32 load = bf16_lanes_mask(klive);
    for (int i = 0; i < 16; ++i)
      r[i] = i < live ? _mm512_maskz_loadu_epi16(load, src + i * lane_stride + k0) : _mm512_setzero_si512();
    transpose16_epi32(r);
    const int pairs = static_cast<int>((klive + 1) / 2);
    for (int q = 0; q < pairs; ++q) _mm512_mask_storeu_epi32(dst + (k0 / 2 + q) * pair_stride, store, r[q]);
  }
}

// Lanes contiguous: element (lane, k) at src[lane + k * k_stride], lanes < live (<= width <= 32),
// k < kc. Writes pair p's width words (2 * width bf16, lanes past `live` zero) at dst + p * pair_stride
// bf16, for p < ceil(kc / 2).
inline void pack_pairs_interleaved(const uint16_t* src, int64_t k_stride, int live, int64_t kc, uint16_t* dst,
                                   int64_t pair_stride, int width) {
  alignas(64) static constexpr uint16_t kInterleaveLo[32] = {0,  32, 1,  33, 2,  34, 3,  35, 4,  36, 5,
                                                              37, 6,  38, 7,  39, 8,  40, 9,  41, 10, 42,
                                                              11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
  const __m512i lo_index = _mm512_load_si512(kInterleaveLo);
  const __m512i hi_index = _mm512_add_epi16(lo_index, _mm512_set1_epi16(16));
  const __mmask32 load = bf16_lanes_mask(live);
  const __mmask32 store_lo = bf16_lanes_mask(2 * (width < 16 ? width : 16));
  const __mmask32 store_hi = bf16_lanes_mask(width > 16 ? 2 * (width - 16) : 0);
  for (int64_t p = 0; 2 * p < kc; ++p) {
    const uint16_t* row = src + 2 * p * k_stride;
    const __m512i even = _mm512_maskz_loadu_epi16(load, row);
    const __m512i odd = 2 * p + 1 < kc ? _mm512_maskz_loadu_epi16(load, row + k_stride) : _mm512_setzero_si512();
    _mm512_mask_storeu_epi16(dst + p * pair_stride, store_lo, _mm512_permutex2var_epi16(even, lo_index, odd));
    if (width > 16)
      _mm512_mask_storeu_epi16(dst + p * pair_stride + 32, store_hi, _mm512_permutex2var_epi16(even, hi_index, odd));
  }
}

}  // namespace
}  // namespace pn
