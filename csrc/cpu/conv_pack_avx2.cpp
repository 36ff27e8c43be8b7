// AVX2 execution of implicit-im2col fill ops (see conv_pack_isa.h): each 16-column op is two
// 8-lane halves; a half is a plain load (all lanes valid), a vmaskmov load (some: the padding lanes
// read as zero and touch no memory) or zero, then a plain store, or a vmaskmov store where the op
// writes only some of its lanes (the ends of a run). Same ops as the AVX-512 loop, built once per
// block of columns and tap.
#include <immintrin.h>

#include "cpu/conv_pack_isa.h"

namespace pn {
namespace {

// The 8 lanes of `bits` (bit i = lane i) as a vmaskmov mask.
inline __m256i lane_bits(uint32_t bits) {
  const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  return _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(static_cast<int>(bits)), bit), bit);
}

}  // namespace

void run_fill_ops_avx2(const float* x, const FillOp* ops, int64_t count, float* out) {
  for (int64_t i = 0; i < count; ++i) {
    const FillOp& op = ops[i];
    for (int h = 0; h < 2; ++h) {
      const uint32_t store = (op.store >> (8 * h)) & 0xffu, load = (op.load >> (8 * h)) & 0xffu;
      if (store == 0) continue;
      const float* src = x + op.src + 8 * h;
      const __m256 v = load == 0xffu ? _mm256_loadu_ps(src)
                       : load == 0   ? _mm256_setzero_ps()
                                     : _mm256_maskload_ps(src, lane_bits(load));
      float* dst = out + op.dst + 8 * h;
      if (store == 0xffu)
        _mm256_storeu_ps(dst, v);
      else
        _mm256_maskstore_ps(dst, lane_bits(store), v);
    }
  }
}

}  // namespace pn
