// A helper shared by the AVX2 kernels (include only from *_avx2.cpp files, compiled with AVX2 flags).
#pragma once
#include <immintrin.h>

namespace pn {

// Lane mask with the first `live` of 8 lanes set (sign bit = active for vmaskmov).
inline __m256i avx2_first_lanes(int live) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(live), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

}  // namespace pn
