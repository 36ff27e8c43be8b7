// Bias + ReLU epilogue and ReLU backward: y = max(x + bias[c], 0) along axis 1, dx = dy * [y > 0].
//
// Both are streaming loops that move 8-12 bytes per flop, so they run at memory speed. The plan is
// only to keep every loop contiguous and branch-free so the compiler vectorises it at the baseline
// ISA, and to split the work over the OpenMP threads in contiguous blocks:
//   - x viewed as (outer, channels, inner). With inner == 1 (Linear's (N, F)) the vector loop runs
//     over a row of features with the bias vector read alongside; otherwise over one (n, c) plane
//     with its bias as a scalar. Threads take whole rows/planes.
//   - ReLU is a template flag, so neither loop tests it per element.
// No run-time ISA dispatch: AVX-512 builds of these loops timed the same as the baseline SSE2
// build from 64K to 4M elements (one thread), since memory, not arithmetic, sets the pace.
#include "cpu/activation.h"
#include "cpu/parallel_team.h"

#include <omp.h>

namespace pn {

namespace {

// Below this many elements one thread finishes before a team would have started. On the combined
// `parallel for simd` the if clause names `parallel`: a bare if(...) applies to the simd part too
// (OpenMP 5), and a false one then turns vectorisation off (3 ns/element instead of 0.1).
constexpr int64_t kParallelMin = 1 << 15;

template <bool Relu>
inline float epilogue(float v) {
  // `v < 0 ? 0 : v` keeps NaN as NaN, like numpy.maximum(v, 0).
  return Relu ? (v < 0.f ? 0.f : v) : v;
}

template <bool Relu>
void add_bias_rows(const float* x, const float* bias, float* y, int64_t rows, int64_t features) {
#pragma omp parallel for num_threads(elements_team(rows * features, kParallelMin)) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * features;
    float* yr = y + r * features;
#pragma omp simd
    for (int64_t f = 0; f < features; ++f) yr[f] = epilogue<Relu>(xr[f] + bias[f]);
  }
}

template <bool Relu>
void add_bias_planes(const float* x, const float* bias, float* y, int64_t outer, int64_t channels,
                     int64_t plane) {
  const int64_t planes = outer * channels;
#pragma omp parallel for num_threads(elements_team(planes * plane, kParallelMin)) schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    const float b = bias[p % channels];
    const float* xp = x + p * plane;
    float* yp = y + p * plane;
#pragma omp simd
    for (int64_t i = 0; i < plane; ++i) yp[i] = epilogue<Relu>(xp[i] + b);
  }
}

// No bias: one flat stream, cut into equal blocks per thread.
template <bool Relu>
void apply_flat(const float* x, float* y, int64_t n) {
#pragma omp parallel for simd num_threads(elements_team(n, kParallelMin)) schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] = epilogue<Relu>(x[i]);
}

template <bool Relu>
void bias_relu_impl(const float* x, const float* bias, float* y, int64_t outer, int64_t channels, int64_t inner) {
  if (bias == nullptr)
    apply_flat<Relu>(x, y, outer * channels * inner);
  else if (inner == 1)
    add_bias_rows<Relu>(x, bias, y, outer, channels);
  else
    add_bias_planes<Relu>(x, bias, y, outer, channels, inner);
}

}  // namespace

void bias_relu(const float* x, const float* bias, float* y, int64_t outer, int64_t channels, int64_t inner,
               bool relu) {
  if (relu)
    bias_relu_impl<true>(x, bias, y, outer, channels, inner);
  else
    bias_relu_impl<false>(x, bias, y, outer, channels, inner);
}

void relu_backward(const float* dy, const float* y, float* dx, int64_t n) {
  // dy is read unconditionally: a load inside the select would keep SSE2 (no masked loads) scalar.
#pragma omp parallel for simd num_threads(elements_team(n, kParallelMin)) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float g = dy[i];
    dx[i] = y[i] > 0.f ? g : 0.f;
  }
}

}  // namespace pn
