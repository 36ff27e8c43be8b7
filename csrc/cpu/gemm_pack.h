// ISA-specific helpers for the dense packers in gemm.cpp (declared here so gemm.cpp, compiled for
// the baseline ISA, can call code compiled with wider instructions after a run-time check).
#pragma once
#include <cstdint>

namespace pn {

// dst[k * width + i] = src[k * ld + i] for i < count, 0 for count <= i < width, k < kc.
// Needs count <= width <= 64.
void pack_copy_avx512(const float* src, int64_t ld, int count, int64_t kc, float* dst, int width);

// dst[k * dst_stride + i] = src[i * ld + k] for i < count, 0 for count <= i < lanes, k < kc.
// Needs count <= lanes <= 16 and lanes <= dst_stride; writes nothing else.
void pack_transpose_avx512(const float* src, int64_t ld, int count, int64_t kc, float* dst, int dst_stride,
                           int lanes);

}  // namespace pn
