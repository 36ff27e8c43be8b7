// The two packed operand layouts of the bf16 GEMM, and portable packers for each (the vector paths
// add fast cases for the common strides and fall back to these).
//
// Pair ("VNNI") layout, for vdpbf16ps and the portable path: K in pairs, lanes inner, so one 32-bit
// word holds the two bf16 of one lane at k = 2p, 2p + 1 (what vdpbf16ps multiplies and adds):
//     sliver[(p * width + lane) * 2 + e] = X(lane, 2p + e)        width = mr (A) or nr (B)
// AMX layout, for 32 x 32 C tiles built from 16 x 16 tile registers, K in blocks of 32:
//     A sliver (32 rows):    a[kb * 1024 + h * 512 + r * 32 + kk]          = A(16h + r, 32kb + kk)
//     B sliver (32 columns): b[kb * 1024 + h * 512 + p * 32 + j * 2 + e]   = B(32kb + 2p + e, 16h + j)
// so every tile load is one contiguous KiB (16 rows of 64 bytes): an A tile is 16 rows x 32 k, a B
// tile is AMX's VNNI form, 16 k-pairs x 16 columns x 2. Everything past the live rows, columns or K
// is zero, so tails cost FLOPs, never correctness.
//
// Header-only, in an anonymous namespace: each ISA's file compiles its own copy with its own flags.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "cpu/gemm_bf16_kernel.h"

namespace pn {
namespace {

inline int64_t round_up_to(int64_t x, int64_t step) { return (x + step - 1) / step * step; }

// One pair-layout sliver: get(lane, k) for lane < lanes, k < kc; zero elsewhere up to width x kc_pad.
template <typename Get>
void pack_pairs_scalar(const Get& get, int lanes, int64_t kc, int width, int64_t kc_pad, uint16_t* dst) {
  std::memset(dst, 0, sizeof(uint16_t) * static_cast<size_t>(width * kc_pad));
  for (int64_t k = 0; k < kc; ++k)
    for (int lane = 0; lane < lanes; ++lane) dst[((k / 2) * width + lane) * 2 + (k % 2)] = get(lane, k);
}

// Pair-layout A block: ceil(mc / mr) slivers of mr rows.
inline void pack_a_pairs_scalar(const Bf16Operand& a, int64_t i0, int64_t mc, int64_t k0, int64_t kc, int mr,
                                uint16_t* dst) {
  const int64_t kc_pad = round_up_to(kc, 2);
  for (int64_t s = 0; s * mr < mc; ++s) {
    const int rows = static_cast<int>(std::min<int64_t>(mr, mc - s * mr));
    const int64_t row0 = i0 + s * mr;
    pack_pairs_scalar([&](int r, int64_t k) { return a.at(row0 + r, k0 + k); }, rows, kc, mr, kc_pad,
                      dst + s * mr * kc_pad);
  }
}

// Pair-layout B panel: ceil(nc / nr) slivers of nr columns.
inline void pack_b_pairs_scalar(const Bf16Operand& b, int64_t k0, int64_t kc, int64_t j0, int64_t nc, int nr,
                                uint16_t* dst) {
  const int64_t kc_pad = round_up_to(kc, 2);
  for (int64_t s = 0; s * nr < nc; ++s) {
    const int cols = static_cast<int>(std::min<int64_t>(nr, nc - s * nr));
    const int64_t col0 = j0 + s * nr;
    pack_pairs_scalar([&](int j, int64_t k) { return b.at(k0 + k, col0 + j); }, cols, kc, nr, kc_pad,
                      dst + s * nr * kc_pad);
  }
}

constexpr int kAmxTile = 32;  // an AMX-layout sliver is 32 rows (A) or 32 columns (B), K in blocks of 32

inline int64_t amx_a_index(int r, int64_t k) { return (k / 32) * 1024 + (r / 16) * 512 + (r % 16) * 32 + k % 32; }
inline int64_t amx_b_index(int64_t k, int j) {
  return (k / 32) * 1024 + (j / 16) * 512 + ((k % 32) / 2) * 32 + (j % 16) * 2 + k % 2;
}

inline void pack_a_amx_scalar(const Bf16Operand& a, int64_t i0, int64_t mc, int64_t k0, int64_t kc, uint16_t* dst) {
  const int64_t kc_pad = round_up_to(kc, kAmxTile);
  for (int64_t s = 0; s * kAmxTile < mc; ++s) {
    uint16_t* sliver = dst + s * kAmxTile * kc_pad;
    std::memset(sliver, 0, sizeof(uint16_t) * static_cast<size_t>(kAmxTile * kc_pad));
    const int rows = static_cast<int>(std::min<int64_t>(kAmxTile, mc - s * kAmxTile));
    for (int64_t k = 0; k < kc; ++k)
      for (int r = 0; r < rows; ++r) sliver[amx_a_index(r, k)] = a.at(i0 + s * kAmxTile + r, k0 + k);
  }
}

inline void pack_b_amx_scalar(const Bf16Operand& b, int64_t k0, int64_t kc, int64_t j0, int64_t nc, uint16_t* dst) {
  const int64_t kc_pad = round_up_to(kc, kAmxTile);
  for (int64_t s = 0; s * kAmxTile < nc; ++s) {
    uint16_t* sliver = dst + s * kAmxTile * kc_pad;
    std::memset(sliver, 0, sizeof(uint16_t) * static_cast<size_t>(kAmxTile * kc_pad));
    const int cols = static_cast<int>(std::min<int64_t>(kAmxTile, nc - s * kAmxTile));
    for (int64_t k = 0; k < kc; ++k)
      for (int j = 0; j < cols; ++j) sliver[amx_b_index(k, j)] = b.at(k0 + k, j0 + s * kAmxTile + j);
  }
}

}  // namespace
}  // namespace pn
