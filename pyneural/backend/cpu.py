"""The CPU backend: numpy arrays and the C++ kernels (``pyneural.kernels``, over ``pyneural._C``).

16-bit operands (bfloat16, float16: autocast's lower-precision ops) multiply as 16-bit values with
float32 accumulation and give float32 results; a float32 operand met by a 16-bit one is rounded to
16 bits first, as tensor cores would see it. bf16 GEMMs run on pyneural's bf16 kernel (AMX tiles
or AVX512-BF16) where the CPU has one; otherwise, and for float16 and convolutions, the 16-bit
values are widened and the fp32 kernels accumulate them.
"""
import numpy as np

from pyneural import amp as _amp
from pyneural.kernels import activation as _act
from pyneural.kernels import conv as _conv
from pyneural.kernels import gemm as _gemm
from pyneural.kernels import layernorm as _layernorm
from pyneural.kernels import pool as _pool
from pyneural.kernels import softmax as _softmax

name = "cpu"

_F32 = np.dtype(np.float32)


def _low_dtype(*arrays):
    """The 16-bit dtype among ``arrays``, or None."""
    for a in arrays:
        if a is not None and _amp.is_low_precision(a.dtype):
            return a.dtype
    return None


def _widened(low, *arrays):
    """``arrays`` rounded to the 16-bit dtype ``low``, then held as float32 (exact: products of
    16-bit values are exact in fp32, so the fp32 kernels accumulate them as tensor cores would)."""
    return tuple(None if a is None else to_low(a, low).astype(_F32) for a in arrays)


def _f32(a):
    return a if a is None or a.dtype == _F32 else a.astype(_F32)


def _bf16_kernel():
    """Whether the bf16 GEMM kernel beats the fp32 one here: on AMX tiles or AVX512-BF16's
    vdpbf16ps (2-16x the fp32 FMA rate); its portable path does not."""
    from pyneural.kernels import bf16
    return bf16.gemm_isa() in ("amx", "avx512bf16")


def to_low(a, low):
    """``a`` rounded to the 16-bit dtype ``low`` (round to nearest even)."""
    return a if a.dtype == low else a.astype(low)


def gemm(a, b, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, out=None):
    low = _low_dtype(a, b)
    if low is None:
        return _gemm.gemm(a, b, trans_a=trans_a, trans_b=trans_b, alpha=alpha, beta=beta, out=out)
    if low == _amp.bfloat16 and _bf16_kernel() and (out is None or out.dtype == _F32):
        a, b = (np.ascontiguousarray(to_low(x, low)) for x in (a, b))
        return _gemm.gemm_bf16(a, b, trans_a=trans_a, trans_b=trans_b, alpha=alpha, beta=beta, out=out)
    a, b = _widened(low, a, b)
    return _gemm.gemm(a, b, trans_a=trans_a, trans_b=trans_b, alpha=alpha, beta=beta, out=out)


def _conv_operands(*arrays):
    low = _low_dtype(*arrays)
    return arrays if low is None else _widened(low, *arrays)


def conv2d_forward(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, relu=False):
    if _low_dtype(x, w, bias) is not None:
        x, w = _conv_operands(x, w)
        bias = _f32(bias)
    return _conv.conv2d_forward(x, w, bias, stride, padding, dilation, groups, relu=relu)


def conv2d_backward_data(dy, w, x_shape, stride=1, padding=0, dilation=1, groups=1):
    dy, w = _conv_operands(dy, w)
    return _conv.conv2d_backward_data(dy, w, x_shape, stride, padding, dilation, groups)


def conv2d_backward_weight(dy, x, w_shape, stride=1, padding=0, dilation=1, groups=1):
    dy, x = _conv_operands(dy, x)
    return _conv.conv2d_backward_weight(dy, x, w_shape, stride, padding, dilation, groups)


bias_relu = _act.bias_relu
relu_backward = _act.relu_backward
max_pool2d_forward = _pool.max_pool2d_forward
avg_pool2d_forward = _pool.avg_pool2d_forward
avg_pool2d_backward = _pool.avg_pool2d_backward
norm_rows_forward = _layernorm.norm_rows_forward          # LayerNorm / GroupNorm -> (y, mean, rstd)
norm_rows_backward = _layernorm.norm_rows_backward
softmax = _softmax.softmax
log_softmax = _softmax.log_softmax
cross_entropy_forward = _softmax.softmax_cross_entropy      # -> (losses, probs)
cross_entropy_backward = _softmax.softmax_cross_entropy_backward


def max_pool2d_backward(dy, argmax, x_shape, kernel_size, stride, padding):
    return _pool.max_pool2d_backward(dy, argmax, x_shape)


def from_host(a):
    return a
