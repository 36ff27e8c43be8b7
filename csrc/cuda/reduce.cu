// Sums (and, with scale = 1/count, means) over the axes the layers reduce, fp32 with fp32
// accumulation in a fixed order per thread and a fixed tree across threads (deterministic).
//
// Strategy: a reduction over one axis views the tensor as (outer, R, inner).
//  * inner == 1 (last axis, whole-tensor sum): one 256-thread block per output, threads stride the
//    contiguous row (coalesced) and merge with warp shuffles + one shared-memory step.
//  * inner > 1 (e.g. bias gradient of a Linear layer: sum over rows): one thread per output column
//    walks R; neighbouring threads read neighbouring columns (coalesced), no shared memory.
//  * per-channel sum over (outer, C, inner) (bias gradient of a conv layer, NCHW): one block per
//    channel, threads stride its outer * inner elements.
//
// Launch (pyneural/cuda/reduce.py): rows / channels: grid = outputs, block 256;
// middle axis: block 256, grid min(ceil(outer * inner / 256), 32 * SMs).
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(256) pn_sum_rows(const float* x, float* out, long long R, float scale) {
  __shared__ float scratch[32];
  const float* row = x + static_cast<long long>(blockIdx.x) * R;
  float s = 0.f;
  for (long long j = threadIdx.x; j < R; j += blockDim.x) s += row[j];
  s = pn::block_sum(s, scratch);
  if (threadIdx.x == 0) out[blockIdx.x] = s * scale;
}

extern "C" __global__ void pn_sum_middle(const float* x, float* out, long long outer, long long R, long long inner,
                                         float scale) {
  for (long long e = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; e < outer * inner;
       e += static_cast<long long>(gridDim.x) * blockDim.x) {
    const long long o = e / inner, i = e - o * inner;
    const float* p = x + o * R * inner + i;
    float s = 0.f;
    for (long long r = 0; r < R; ++r) s += p[r * inner];
    out[e] = s * scale;
  }
}

extern "C" __global__ void __launch_bounds__(256) pn_sum_channels(const float* x, float* out, long long outer, long long C,
                                                                  long long inner, float scale) {
  __shared__ float scratch[32];
  const long long c = blockIdx.x;
  float s = 0.f;
  for (long long o = 0; o < outer; ++o) {
    const float* p = x + (o * C + c) * inner;
    for (long long i = threadIdx.x; i < inner; i += blockDim.x) s += p[i];
  }
  s = pn::block_sum(s, scratch);
  if (threadIdx.x == 0) out[c] = s * scale;
}
