// Device helpers shared by the kernel files: the inline-PTX wrappers (cp.async, ldmatrix, mma.sync,
// conversions), warp reductions, fast integer division. Only device code and no standard headers,
// so every .cu file compiles with nvcc (the prebuilt pyneural._cuda), with NVRTC (cupy.RawModule
// at first use) and, as C++, for the CPU emulator (pyneural.cuda.emulator).
#pragma once

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#error "pyneural's CUDA kernels need compute capability 8.0 or newer (cp.async)"
#endif

namespace pn {

typedef long long i64;

// NVRTC has no <cmath>, so no INFINITY / NAN macros.
__device__ __forceinline__ float inf() { return __int_as_float(0x7f800000); }
__device__ __forceinline__ float nan() { return __int_as_float(0x7fc00000); }

// ---- the inline-PTX wrappers: the only code with an emulated twin ---------------------------
// On a GPU each is one PTX instruction. Built for the CPU emulator (csrc/emu/cuda_emu.h, which
// defines PN_CUDA_EMULATOR), each twin does what the PTX ISA manual says the instruction does, on
// the emulator's threads and shared-memory window, with the same alignment and bounds rules.
//
// cp.async: global -> shared copies that bypass registers (sm_80+). With pred false the source is
// not read and the destination is zero-filled; src must still be a valid pointer, so callers pass
// the array's base pointer then. The copies of a thread land at its cp.async.wait_group.
// ldmatrix.x4: lanes 8j..8j+7 give the row addresses (16 bytes each) of 8x8 b16 matrix j; lane l
// receives, for each j, row l/4, columns 2(l%4), 2(l%4)+1 (.trans: that element of the transpose).
// mma.sync m16n8k16 (bf16 / f16) and m16n8k8 (tf32), row.col, fp32 accumulate; fragments with
// g = lane / 4, t = lane % 4 (low half of a 32-bit register = lower index):
//   A 16x16: a0 (g, 2t..2t+1) a1 (g+8, 2t..) a2 (g, 2t+8..) a3 (g+8, 2t+8..)   tf32 16x8: a0 (g, t)
//            a1 (g+8, t) a2 (g, t+4) a3 (g+8, t+4)
//   B 16x8:  b0 (k 2t..2t+1, n g) b1 (k 2t+8.., n g)                          tf32 8x8: b0 (t, g) b1 (t+4, g)
//   C, D 16x8 fp32: d0, d1 (g, 2t..2t+1) d2, d3 (g+8, 2t..2t+1)
__device__ __forceinline__ unsigned smem_u32(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
#ifndef PN_CUDA_EMULATOR
__device__ __forceinline__ void cp_async4(float* dst, const float* src, bool pred) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_u32(dst)), "l"(src),
               "r"(pred ? 4 : 0));
}
__device__ __forceinline__ void cp_async16(float* dst, const float* src, bool pred) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src),
               "r"(pred ? 16 : 0));
}
// The same copy to a 32-bit shared address.
__device__ __forceinline__ void cp_async16(unsigned dst, const void* src, bool pred) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(pred ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void ldsm_x4(unsigned addr, unsigned (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_t(unsigned addr, unsigned (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
__device__ __forceinline__ unsigned lds32(unsigned addr) {
  unsigned v;
  asm volatile("ld.shared.b32 %0, [%1];\n" : "=r"(v) : "r"(addr));
  return v;
}
__device__ __forceinline__ void sts128(unsigned addr, const unsigned (&w)[4]) {
  asm volatile("st.shared.v4.b32 [%0], {%1,%2,%3,%4};\n" ::"r"(addr), "r"(w[0]), "r"(w[1]), "r"(w[2]), "r"(w[3])
               : "memory");
}
__device__ __forceinline__ void stg64(float* p, float v0, float v1) {
  asm volatile("st.global.v2.f32 [%0], {%1,%2};\n" ::"l"(p), "f"(v0), "f"(v1) : "memory");
}
// fp32 -> tf32, round to nearest, ties away from zero (the low 13 bits become zero)
__device__ __forceinline__ unsigned to_tf32(float x) {
  unsigned r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
  return r;
}
__device__ __forceinline__ float f16_to_f32(unsigned short h) {
  float f;
  asm("cvt.f32.f16 %0, %1;\n" : "=f"(f) : "h"(h));
  return f;
}
// Two floats packed as (lo = x, hi = y), round to nearest even.
__device__ __forceinline__ unsigned pack_bf16x2(float x, float y) {
  unsigned r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(y), "f"(x));
  return r;
}
__device__ __forceinline__ unsigned pack_f16x2(float x, float y) {
  unsigned r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(y), "f"(x));
  return r;
}
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
               "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
__device__ __forceinline__ void mma_f16_16816(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
               "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
__device__ __forceinline__ void mma_tf32_1688(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
  asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
               "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
// The launch's dynamic shared memory (cudaLaunchKernel's sharedMem bytes).
__device__ __forceinline__ unsigned char* dynamic_smem() {
  extern __shared__ __align__(1024) unsigned char pn_dynamic_smem[];
  return pn_dynamic_smem;
}
#else  // the emulated twins (csrc/emu/cuda_emu.h)
__device__ __forceinline__ void cp_async4(float* dst, const float* src, bool pred) {
  pn_emu::cp_async(dst, src, 4, pred ? 4 : 0);
}
__device__ __forceinline__ void cp_async16(float* dst, const float* src, bool pred) {
  pn_emu::cp_async(dst, src, 16, pred ? 16 : 0);
}
__device__ __forceinline__ void cp_async16(unsigned dst, const void* src, bool pred) {
  pn_emu::cp_async(pn_emu::shared_ptr(dst, 16), src, 16, pred ? 16 : 0);
}
__device__ __forceinline__ void cp_async_commit() { pn_emu::cp_async_commit(); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { pn_emu::cp_async_wait(N); }
__device__ __forceinline__ void ldsm_x4(unsigned addr, unsigned (&r)[4]) { pn_emu::ldmatrix_x4(addr, r, false); }
__device__ __forceinline__ void ldsm_x4_t(unsigned addr, unsigned (&r)[4]) { pn_emu::ldmatrix_x4(addr, r, true); }
__device__ __forceinline__ unsigned lds32(unsigned addr) {
  unsigned v;
  pn_emu::load(&v, pn_emu::shared_ptr(addr, 4), 4);
  return v;
}
__device__ __forceinline__ void sts128(unsigned addr, const unsigned (&w)[4]) {
  pn_emu::store(pn_emu::shared_ptr(addr, 16), w, 16);
}
__device__ __forceinline__ void stg64(float* p, float v0, float v1) {
  const float v[2] = {v0, v1};
  pn_emu::store(p, v, 8);
}
__device__ __forceinline__ unsigned to_tf32(float x) { return pn_emu::f32_to_tf32(x); }
__device__ __forceinline__ float f16_to_f32(unsigned short h) { return pn_emu::f16_to_f32(h); }
__device__ __forceinline__ unsigned pack_bf16x2(float x, float y) {
  return pn_emu::f32_to_bf16(x) | (static_cast<unsigned>(pn_emu::f32_to_bf16(y)) << 16);
}
__device__ __forceinline__ unsigned pack_f16x2(float x, float y) {
  return pn_emu::f32_to_f16(x) | (static_cast<unsigned>(pn_emu::f32_to_f16(y)) << 16);
}
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
  pn_emu::mma(pn_emu::MMA_BF16, d, a, b);
}
__device__ __forceinline__ void mma_f16_16816(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
  pn_emu::mma(pn_emu::MMA_F16, d, a, b);
}
__device__ __forceinline__ void mma_tf32_1688(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
  pn_emu::mma(pn_emu::MMA_TF32, d, a, b);
}
__device__ __forceinline__ unsigned char* dynamic_smem() { return pn_emu_dynamic_smem; }
#endif

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
