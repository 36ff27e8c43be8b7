// Sums (and, with scale = 1/count, means) over the axes the layers reduce, and the gradient norm
// of clip_grad_norm_; fp32 with fp32 accumulation in a fixed order per thread and a fixed tree
// across threads (deterministic).
//
// Strategy: a reduction over one axis views the tensor as (outer, R, inner).
//  * inner == 1 (last axis, whole-tensor sum): one 256-thread block per output, threads stride the
//    contiguous row (coalesced) and merge with warp shuffles + one shared-memory step.
//  * inner > 1 (e.g. bias gradient of a Linear layer: sum over rows): one thread per output column
//    walks R; neighbouring threads read neighbouring columns (coalesced), no shared memory.
//  * per-channel sum over (outer, C, inner) (bias gradient of a conv layer, NCHW): one block per
//    channel, threads stride its outer * inner elements.
//  * gradient norm over a list of arrays, two passes and no atomics, so the result is the same bit
//    for bit run to run (and on every GPU: no block count depends on the device): pass 1, per
//    array, min(ceil(n / 256), 1024) blocks each write one partial (sum of squares, or max |x|
//    for the inf-norm) into its slot of one partials vector -- 1024 x 256 threads is a full
//    H100's worth of resident warps, enough to stream at DRAM speed; pass 2, one block folds the
//    partials in index order and writes sqrt(sum) (or the max) to a device scalar. The max
//    propagates NaN (fmaxf would drop it), so a NaN gradient gives a NaN norm in both norms.
//  * clip: every element of every array times min(1, max_norm / (norm + eps)), read from the device
//    scalar by each thread (one cached load), so the host never waits for the norm; when the
//    factor is 1 the kernel returns at once instead of rewriting the array (bit-identical result).
//    As with torch.clamp, a NaN norm gives a NaN factor.
//
// Launch (pyneural/cuda/reduce.py): rows / channels: grid = outputs, block 256;
// middle axis and clip: block 256, grid min(ceil(elements / 256), 32 * SMs); norm partials:
// block 256, grid min(ceil(n / 256), 1024); norm finish: one block of 256.
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

namespace pn {
// max(a, b), NaN if either is NaN.
__device__ __forceinline__ float max_nan(float a, float b) { return (a > b || a != a) ? a : b; }
// block_sum's twin for max_nan.
__device__ __forceinline__ float block_max_nan(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v = max_nan(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : 0.f;
  for (int o = 16; o > 0; o >>= 1) v = max_nan(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
}  // namespace pn

// partial[blockIdx.x] = sum of x[i]^2 (inf_norm: max |x[i]|) over this block's grid-stride share of x.
extern "C" __global__ void __launch_bounds__(256) pn_norm_partial(const float* x, float* partial, long long n,
                                                                  int inf_norm) {
  __shared__ float scratch[32];
  float acc = 0.f;
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const float v = x[i];
    acc = inf_norm ? pn::max_nan(acc, fabsf(v)) : fmaf(v, v, acc);
  }
  acc = inf_norm ? pn::block_max_nan(acc, scratch) : pn::block_sum(acc, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// norm[0] = sqrt(sum of partial[0..count)) (inf_norm: their max); one block.
extern "C" __global__ void __launch_bounds__(256) pn_norm_finish(const float* partial, float* norm, int count,
                                                                 int inf_norm) {
  __shared__ float scratch[32];
  float acc = 0.f;
  for (int i = threadIdx.x; i < count; i += blockDim.x)
    acc = inf_norm ? pn::max_nan(acc, partial[i]) : acc + partial[i];
  acc = inf_norm ? pn::block_max_nan(acc, scratch) : pn::block_sum(acc, scratch);
  if (threadIdx.x == 0) norm[0] = inf_norm ? acc : sqrtf(acc);
}

// x *= min(1, max_norm / (norm[0] + eps)) in place (a NaN factor stays NaN, as torch.clamp does).
extern "C" __global__ void pn_clip_scale(float* x, const float* norm, long long n, float max_norm, float eps) {
  const float f = max_norm / (norm[0] + eps), factor = f > 1.f ? 1.f : f;
  if (factor == 1.f) return;
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<long long>(gridDim.x) * blockDim.x)
    x[i] *= factor;
}
