// Kernels for tests/test_cuda_emulator.py: planted bugs that the emulated device must report, and
// small correct kernels that pin down its semantics (barriers, warp collectives, cp.async groups,
// ldmatrix and mma.sync fragment layouts). Not part of pyneural: compiled only by the emulator.
#include "common.cuh"

// ---- planted bugs ---------------------------------------------------------------------------
// Off-by-one tail: `<=` reads and writes element n.
extern "C" __global__ void planted_tail_off_by_one(const float* x, float* y, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i <= n) y[i] = 2.f * x[i];
}

// Missing __syncthreads between the shared store and the neighbour's load.
extern "C" __global__ void planted_missing_syncthreads(const float* x, float* y, int n) {
  __shared__ float tile[256];
  const int t = threadIdx.x;
  tile[t] = x[t];
  y[t] = tile[(t + 1) % n];
}

// float4 load from a base that is only 4-byte aligned.
extern "C" __global__ void planted_misaligned_float4(const float* x, float* y, int n) {
  const float4 v = *reinterpret_cast<const float4*>(x + 1 + 4 * threadIdx.x);
  y[threadIdx.x] = v.x + v.y + v.z + v.w;
}

// Reads the cp.async destination before cp.async.wait_group.
extern "C" __global__ void planted_cp_async_read_before_wait(const float* x, float* y, int n) {
  __shared__ __align__(16) float tile[256];
  const int t = threadIdx.x;
  pn::cp_async4(&tile[t], x + t, true);
  pn::cp_async_commit();
  y[t] = tile[t];
  pn::cp_async_wait<0>();
}

// 65 threads index a 64-float shared array.
extern "C" __global__ void planted_shared_overflow(const float* x, float* y, int n) {
  __shared__ float small[64];
  small[threadIdx.x] = x[threadIdx.x];
  __syncthreads();
  y[threadIdx.x] = small[threadIdx.x];
}

// Reads one float past the dynamic shared memory the launch asked for (n floats).
extern "C" __global__ void planted_dynamic_smem_overflow(const float* x, float* y, int n) {
  float* s = reinterpret_cast<float*>(pn::dynamic_smem());
  s[threadIdx.x] = x[threadIdx.x];
  __syncthreads();
  y[threadIdx.x] = s[threadIdx.x + 1];
}

// Half the block waits at one __syncthreads, half at another.
extern "C" __global__ void planted_divergent_barrier(const float* x, float* y, int n) {
  if (threadIdx.x < 32) {
    __syncthreads();
    y[threadIdx.x] = 1.f;
  } else {
    __syncthreads();
    y[threadIdx.x] = 2.f;
  }
}

// Lane 0 leaves before a full-warp shuffle.
extern "C" __global__ void planted_shfl_after_exit(const float* x, float* y, int n) {
  if (threadIdx.x == 0) return;
  y[threadIdx.x] = __shfl_xor_sync(0xffffffffu, x[threadIdx.x], 1);
}

// Indexes far outside its argument.
extern "C" __global__ void planted_wild_read(const float* x, float* y, int n) {
  y[threadIdx.x] = x[threadIdx.x + (1 << 20)];
}

// Only even threads fill their slot, every thread reads its own: the odd slots were never written.
extern "C" __global__ void planted_uninitialized_shared_read(const float* x, float* y, int n) {
  __shared__ float part[64];
  if (threadIdx.x % 2 == 0) part[threadIdx.x] = x[threadIdx.x];
  __syncthreads();
  y[threadIdx.x] = part[threadIdx.x];
}

extern "C" __global__ void planted_trap(const float* x, float* y, int n) {
  if (threadIdx.x == 5) __trap();
  y[threadIdx.x] = x[threadIdx.x];
}

// ---- correct kernels ------------------------------------------------------------------------
// The fixed versions of the first four bugs.
extern "C" __global__ void fixed_tail(const float* x, float* y, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = 2.f * x[i];
}
extern "C" __global__ void fixed_syncthreads(const float* x, float* y, int n) {
  __shared__ float tile[256];
  const int t = threadIdx.x;
  tile[t] = x[t];
  __syncthreads();
  y[t] = tile[(t + 1) % n];
}
extern "C" __global__ void fixed_float4(const float* x, float* y, int n) {
  const float4 v = *reinterpret_cast<const float4*>(x + 4 * threadIdx.x);
  y[threadIdx.x] = v.x + v.y + v.z + v.w;
}
extern "C" __global__ void fixed_cp_async(const float* x, float* y, int n) {
  __shared__ __align__(16) float tile[256];
  const int t = threadIdx.x;
  pn::cp_async4(&tile[t], x + t, true);
  pn::cp_async_commit();
  pn::cp_async_wait<0>();
  y[t] = tile[t];
}

// Two cp.async groups: after wait_group 1 the older has landed; the zero-fill copy writes zeros.
extern "C" __global__ void cp_async_groups(const float* x, float* y, int n) {
  __shared__ __align__(16) float a[128];
  __shared__ __align__(16) float b[128];
  const int t = threadIdx.x;
  pn::cp_async16(&a[4 * t], x + 4 * t, true);
  pn::cp_async_commit();
  pn::cp_async16(&b[4 * t], x + 4 * t, t % 2 == 0);  // odd threads: zero-fill, source unread
  pn::cp_async_commit();
  pn::cp_async_wait<1>();
  for (int q = 0; q < 4; ++q) y[4 * t + q] = a[4 * t + q];
  pn::cp_async_wait<0>();
  for (int q = 0; q < 4; ++q) y[128 + 4 * t + q] = b[4 * t + q];
}

