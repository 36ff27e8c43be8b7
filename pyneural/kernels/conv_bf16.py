"""2-D convolution of bfloat16 operands with float32 accumulation: forward (bias + ReLU fused, float32
or bfloat16 output), backward-data and backward-weight, on the bf16 GEMM (csrc/cpu/conv_bf16.cpp).

Activations are ``ml_dtypes.bfloat16`` arrays of logical shape (N, C, H, W), either C-contiguous
(NCHW) or channels_last (NHWC in memory, ``pn.channels_last``); outputs come back in the layout of
the activation they are computed from. The weight is (Co, C/groups, kh, kw) bf16 in any layout (a
dense copy is made when it is not C-contiguous; it is small). The bias is float32; the weight
gradient is float32 (the master weights' dtype). Forward and backward-data write float32 or
bfloat16 (rounded to nearest even once, from the float32 sum): ``out``'s dtype when ``out`` is given
(its old contents are never read), else ``out_dtype`` (float32 by default).
``isa`` forces a bf16 GEMM path (``pyneural.kernels.bf16.GEMM_ISAS``); None takes the active one.
Shapes and hyper-parameters follow ``pyneural.kernels.conv``.
"""
import numpy as np

from pyneural import backend as _layout

from ._checks import check_array
from .conv import _check_dy, _check_shape4, _hyper, _output_size

try:
    from .. import _C
except ImportError:  # pragma: no cover - exercised only without a build
    _C = None

_F32 = np.dtype(np.float32)


def _bf16():
    from .bf16 import bfloat16
    return bfloat16


def _require_bf16(fn, name, a):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{fn}: {name} must be a numpy.ndarray of bfloat16, got {type(a).__name__}")
    if a.dtype != _bf16():
        hint = " (round it with pyneural.kernels.bf16.to_bf16 first)" if a.dtype == _F32 else ""
        raise TypeError(f"{fn}: {name} must have dtype bfloat16, got {a.dtype} (shape {a.shape}){hint}")
    if a.ndim != 4:
        raise ValueError(f"{fn}: {name} must have 4 dimensions, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{fn}: {name} has a zero-size dimension, shape {a.shape}")


def _activation(fn, name, a, channels_last=None, like=None):
    """``(array for the kernel, channels_last)``: NCHW as is, channels_last as its NHWC view, anything
    else copied to NCHW. ``channels_last`` given: that layout, converting if needed. An array that is
    both (one pixel, or one channel) takes the layout of ``like`` (the output, or the other operand)."""
    _require_bf16(fn, name, a)
    if channels_last is None:
        both = a.flags.c_contiguous and a.transpose(0, 2, 3, 1).flags.c_contiguous
        channels_last = _layout.is_channels_last(like if both and isinstance(like, np.ndarray) else a)
    if channels_last:
        return _layout.nhwc(a), True
    return np.ascontiguousarray(a), False


def _weight(fn, w):
    _require_bf16(fn, "weight", w)
    return np.ascontiguousarray(w)




def _isa(fn, isa):
    from .bf16 import GEMM_ISAS
    if isa is not None and isa not in GEMM_ISAS:
        raise ValueError(f"{fn}: isa must be one of {GEMM_ISAS} or None, got {isa!r}")
    return isa or ""


def _output(fn, name, out, shape, out_dtype, channels_last, dtypes):
    """``(array the kernel writes, its logical (N, C, H, W) view)``: ``out`` checked (its dtype one of
    ``dtypes``, in the layout the kernel writes), or a new uninitialised array of ``out_dtype``."""
    n, c, h, w = shape
    if out is None:
        dtype = np.dtype(np.float32 if out_dtype is None else out_dtype)
        if dtype not in dtypes:
            raise TypeError(f"{fn}: out_dtype must be {' or '.join(d.name for d in dtypes)}, got {dtype}")
        if not channels_last:
            out = np.empty(shape, dtype=dtype)
            return out, out
        out = np.empty((n, h, w, c), dtype=dtype)
        return out, out.transpose(0, 3, 1, 2)
    if not isinstance(out, np.ndarray) or out.dtype not in dtypes:
        got = out.dtype if isinstance(out, np.ndarray) else type(out).__name__
        raise TypeError(f"{fn}: {name} must be a numpy.ndarray of {' or '.join(d.name for d in dtypes)}, got {got}")
    if out_dtype is not None and np.dtype(out_dtype) != out.dtype:
        raise TypeError(f"{fn}: {name} has dtype {out.dtype} but out_dtype={np.dtype(out_dtype)}")
    if out.shape != tuple(shape):
        raise ValueError(f"{fn}: {name} must have shape {tuple(shape)}, got {out.shape}")
    written = out.transpose(0, 2, 3, 1) if channels_last else out
    if not written.flags.c_contiguous:
        layout = "channels_last" if channels_last else "C-contiguous (NCHW)"
        raise ValueError(f"{fn}: {name} must be {layout}, like the operand it is computed from "
                         f"(shape {out.shape}, strides {out.strides})")
    if not out.flags.writeable:
        raise ValueError(f"{fn}: {name} is read-only")
    return written, out


