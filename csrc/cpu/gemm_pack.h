// ISA-specific helpers for the dense packers in gemm.cpp and the convolution packers in
// conv_pack.cpp (declared here so they, compiled for the baseline ISA, can call code compiled with
// wider instructions after a run-time check: pack_copies()).
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

// The same two copies on AVX2 (gemm_pack_avx2.cpp): count <= width <= 64; count <= lanes <= 8.
void pack_copy_avx2(const float* src, int64_t ld, int count, int64_t kc, float* dst, int width);
void pack_transpose_avx2(const float* src, int64_t ld, int count, int64_t kc, float* dst, int dst_stride, int lanes);

// The copies of the active ISA; null members on the portable path (the packers' scalar loops).
struct PackCopies {
  void (*copy)(const float* src, int64_t ld, int count, int64_t kc, float* dst, int width);
  void (*transpose)(const float* src, int64_t ld, int count, int64_t kc, float* dst, int dst_stride, int lanes);
  int max_copy_width;   // copy needs width <= this
  int transpose_lanes;  // transpose needs lanes <= this
};
const PackCopies& pack_copies();

}  // namespace pn
