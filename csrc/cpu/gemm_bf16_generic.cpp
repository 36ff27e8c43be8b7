// Portable bf16 GEMM path: plain C++ for CPUs without AVX512-BF16, and the readable statement of
// what the vector paths compute. The operands are widened to float32 one bf16 pair at a time
// (exact) and multiplied into a 4 x 16 float32 tile, in the pair order of vdpbf16ps:
//     acc[r][j] += A(r, 2p) * B(2p, j) + A(r, 2p + 1) * B(2p + 1, j)
// Packing is the pair layout (gemm_bf16_layout.h), so this path also checks those packers.
// Cache blocks: kc = 512 (a 16 KiB B sliver in L1), mc = 128, nc = 2048.
#include "cpu/bf16.h"
#include "cpu/gemm_bf16_epilogue.h"
#include "cpu/gemm_bf16_kernel.h"
#include "cpu/gemm_bf16_layout.h"

namespace pn {
namespace {

constexpr int kMR = 4;
constexpr int kNR = 16;

void microkernel(int64_t kc_padded, const uint16_t* a, const uint16_t* b, float acc[kMR][kNR]) {
  for (int r = 0; r < kMR; ++r)
    for (int j = 0; j < kNR; ++j) acc[r][j] = 0.f;
  for (int64_t p = 0; p < kc_padded / 2; ++p, a += 2 * kMR, b += 2 * kNR) {
    float b0[kNR], b1[kNR];
    for (int j = 0; j < kNR; ++j) {
      b0[j] = bf16_to_float(b[2 * j]);
      b1[j] = bf16_to_float(b[2 * j + 1]);
    }
    for (int r = 0; r < kMR; ++r) {
      const float a0 = bf16_to_float(a[2 * r]), a1 = bf16_to_float(a[2 * r + 1]);
      for (int j = 0; j < kNR; ++j) acc[r][j] += a0 * b0[j] + a1 * b1[j];
    }
  }
}

void block(int64_t kc_padded, const uint16_t* a, int64_t mc, const uint16_t* b, int64_t nc, const Bf16Epilogue& ep) {
  float acc[kMR][kNR];
  for (int64_t j = 0; j < nc; j += kNR) {
    const uint16_t* b_sliver = b + j * kc_padded;
    for (int64_t i = 0; i < mc; i += kMR) {
      microkernel(kc_padded, a + i * kc_padded, b_sliver, acc);
      const int rows = static_cast<int>(mc - i < kMR ? mc - i : kMR);
      const int cols = static_cast<int>(nc - j < kNR ? nc - j : kNR);
      for (int r = 0; r < rows; ++r) epilogue_row_scalar(ep, i + r, j, acc[r], cols);
    }
  }
}

void pack_a(const Bf16Operand& a, int64_t i0, int64_t mc, int64_t k0, int64_t kc, uint16_t* dst) {
  pack_a_pairs_scalar(a, i0, mc, k0, kc, kMR, dst);
}

void pack_b(const Bf16Operand& b, int64_t k0, int64_t kc, int64_t j0, int64_t nc, uint16_t* dst) {
  pack_b_pairs_scalar(b, k0, kc, j0, nc, kNR, dst);
}

}  // namespace

const Bf16GemmKernel& bf16_kernel_generic() {
  static const Bf16GemmKernel kernel{"generic", kMR, kNR, 2, 512, 128, 2048, &pack_a, &pack_b, &block};
  return kernel;
}

}  // namespace pn
