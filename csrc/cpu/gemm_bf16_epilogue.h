// The bf16 GEMM's epilogue (the stages are defined at Bf16Epilogue, gemm_bf16_kernel.h): a scalar
// version for the portable path, and, in files compiled for AVX-512, a 16-lane one. Both apply the
// same operations in the same order, so every path rounds a given sum the same way.
// Anonymous namespace: each ISA's file keeps its own copy.
#pragma once
#include <cstdint>

#include "cpu/bf16.h"
#include "cpu/gemm_bf16_kernel.h"
#if defined(__AVX512F__)
#include "cpu/bf16_avx512.h"
#endif

namespace pn {
namespace {

// C[row, col + j] for j < n (block coordinates) from the fresh sums s[j].
inline void epilogue_row_scalar(const Bf16Epilogue& ep, int64_t row, int64_t col, const float* s, int n) {
  float* acc = ep.acc ? ep.acc + row * ep.ldacc + col : nullptr;  // null: one K block, C written directly
  float* c32 = static_cast<float*>(ep.c) + row * ep.ldc + col;
  uint16_t* c16 = static_cast<uint16_t*>(ep.c) + row * ep.ldc + col;
  for (int j = 0; j < n; ++j) {
    float v = ep.alpha * s[j];
    if (!ep.first)
      v += acc[j];
    else if (ep.beta != 0.f)
      v += ep.beta * (ep.c_bf16 ? bf16_to_float(c16[j]) : c32[j]);
    if (!ep.last) {
      acc[j] = v;
      continue;
    }
    if (ep.bias) v += ep.bias[col + j];
    if (ep.row_bias) v += ep.row_bias[row];
    if (ep.relu && v < 0.f) v = 0.f;  // NaN < 0 is false: NaN stays
    if (ep.c_bf16)
      c16[j] = float_to_bf16(v);
    else
      c32[j] = v;
  }
}

#if defined(__AVX512F__)
// The same for 16 sums in a vector, lanes outside `live` neither read nor written.
inline void epilogue_vec16(const Bf16Epilogue& ep, int64_t row, int64_t col, __m512 s, __mmask16 live) {
  __m512 v = _mm512_mul_ps(_mm512_set1_ps(ep.alpha), s);
  float* c32 = static_cast<float*>(ep.c) + row * ep.ldc + col;
  uint16_t* c16 = static_cast<uint16_t*>(ep.c) + row * ep.ldc + col;
  if (!ep.first) {
    v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(live, ep.acc + row * ep.ldacc + col));
  } else if (ep.beta != 0.f) {
    const __m512 old = ep.c_bf16 ? bf16_widen(_mm256_maskz_loadu_epi16(live, c16)) : _mm512_maskz_loadu_ps(live, c32);
    v = _mm512_add_ps(v, _mm512_mul_ps(_mm512_set1_ps(ep.beta), old));
  }
  if (!ep.last) return _mm512_mask_storeu_ps(ep.acc + row * ep.ldacc + col, live, v);
  if (ep.bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(live, ep.bias + col));
  if (ep.row_bias) v = _mm512_add_ps(v, _mm512_set1_ps(ep.row_bias[row]));
  if (ep.relu) v = _mm512_max_ps(_mm512_setzero_ps(), v);  // max(0, NaN) is the second operand: NaN
  if (ep.c_bf16)
    _mm256_mask_storeu_epi16(c16, live, bf16_round(v));
  else
    _mm512_mask_storeu_ps(c32, live, v);
}

inline __mmask16 lanes_mask(int n) { return static_cast<__mmask16>(n >= 16 ? 0xFFFFu : (1u << n) - 1u); }

// Rows [0, rows) x columns [0, cols) of a finished fp32 tile (row stride ld) at block (row, col).
inline void epilogue_tile_avx512(const Bf16Epilogue& ep, int64_t row, int64_t col, const float* tile, int64_t ld,
                                 int rows, int cols) {
  for (int r = 0; r < rows; ++r)
    for (int j = 0; j < cols; j += 16)
      epilogue_vec16(ep, row + r, col + j, _mm512_loadu_ps(tile + r * ld + j), lanes_mask(cols - j));
}
#endif

}  // namespace
}  // namespace pn
