// The softmax row kernels (softmax_rows.inl) compiled for AVX-512: 16 floats per vector.
#include "cpu/softmax_isa.h"

namespace pn {
namespace {
#include "cpu/softmax_rows.inl"
}  // namespace

SoftmaxKernels softmax_kernels_avx512() { return {softmax, log_softmax, xent_forward, xent_backward}; }

}  // namespace pn