// Every warp collective once: out[k * 32 * warps + thread] for k = 0..7.
extern "C" __global__ void warp_ops(const int* x, int* out, int n) {
  const int t = threadIdx.x, lane = t & 31, stride = blockDim.x;
  const int v = x[t];
  out[0 * stride + t] = __shfl_sync(0xffffffffu, v, (lane * 7 + 3) & 31);
  out[1 * stride + t] = __shfl_xor_sync(0xffffffffu, v, 5);
  out[2 * stride + t] = __shfl_down_sync(0xffffffffu, v, 3);
  out[3 * stride + t] = __shfl_up_sync(0xffffffffu, v, 2);
  out[4 * stride + t] = __shfl_sync(0xffffffffu, v, 1, 8);  // width 8: lane 1 of each group of 8
  out[5 * stride + t] = static_cast<int>(__ballot_sync(0xffffffffu, v & 1));
  out[6 * stride + t] = __any_sync(0xffffffffu, v == 7) + 2 * __all_sync(0xffffffffu, v >= 0);
  out[7 * stride + t] = static_cast<int>(pn::warp_sum(static_cast<float>(v)));
}

// Every thread of the block adds into one shared counter with atomicAdd.
extern "C" __global__ void shared_atomics(const float* x, float* y, int n) {
  __shared__ float total;
  if (threadIdx.x == 0) total = 0.f;
  __syncthreads();
  atomicAdd(&total, x[threadIdx.x]);
  __syncthreads();
  if (threadIdx.x == 0) y[blockIdx.x] = total;
}

// ldmatrix.x4 (.trans when trans != 0) of a 32 x 8 b16 tile (four 8 x 8 matrices stacked): each
// lane writes its 4 registers to out[lane * 4 + j].
extern "C" __global__ void ldmatrix_x4(const unsigned short* tile, unsigned* out, int trans) {
  __shared__ __align__(16) unsigned short s[32 * 8];
  const int lane = threadIdx.x;
  for (int e = 0; e < 8; ++e) s[lane * 8 + e] = tile[lane * 8 + e];
  __syncwarp();
  unsigned r[4];
  const unsigned addr = pn::smem_u32(&s[lane * 8]);  // lanes 8j..8j+7: the rows of matrix j
  if (trans) pn::ldsm_x4_t(addr, r);
  else pn::ldsm_x4(addr, r);
  for (int j = 0; j < 4; ++j) out[lane * 4 + j] = r[j];
}

// One mma.sync: D (16 x 8 fp32) = A (16 x K) * B (K x 8) + C. A row-major, B stored [k][n], both as
// raw 16-bit (kind 0 bf16, 1 f16) or 32-bit (kind 2 tf32) patterns; fragments gathered per the PTX
// ISA layout (see common.cuh).
extern "C" __global__ void mma_one_tile(const unsigned* a32, const unsigned short* a16, const unsigned* b32,
                                        const unsigned short* b16, const float* c, float* d, int kind) {
  const int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
  unsigned a[4], b[2];
  if (kind == 2) {
    a[0] = a32[g * 8 + t]; a[1] = a32[(g + 8) * 8 + t]; a[2] = a32[g * 8 + t + 4]; a[3] = a32[(g + 8) * 8 + t + 4];
    b[0] = b32[t * 8 + g]; b[1] = b32[(t + 4) * 8 + g];
  } else {
    auto pair = [](const unsigned short* p, int i0, int i1) { return p[i0] | (static_cast<unsigned>(p[i1]) << 16); };
    a[0] = pair(a16, g * 16 + 2 * t, g * 16 + 2 * t + 1);
    a[1] = pair(a16, (g + 8) * 16 + 2 * t, (g + 8) * 16 + 2 * t + 1);
    a[2] = pair(a16, g * 16 + 2 * t + 8, g * 16 + 2 * t + 9);
    a[3] = pair(a16, (g + 8) * 16 + 2 * t + 8, (g + 8) * 16 + 2 * t + 9);
    b[0] = pair(b16, (2 * t) * 8 + g, (2 * t + 1) * 8 + g);
    b[1] = pair(b16, (2 * t + 8) * 8 + g, (2 * t + 9) * 8 + g);
  }
  float acc[4] = {c[g * 8 + 2 * t], c[g * 8 + 2 * t + 1], c[(g + 8) * 8 + 2 * t], c[(g + 8) * 8 + 2 * t + 1]};
  if (kind == 0) pn::mma_bf16_16816(acc, a, b);
  else if (kind == 1) pn::mma_f16_16816(acc, a, b);
  else pn::mma_tf32_1688(acc, a, b);
  d[g * 8 + 2 * t] = acc[0]; d[g * 8 + 2 * t + 1] = acc[1];
  d[(g + 8) * 8 + 2 * t] = acc[2]; d[(g + 8) * 8 + 2 * t + 1] = acc[3];
}
