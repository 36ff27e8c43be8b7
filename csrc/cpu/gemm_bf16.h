// bf16 GEMM on the CPU: C = alpha * op(A) @ op(B) + beta * C (+ bias, + ReLU) for bfloat16 A and B
// with float32 accumulation, C float32 or bfloat16. gemm_bf16.cpp holds the blocked driver and the
// run-time choice of path; gemm_bf16_<isa>.cpp the packers and microkernels of each path.
#pragma once
#include <cstdint>
#include <string>

namespace pn {

// The paths, fastest first: AMX tiles, AVX512-BF16's vdpbf16ps, portable C++. amx_emulated runs the
// AMX path's own packers, block loops and epilogue on a software model of the tile registers
// (gemm_bf16_amx_emulated_avx512.cpp), so that code is tested on CPUs without AMX; it is never chosen
// unless asked for by name.
enum class Bf16GemmIsa { generic = 0, avx512bf16 = 1, amx = 2, amx_emulated = 3 };

// The best real path this CPU (and OS) allows: CPUID plus, for AMX, Linux's tile-data permission.
Bf16GemmIsa bf16_gemm_detected_isa();
// The path calls without an explicit one take: PYNEURAL_BF16_ISA from the environment if set (read
// at the first call), else the detected one; set_bf16_gemm_isa() changes it.
Bf16GemmIsa bf16_gemm_active_isa();
void set_bf16_gemm_isa(Bf16GemmIsa isa);  // throws std::invalid_argument if unavailable
const char* bf16_gemm_isa_name(Bf16GemmIsa isa);
Bf16GemmIsa bf16_gemm_isa_from_name(const std::string& name);  // throws if unknown or unavailable
bool bf16_gemm_isa_available(Bf16GemmIsa isa);

struct Bf16GemmArgs {
  bool trans_a = false, trans_b = false;
  int64_t M = 0, N = 0, K = 0;  // op(A) is M x K, op(B) is K x N
  float alpha = 1.f;
  const uint16_t* a = nullptr;  // row-major, leading dimension lda (K x M when trans_a)
  int64_t lda = 0;
  const uint16_t* b = nullptr;  // row-major, leading dimension ldb (N x K when trans_b)
  int64_t ldb = 0;
  float beta = 0.f;             // beta == 0: C is write-only (NaN there never reaches the result)
  void* c = nullptr;            // M x N row-major, leading dimension ldc: float, or uint16_t bf16 bits
  int64_t ldc = 0;
  bool c_bf16 = false;
  const float* bias = nullptr;  // N floats added to every row after the product, or null
  const float* row_bias = nullptr;  // M floats added to every column (an NCHW convolution's bias), or null
  bool relu = false;            // then max(0, .) (NaN stays NaN)
};

// C = relu?(alpha * op(A) @ op(B) + beta * C + bias) on the given path (checked: throws if the CPU
// lacks it). Runs on the OpenMP threads; from inside a parallel region, on the calling thread.
// alpha == 0 or K == 0 never reads A or B (BLAS convention).
void gemm_bf16(const Bf16GemmArgs& args, Bf16GemmIsa isa);

struct Bf16GemmKernel;  // gemm_bf16_kernel.h: a path's packers, block loop and cache blocks

// An operand that packs itself instead of being read from a matrix (the convolution's implicit
// im2col, csrc/cpu/conv_bf16.cpp): pack(self, kernel, x0, xn, k0, kc, dst) writes exactly what
// kernel.pack_a (x: rows of A) or kernel.pack_b (x: columns of B) would write for op(A)[x0:x0+xn,
// k0:k0+kc] or op(B)[k0:k0+kc, x0:x0+xn]. Called from the GEMM's threads, so it must be reentrant.
struct Bf16OperandSource {
  void (*pack)(const void* self, const Bf16GemmKernel& kernel, int64_t x0, int64_t xn, int64_t k0, int64_t kc,
               uint16_t* dst);
  const void* self;
};

// gemm_bf16 with A and/or B from a source (null: the matrix in args, as gemm_bf16 reads it). The
// same driver, blocking, threads and epilogue; only the packing of that operand changes.
void gemm_bf16_from_sources(const Bf16GemmArgs& args, const Bf16OperandSource* a, const Bf16OperandSource* b,
                            Bf16GemmIsa isa);

// Measured peak of one path's multiply instruction on resident operands: every OpenMP thread runs a
// loop of independent _tile_dpbf16ps (amx) or vdpbf16ps (avx512bf16) for about `seconds`; returns
// the sum over threads of each one's best GFLOP/s over ~1 ms windows (on a shared machine the
// undisturbed windows are the peak). The ceiling a GEMM on that path can be held against.
double bf16_dot_peak_gflops(Bf16GemmIsa isa, double seconds);

}  // namespace pn
