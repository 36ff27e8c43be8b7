// The softmax row kernels of each SIMD path. softmax_rows.inl holds their one source; softmax.cpp
// (baseline ISA), softmax_avx2.cpp and softmax_avx512.cpp each compile it with their own flags
// and hand out the result as a table, and softmax.cpp picks the table from pn::active_isa() per call.
// Labels are checked by the caller (softmax.cpp) before any table entry runs.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "cpu/parallel_team.h"  // team_threads() in softmax_rows.inl

namespace pn {

struct SoftmaxKernels {
  void (*softmax)(const float* x, float* y, int64_t rows, int64_t cols);
  void (*log_softmax)(const float* x, float* y, int64_t rows, int64_t cols);
  void (*xent_forward)(const float* logits, const int64_t* labels, float* losses, float* probs, int64_t n,
                       int64_t c, float label_smoothing);
  void (*xent_backward)(const float* probs, const int64_t* labels, const float* dlosses, float* dlogits, int64_t n,
                        int64_t c, float label_smoothing);
};

// Call only when the CPU has the path: these functions are themselves compiled with its flags.
SoftmaxKernels softmax_kernels_generic();
SoftmaxKernels softmax_kernels_avx2();
SoftmaxKernels softmax_kernels_avx512();

}  // namespace pn
