// What a bf16 GEMM path hands the driver (gemm_bf16.cpp): its packers, its block loop around the
// microkernel, and the cache blocks sized for it. One gemm_bf16_<isa>.cpp per path.
//
// The driver cuts C into blocks, packs A[ic:ic+mc, pc:pc+kc] and B[pc:pc+kc, jc:jc+nc] into the
// path's own layout (slivers of mr rows / nr columns, zero-padded to whole slivers and to a multiple
// of k_step in K), and calls block(), which runs the microkernel over every tile of the C block and
// hands each finished fp32 tile to the epilogue below.
#pragma once
#include <cstdint>

namespace pn {

// An operand in place: element (x, y) at data[x * x_stride + y * y_stride], where (x, y) is (i, k)
// for A and (k, j) for B, so a transpose is a swap of strides.
struct Bf16Operand {
  const uint16_t* data;
  int64_t x_stride, y_stride;
  uint16_t at(int64_t x, int64_t y) const { return data[x * x_stride + y * y_stride]; }
};

// What happens to a C block's fresh fp32 sums s (one K block's worth). K is summed in blocks, and
// the stages differ:
//   prior = first ? (beta != 0 ? beta * C : 0) : acc
//   v     = prior + alpha * s
//   last  ? C = relu?(v + bias + row_bias) (rounded to bf16 when c_bf16)  :  acc = v
// acc is float32 and is C itself when C is float32; a bf16 C summed over several K blocks gets an
// fp32 workspace, so the running sum is never rounded to bf16 before the end.
// Pointers are at the block's top-left element (bias at its first column).
struct Bf16Epilogue {
  float alpha, beta;
  const float* bias;
  bool relu;
  bool first, last;
  void* c;
  int64_t ldc;
  bool c_bf16;
  float* acc;
  int64_t ldacc;
  const float* row_bias = nullptr;  // at the block's first row, or null
};

struct Bf16GemmKernel {
  const char* name;
  int mr, nr;            // microkernel's C tile: A slivers are mr rows, B slivers nr columns
  int k_step;            // packed K is a multiple of this (2: one bf16 pair; 32: one AMX tile row)
  int64_t kc, mc, nc;    // cache blocks: K per packed panel, rows per A block, columns per B panel
  // A[i0:i0+mc, k0:k0+kc] into ceil(mc / mr) slivers of mr * round_up(kc, k_step) elements.
  void (*pack_a)(const Bf16Operand& a, int64_t i0, int64_t mc, int64_t k0, int64_t kc, uint16_t* dst);
  // B[k0:k0+kc, j0:j0+nc] into ceil(nc / nr) slivers of nr * round_up(kc, k_step) elements.
  void (*pack_b)(const Bf16Operand& b, int64_t k0, int64_t kc, int64_t j0, int64_t nc, uint16_t* dst);
  // The mc x nc block of C from a packed A block and B panel, kc_padded deep.
  void (*block)(int64_t kc_padded, const uint16_t* a, int64_t mc, const uint16_t* b, int64_t nc,
                const Bf16Epilogue& ep);
};

// Call only where the CPU has the path (each is compiled with its ISA's flags).
const Bf16GemmKernel& bf16_kernel_generic();
const Bf16GemmKernel& bf16_kernel_avx512bf16();
const Bf16GemmKernel& bf16_kernel_amx();
const Bf16GemmKernel& bf16_kernel_amx_emulated();  // needs AVX-512 (it shares the AMX path's code)

// The dot-instruction loops behind bf16_dot_peak_gflops: one thread, for about `seconds`; return the
// best flops per second of their short timing windows.
double bf16_dot_peak_loop_amx(double seconds);
double bf16_dot_peak_loop_avx512bf16(double seconds);

}  // namespace pn
