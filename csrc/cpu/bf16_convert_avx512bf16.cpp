// float32 -> bfloat16 with AVX512-BF16: one vcvtne2ps2bf16 rounds 32 floats into one zmm of bf16.
// The instruction flushes float32 subnormals and keeps NaN payloads; bf16_round2 (bf16_avx512.h)
// redoes just those lanes so the bits match the scalar rule. The ragged end: masked loads/stores.
#include <immintrin.h>

#include "cpu/bf16.h"
#include "cpu/bf16_avx512.h"

namespace pn {

void float_to_bf16_avx512bf16(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 32 <= n; i += 32)
    _mm512_storeu_si512(dst + i, bf16_round2(_mm512_loadu_ps(src + i), _mm512_loadu_ps(src + i + 16)));
  if (i < n) {
    const int live = static_cast<int>(n - i);
    const __mmask16 lo = static_cast<__mmask16>(live >= 16 ? 0xFFFFu : (1u << live) - 1u);
    const __mmask16 hi = static_cast<__mmask16>(live <= 16 ? 0u : (1u << (live - 16)) - 1u);
    const __m512i out = bf16_round2(_mm512_maskz_loadu_ps(lo, src + i), _mm512_maskz_loadu_ps(hi, src + i + 16));
    _mm512_mask_storeu_epi16(dst + i, _mm512_kunpackw(hi, lo), out);
  }
}

}  // namespace pn
