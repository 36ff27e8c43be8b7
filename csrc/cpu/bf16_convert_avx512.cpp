// float32 <-> bfloat16 with AVX-512F/BW: 32 elements per step, the ragged end through masked loads
// and stores (no scalar tail, nothing past n is read or written). Rounding by integer arithmetic on
// the bit pattern (bf16_avx512.h), for AVX-512 CPUs without AVX512-BF16.
#include <immintrin.h>

#include "cpu/bf16.h"
#include "cpu/bf16_avx512.h"

namespace pn {

void float_to_bf16_avx512(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), bf16_round_bits(_mm512_loadu_ps(src + i)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i + 16), bf16_round_bits(_mm512_loadu_ps(src + i + 16)));
  }
  for (; i < n; i += 16) {
    const int live = n - i < 16 ? static_cast<int>(n - i) : 16;
    const __mmask16 mask = static_cast<__mmask16>((1u << live) - 1u);
    _mm256_mask_storeu_epi16(dst + i, mask, bf16_round_bits(_mm512_maskz_loadu_ps(mask, src + i)));
  }
}

void bf16_to_float_avx512(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    _mm512_storeu_ps(dst + i, bf16_widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i))));
    _mm512_storeu_ps(dst + i + 16, bf16_widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i + 16))));
  }
  for (; i < n; i += 16) {
    const int live = n - i < 16 ? static_cast<int>(n - i) : 16;
    const __mmask16 mask = static_cast<__mmask16>((1u << live) - 1u);
    _mm512_mask_storeu_ps(dst + i, mask, bf16_widen(_mm256_maskz_loadu_epi16(mask, src + i)));
  }
}

}  // namespace pn