def _bits(a):
    return a.view(np.uint16) if a.dtype == _bf16() else a


def conv2d_bf16_forward(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, relu=False, *, out=None,
                        out_dtype=None, isa=None):
    """y = relu?(conv2d(x, w) + bias) for bf16 ``x`` and ``w``, float32 sums; y in x's layout."""
    fn = "conv2d_bf16"
    xk, channels_last = _activation(fn, "input", x, like=out)
    wk = _weight(fn, w)
    if bias is not None:
        if not isinstance(bias, np.ndarray) or bias.dtype != _F32:
            got = bias.dtype if isinstance(bias, np.ndarray) else type(bias).__name__
            raise TypeError(f"{fn}: bias must be a float32 numpy.ndarray of shape ({w.shape[0]},), got {got}")
        check_array(fn, "bias", bias, ndim=1, dtypes=(np.float32,))
        if bias.shape != (w.shape[0],):
            raise ValueError(f"{fn}: bias must have shape ({w.shape[0]},) for weight {w.shape}, got {bias.shape}")
    stride, padding, dilation, groups = _hyper(fn, stride, padding, dilation, groups)
    Ho, Wo = _output_size(fn, x.shape, w.shape, stride, padding, dilation, groups)
    out, y = _output(fn, "out", out, (x.shape[0], w.shape[0], Ho, Wo), out_dtype, channels_last, (_F32, _bf16()))
    _C.conv2d_bf16_forward(xk.view(np.uint16), wk.view(np.uint16), bias, _bits(out), stride, padding, dilation,
                           groups, bool(relu), channels_last, _isa(fn, isa))
    return y


def conv2d_bf16_backward_data(dy, w, x_shape, stride=1, padding=0, dilation=1, groups=1, *, out=None,
                              out_dtype=None, isa=None):
    """dx (x_shape, in dy's layout) = gradient of sum(conv2d(x, w) * dy) with respect to x."""
    fn = "conv2d_bf16_backward_data"
    dyk, channels_last = _activation(fn, "dy", dy, like=out)
    wk = _weight(fn, w)
    x_shape = _check_shape4(fn, "x_shape", x_shape, "(N, C, H, W)")
    stride, padding, dilation, groups = _hyper(fn, stride, padding, dilation, groups)
    Ho, Wo = _output_size(fn, x_shape, w.shape, stride, padding, dilation, groups)
    _check_dy(fn, dy, (x_shape[0], w.shape[0], Ho, Wo))
    out, dx = _output(fn, "out", out, x_shape, out_dtype, channels_last, (_F32, _bf16()))
    _C.conv2d_bf16_backward_data(dyk.view(np.uint16), wk.view(np.uint16), _bits(out), stride, padding, dilation,
                                 groups, channels_last, _isa(fn, isa))
    return dx


def conv2d_bf16_backward_weight(dy, x, w_shape, stride=1, padding=0, dilation=1, groups=1, *, out=None,
                                isa=None):
    """dw (w_shape, float32) = gradient of sum(conv2d(x, w) * dy) with respect to w; dy is taken in
    x's layout (converted if it is in the other)."""
    fn = "conv2d_bf16_backward_weight"
    xk, channels_last = _activation(fn, "input", x, like=dy)
    dyk, _ = _activation(fn, "dy", dy, channels_last)
    w_shape = _check_shape4(fn, "w_shape", w_shape, "(Co, C/groups, kh, kw)")
    stride, padding, dilation, groups = _hyper(fn, stride, padding, dilation, groups)
    Ho, Wo = _output_size(fn, x.shape, w_shape, stride, padding, dilation, groups)
    _check_dy(fn, dy, (x.shape[0], w_shape[0], Ho, Wo))
    dw, _ = _output(fn, "out", out, w_shape, None, False, (_F32,))
    _C.conv2d_bf16_backward_weight(dyk.view(np.uint16), xk.view(np.uint16), dw, stride, padding, dilation, groups,
                                   channels_last, _isa(fn, isa))
    return dw
