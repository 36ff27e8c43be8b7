// Array conversions float32 <-> bfloat16 (the rule is in bf16.h): path choice, the portable loops,
// and the split over threads. The vector loops live in bf16_convert_avx512.cpp (bit arithmetic) and
// bf16_convert_avx512bf16.cpp (vcvtne2ps2bf16), compiled with their own flags.
//
// Conversion is bound by memory (6 bytes per element), so threads only pay for arrays well past the
// L2: below kParallelElements one core streams faster than waking the team.
#include "cpu/bf16.h"

#include <omp.h>

#include <algorithm>

#include "common/check.h"
#include "common/cpu_features.h"

namespace pn {

namespace {

constexpr int64_t kParallelElements = int64_t{1} << 18;  // 1 MiB of float32

bool path_available(Bf16ConvertPath path) {
  switch (path) {
    case Bf16ConvertPath::avx512bf16: return cpu_has_avx512bf16();
    case Bf16ConvertPath::avx512: return detected_isa() == Isa::avx512;
    default: return true;
  }
}

// Runs body(begin, end) over [0, n) in ranges of whole 64-byte lines of the narrower array (32
// elements), one range per thread when n is large enough to pay for the team.
template <typename Body>
void split_over_threads(int64_t n, const Body& body) {
  if (n < kParallelElements || omp_get_level() > 0 || omp_get_max_threads() == 1) return body(0, n);
  const int64_t lines = (n + 31) / 32;
#pragma omp parallel
  {
    const int64_t t = omp_get_thread_num(), threads = omp_get_num_threads();
    const int64_t begin = std::min(n, lines * t / threads * 32), end = std::min(n, lines * (t + 1) / threads * 32);
    if (end > begin) body(begin, end);
  }
}

}  // namespace

Bf16ConvertPath best_convert_path() {
  if (cpu_has_avx512bf16()) return Bf16ConvertPath::avx512bf16;
  if (detected_isa() == Isa::avx512) return Bf16ConvertPath::avx512;
  return Bf16ConvertPath::generic;
}

const char* convert_path_name(Bf16ConvertPath path) {
  switch (path) {
    case Bf16ConvertPath::avx512bf16: return "avx512bf16";
    case Bf16ConvertPath::avx512: return "avx512";
    default: return "generic";
  }
}

Bf16ConvertPath convert_path_from_name(const std::string& name) {
  Bf16ConvertPath path;
  if (name == "avx512bf16")
    path = Bf16ConvertPath::avx512bf16;
  else if (name == "avx512")
    path = Bf16ConvertPath::avx512;
  else if (name == "generic")
    path = Bf16ConvertPath::generic;
  else
    throw std::invalid_argument(concat("bf16 conversion: unknown path '", name,
                                       "' (expected 'generic', 'avx512' or 'avx512bf16')"));
  PN_CHECK(path_available(path), "bf16 conversion: this CPU has no '", name, "' path (best: '",
           convert_path_name(best_convert_path()), "')");
  return path;
}

void float_to_bf16_array(const float* src, uint16_t* dst, int64_t n, Bf16ConvertPath path) {
  split_over_threads(n, [&](int64_t begin, int64_t end) {
    switch (path) {
      case Bf16ConvertPath::avx512bf16: return float_to_bf16_avx512bf16(src + begin, dst + begin, end - begin);
      case Bf16ConvertPath::avx512: return float_to_bf16_avx512(src + begin, dst + begin, end - begin);
      default:
        for (int64_t i = begin; i < end; ++i) dst[i] = float_to_bf16(src[i]);
    }
  });
}

void bf16_to_float_array(const uint16_t* src, float* dst, int64_t n, Bf16ConvertPath path) {
  split_over_threads(n, [&](int64_t begin, int64_t end) {
    if (path != Bf16ConvertPath::generic) return bf16_to_float_avx512(src + begin, dst + begin, end - begin);
    for (int64_t i = begin; i < end; ++i) dst[i] = bf16_to_float(src[i]);
  });
}

}  // namespace pn
