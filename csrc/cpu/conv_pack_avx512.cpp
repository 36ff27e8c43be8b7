// AVX-512 execution of implicit-im2col fill ops (see conv_pack_isa.h): a masked load and a masked
// store per 16 columns, the load mask leaving padding lanes zero. The ops are built once per block
// of columns and tap, so this loop is all that runs per channel.
#include <immintrin.h>

#include "cpu/conv_pack_isa.h"

namespace pn {

void run_fill_ops_avx512(const float* x, const FillOp* ops, int64_t count, float* out) {
  for (int64_t i = 0; i < count; ++i) {
    const FillOp& op = ops[i];
    const __m512 v = _mm512_maskz_loadu_ps(static_cast<__mmask16>(op.load), x + op.src);
    _mm512_mask_storeu_ps(out + op.dst, static_cast<__mmask16>(op.store), v);
  }
}

}  // namespace pn
