// Vector bfloat16 rounding and widening for the AVX-512 files (bf16 conversion, bf16 GEMM
// epilogues). Include only from files compiled with AVX-512 F/BW/DQ/VL flags; the rounding uses
// vcvtne2ps2bf16 where the file is also compiled for AVX512-BF16. Both give float_to_bf16()'s bits
// (bf16.h): round to nearest even on the bit pattern, NaN -> sign|0x7FC0. Everything here sits in an
// anonymous namespace: files built with and without AVX512-BF16 each keep their own copies.
#pragma once
#include <immintrin.h>

namespace pn {
namespace {

// 16 floats -> 16 bf16 by integer arithmetic: bits + 0x7FFF + bit 16, keep the top half.
inline __m256i bf16_round_bits(__m512 x) {
  const __m512i bits = _mm512_castps_si512(x);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF))), 16);
  const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
  const __m512i quiet = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(0x8000)),
                                        _mm512_set1_epi32(0x7FC0));
  rounded = _mm512_mask_mov_epi32(rounded, nan, quiet);
  return _mm512_cvtepi32_epi16(rounded);
}

#if defined(__AVX512BF16__)
// Lanes where vcvtne2ps2bf16 differs from the rule above: NaN (it keeps the payload) and float32
// subnormals (it flushes them to zero).
constexpr int kBf16HardwareMisfits = 0x01 | 0x80 | 0x20;  // fpclass: QNaN, SNaN, denormal

// 32 floats (lo, hi) -> 32 bf16 (lo in the low half) with the hardware's rounding, misfit lanes
// redone by bf16_round_bits. Random data never takes the patch; it costs two fpclass per 32.
inline __m512i bf16_round2(__m512 lo, __m512 hi) {
  __m512i out = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
  const __mmask16 bad_lo = _mm512_fpclass_ps_mask(lo, kBf16HardwareMisfits);
  const __mmask16 bad_hi = _mm512_fpclass_ps_mask(hi, kBf16HardwareMisfits);
  if (bad_lo | bad_hi) {
    const __m512i exact = _mm512_inserti64x4(_mm512_castsi256_si512(bf16_round_bits(lo)), bf16_round_bits(hi), 1);
    out = _mm512_mask_mov_epi16(out, _mm512_kunpackw(bad_hi, bad_lo), exact);
  }
  return out;
}

inline __m256i bf16_round(__m512 x) {
  __m256i out = (__m256i)_mm512_cvtneps_pbh(x);
  const __mmask16 bad = _mm512_fpclass_ps_mask(x, kBf16HardwareMisfits);
  if (bad) out = _mm256_mask_mov_epi16(out, bad, bf16_round_bits(x));
  return out;
}
#else
inline __m512i bf16_round2(__m512 lo, __m512 hi) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(bf16_round_bits(lo)), bf16_round_bits(hi), 1);
}

inline __m256i bf16_round(__m512 x) { return bf16_round_bits(x); }
#endif

// 16 bf16 -> 16 floats (exact).
inline __m512 bf16_widen(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }

}  // namespace
}  // namespace pn
