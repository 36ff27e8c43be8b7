// Device helpers shared by the kernel files: cp.async wrappers, warp reductions, fast integer
// division. Only device code and no standard headers, so every .cu file compiles both with nvcc
// (the prebuilt pyneural._cuda) and with NVRTC (cupy.RawModule at first use).
#pragma once

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#error "pyneural's CUDA kernels need compute capability 8.0 or newer (cp.async)"
#endif

namespace pn {

typedef long long i64;

// NVRTC has no <cmath>, so no INFINITY / NAN macros.
__device__ __forceinline__ float inf() { return __int_as_float(0x7f800000); }
__device__ __forceinline__ float nan() { return __int_as_float(0x7fc00000); }

// ---- cp.async: global -> shared copies that bypass registers (sm_80+) ----------------------
// With pred false the source is not read and the destination is zero-filled; src must still be a
// valid pointer, so callers pass the array's base pointer then.
__device__ __forceinline__ unsigned smem_u32(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void cp_async4(float* dst, const float* src, bool pred) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_u32(dst)), "l"(src),
               "r"(pred ? 4 : 0));
}
__device__ __forceinline__ void cp_async16(float* dst, const float* src, bool pred) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src),
               "r"(pred ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// ---- reductions ---------------------------------------------------------------------------
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// Sum over the whole block (blockDim.x a multiple of 32, <= 1024); every thread gets the total.
// `scratch` holds 32 floats of shared memory; the function syncs before reusing it.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : 0.f;
  return warp_sum(v);
}

// ---- fast division by a divisor fixed for the whole kernel ----------------------------------
// q = (umulhi(n, mul) + n) >> shift is n / d for 0 <= n < 2^31 (round-up multiplier method);
// a handful of instructions instead of the ~20 of an integer division.
struct FastDiv {
  unsigned d, mul, shift;
  __device__ explicit FastDiv(int divisor) : d(static_cast<unsigned>(divisor)) {
    shift = 0;
    while ((1u << shift) < d) ++shift;
    const unsigned long long one = 1;
    mul = static_cast<unsigned>(((one << 32) * ((one << shift) - d)) / d + 1);
  }
  __device__ __forceinline__ int div(int n) const {
    return static_cast<int>((__umulhi(static_cast<unsigned>(n), mul) + static_cast<unsigned>(n)) >> shift);
  }
  __device__ __forceinline__ int divmod(int n, int& rem) const {
    const int q = div(n);
    rem = n - q * static_cast<int>(d);
    return q;
  }
};

}  // namespace pn
