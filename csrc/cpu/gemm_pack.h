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

// dst[k * width + i] = src[i * ld + k] for i < count (0 for count <= i < width), k < kc, by v's
// transpose in groups of its lanes; false, with nothing written, where v has none for this width.
inline bool pack_transpose_groups(const PackCopies& v, const float* src, int64_t ld, int count, int64_t kc, float* dst,
                                  int width) {
  if (!v.transpose || (width > v.transpose_lanes && width % v.transpose_lanes != 0)) return false;
  const int lanes = width < v.transpose_lanes ? width : v.transpose_lanes;
  for (int i0 = 0; i0 < width; i0 += lanes) {
    const int live = count - i0 < 0 ? 0 : (count - i0 < lanes ? count - i0 : lanes);
    v.transpose(src + i0 * ld, ld, live, kc, dst + i0, width, lanes);
  }
  return true;
}

}  // namespace pn
