// Dropout, fp32: out = in * mask * scale, the forward (in = x) and the backward (in = dy) alike.
//
// The mask is a pure function of (seed, offset, element index), drawn from a counter-based
// generator, Philox4x32-10 (Salmon et al., SC'11; cuRAND's default, PyTorch's CUDA RNG):
//   (r0, r1, r2, r3) = Philox4x32-10(counter = (q, offset) as 2 x 64 bits, low word first,
//                                    key = seed as 64 bits), q = i / 4, and r = r[i % 4];
//   element i is kept iff r < threshold, threshold = round((1 - p) * 2^32) (a 64-bit integer, so
//   p = 0 keeps every element and p = 1 none), and scale = 1 / (1 - p) (0 when p = 1).
// In cuRAND's terms r is curand() after curand_init(seed, /*subsequence=*/offset, /*offset=*/i):
// each offset is an independent stream of 2^66 words, so a caller gives every dropout call its own
// offset (a step counter will do). Nothing depends on the grid: the same (seed, offset) gives the
// same mask for every launch shape and for every prefix of the array.
// No mask is stored: the backward recomputes it from (seed, offset, p), which saves a byte per
// element of memory and traffic (FlashAttention's choice; PyTorch's nn.Dropout keeps a bool mask).
// Dropped elements are in * 0, so NaN / inf stay NaN, as in PyTorch (x * mask * scale).
//
// Strategy: memory-bound, 8 bytes per element; one thread per Philox call (4 consecutive
// elements), a grid-stride loop. Napkin math: 10 rounds x ~10 integer ops = ~100 ops per 4
// elements, ~25 per element, against 8 bytes: H100 does ~15 T int32 ops/s and 3.35 TB/s, i.e.
// ~600 G elements/s of Philox against ~420 G elements/s of DRAM, so the generator is (just)
// hidden behind the memory traffic. Each thread reads 4 consecutive floats with scalar loads: a
// warp's 4 loads cover 512 contiguous bytes, the first brings the lines into L1 and the other
// three hit (DRAM traffic is that of fully coalesced loads). In place (out == in) is safe: every
// element is read and written by the same thread.
//
// Launch (pyneural/cuda/dropout.py): block 256, grid min(ceil(n / 4 / 256), 32 * SMs).
#include "common.cuh"

namespace pn {
// Philox4x32-10: 10 rounds of two 32 x 32 -> 64-bit multiplies, the key bumped by the Weyl
// constants between rounds (Random123's philox4x32_10, cuRAND's curand_Philox4x32_10).
__device__ __forceinline__ uint4 philox4x32_10(uint4 c, unsigned k0, unsigned k1) {
#pragma unroll
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    const unsigned hi0 = __umulhi(0xD2511F53u, c.x), lo0 = 0xD2511F53u * c.x;
    const unsigned hi1 = __umulhi(0xCD9E8D57u, c.z), lo1 = 0xCD9E8D57u * c.z;
    c = make_uint4(hi1 ^ c.y ^ k0, lo1, hi0 ^ c.w ^ k1, lo0);
  }
  return c;
}
}  // namespace pn

extern "C" __global__ void pn_dropout(const float* in, float* out, long long n, unsigned long long seed,
                                      unsigned long long offset, unsigned long long threshold, float scale) {
  const unsigned k0 = static_cast<unsigned>(seed), k1 = static_cast<unsigned>(seed >> 32);
  const unsigned o0 = static_cast<unsigned>(offset), o1 = static_cast<unsigned>(offset >> 32);
  const long long groups = (n + 3) / 4;
  for (long long q = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; q < groups;
       q += static_cast<long long>(gridDim.x) * blockDim.x) {
    const unsigned long long uq = static_cast<unsigned long long>(q);
    const uint4 r = pn::philox4x32_10(make_uint4(static_cast<unsigned>(uq), static_cast<unsigned>(uq >> 32), o0, o1),
                                      k0, k1);
    const unsigned words[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const long long i = 4 * q + j;
      if (i < n) out[i] = in[i] * (words[j] < threshold ? scale : 0.f);
    }
  }
}
