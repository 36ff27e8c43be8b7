"""Bias + ReLU epilogue (after Linear and Conv2d) and the ReLU backward.

float32 runs the C++ kernels in ``pyneural._C`` (csrc/cpu/activation.cpp) on the arrays in place with
the GIL released; float64 runs plain numpy (the gradient-check and reference path).
"""
import numpy as np

from pyneural import _C
from pyneural.kernels._checks import check_array, check_output, check_same_dtype

_ndarray = np.ndarray
_F32 = np.dtype(np.float32)


def _data_address(a):
    return a.__array_interface__["data"][0]


def _check_out_aliasing(fn, out, **inputs):
    """``out`` may be one of the inputs exactly (in place) or separate memory, never a partial overlap."""
    for name, a in inputs.items():
        if a is not None and np.may_share_memory(out, a) and _data_address(out) != _data_address(a):
            raise ValueError(f"{fn}: out (shape {out.shape}) partially overlaps {name} (shape {a.shape}); "
                             f"pass {name} itself for in-place, or a separate array")


def bias_relu(x, bias=None, relu=True, out=None):
    """Return ``max(x + bias, 0)`` with ``bias`` (shape ``(x.shape[1],)``) added along axis 1.

    ``x`` has at least 2 dimensions: (N, F) after Linear, (N, C, H, W) after Conv2d. ``bias=None``
    adds nothing; ``relu=False`` skips the clamp. ``out`` (same shape and dtype as ``x``) receives the
    result and may be ``x`` itself for an in-place update. NaN stays NaN.
    """
    # Fast path: float32 arrays go straight to _C, which checks every argument itself; on any
    # complaint the checks below run and name the problem in this module's words.
    if type(x) is _ndarray and x.dtype == _F32 and (bias is None or type(bias) is _ndarray):
        y = np.empty_like(x) if out is None else out
        if type(y) is _ndarray:
            try:
                _C.bias_relu(x, bias, y, bool(relu))
                return y
            except (ValueError, TypeError):
                pass
    fn = "bias_relu"
    check_array(fn, "x", x)
    if x.ndim < 2:
        raise ValueError(f"{fn}: x must have at least 2 dimensions (N, C, ...), got shape {x.shape}")
    if bias is not None:
        check_array(fn, "bias", bias, ndim=1)
        check_same_dtype(fn, x=x, bias=bias)
        if bias.shape[0] != x.shape[1]:
            raise ValueError(f"{fn}: bias has shape {bias.shape} but x {x.shape} has {x.shape[1]} "
                             f"channels on axis 1; expected ({x.shape[1]},)")
    if out is None:
        out = np.empty_like(x)
    else:
        check_output(fn, "out", out, x.shape, x.dtype)
        _check_out_aliasing(fn, out, x=x, bias=bias)

    if x.dtype == np.float32:
        _C.bias_relu(x, bias, out, bool(relu))
        return out

    if bias is not None:
        np.add(x, bias.reshape((1, -1) + (1,) * (x.ndim - 2)), out=out)
    else:
        np.copyto(out, x)
    if relu:
        np.maximum(out, 0.0, out=out)
    return out


def relu_backward(dy, y, out=None):
    """Return ``dx = dy`` where ``y > 0`` and 0 elsewhere (``y`` is the ReLU's output).

    ``out`` (same shape and dtype) receives ``dx`` and may be ``dy`` itself.
    """
    if type(dy) is _ndarray and dy.dtype == _F32 and dy.size:  # fast path, as in bias_relu
        dx = np.empty_like(dy) if out is None else out
        if type(dx) is _ndarray:
            try:
                _C.relu_backward(dy, y, dx)
                return dx
            except (ValueError, TypeError):
                pass
    fn = "relu_backward"
    check_array(fn, "dy", dy)
    check_array(fn, "y", y)
    check_same_dtype(fn, dy=dy, y=y)
    if dy.shape != y.shape:
        raise ValueError(f"{fn}: dy has shape {dy.shape} but y has shape {y.shape}")
    if out is None:
        out = np.empty_like(dy)
    else:
        check_output(fn, "out", out, dy.shape, dy.dtype)
        _check_out_aliasing(fn, out, dy=dy, y=y)

    if dy.dtype == np.float32:
        _C.relu_backward(dy, y, out)
        return out

    np.copyto(out, np.where(y > 0, dy, 0.0))
    return out
