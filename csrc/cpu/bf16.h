// bfloat16 <-> float32 on the CPU: the scalar definitions every path must match bit for bit, and the
// array conversions (bf16_convert*.cpp).
//
// bf16 is the top half of an IEEE float32 (sign, 8 exponent bits, 7 mantissa bits), stored here as
// its uint16 bit pattern (numpy arrays of ml_dtypes.bfloat16 reach C++ as uint16 buffers).
//   float32 -> bf16: round to nearest, ties to even, on the bit pattern (add 0x7FFF plus the lowest
//                    kept bit, drop the low 16 bits); subnormals round like any other value; NaN
//                    becomes the quiet NaN sign|0x7FC0 (without this, a NaN whose payload sits in
//                    the low bits would truncate to infinity). This is ml_dtypes' (Eigen's) rule.
//   bf16 -> float32: exact, the bits shifted left by 16.
// The hardware instruction (vcvtne2ps2bf16) differs on two classes of input: it flushes float32
// subnormals to zero and keeps NaN payloads; the AVX512-BF16 path patches those lanes (see
// bf16_avx512.h), so every path gives the same bits.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

namespace pn {

// These two are compiled into files with different ISA flags; the anonymous namespace keeps each
// file's copy to itself (one shared copy could be the AVX-512 build, run on a CPU without it).
namespace {

inline uint16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>(((u >> 16) & 0x8000u) | 0x7FC0u);
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

inline float bf16_to_float(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

}  // namespace

// Which code converts arrays: portable C++, AVX-512F bit arithmetic, or AVX512-BF16's
// vcvtne2ps2bf16 (bf16 -> float32 is a shift on both vector paths).
enum class Bf16ConvertPath { generic = 0, avx512 = 1, avx512bf16 = 2 };

Bf16ConvertPath best_convert_path();                                // the fastest this CPU has
Bf16ConvertPath convert_path_from_name(const std::string& name);    // throws if unknown or missing
const char* convert_path_name(Bf16ConvertPath path);

// dst[i] = float_to_bf16(src[i]) / bf16_to_float(src[i]) for i < n. Large arrays are split over the
// OpenMP threads (not when called from inside a parallel region).
void float_to_bf16_array(const float* src, uint16_t* dst, int64_t n, Bf16ConvertPath path);
void bf16_to_float_array(const uint16_t* src, float* dst, int64_t n, Bf16ConvertPath path);

// The vector paths, one file each (compiled with their ISA's flags; call only when the CPU has it).
void float_to_bf16_avx512(const float* src, uint16_t* dst, int64_t n);
void float_to_bf16_avx512bf16(const float* src, uint16_t* dst, int64_t n);
void bf16_to_float_avx512(const uint16_t* src, float* dst, int64_t n);

}  // namespace pn
