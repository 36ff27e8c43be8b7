"""Activations: relu, gelu (exact, erf-based: PyTorch's default), tanh, sigmoid, softmax and
log_softmax.

relu runs the C++ bias_relu/relu_backward kernels; softmax and log_softmax run the row kernels
on the last axis (another ``dim`` is moved last first). Each backward keeps only the output (relu,
tanh, sigmoid, softmax) or only the input (gelu).
"""
import math

import numpy as np

from pyneural import backend
from pyneural.tensor import Function, get_array_module

_ndarray = np.ndarray


class ReLU(Function):
    def forward(self, x):
        if x.ndim >= 2 and x.flags.c_contiguous and x.size and (type(x) is _ndarray or x.dtype == np.float32):
            self.y = backend.of(x).bias_relu(x, None, relu=True)
        else:
            self.y = get_array_module(x).maximum(x, 0)
        return self.y

    def backward(self, gy):
        y = self.y
        if y.ndim >= 2 and gy.flags.c_contiguous and y.flags.c_contiguous and gy.dtype == y.dtype and y.size \
                and (type(gy) is _ndarray or gy.dtype == np.float32):
            return (backend.of(gy).relu_backward(gy, y),)
        return (gy * (y > 0),)


def _erf(xp):
    if xp is np:
        from scipy.special import erf
        return erf
    from cupyx.scipy.special import erf
    return erf


_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class GELU(Function):
    """x * Phi(x) with the exact normal CDF Phi(x) = (1 + erf(x / sqrt 2)) / 2."""

    def forward(self, x):
        xp = get_array_module(x)
        self.x = x
        self.cdf = 0.5 * (1.0 + _erf(xp)(x * _SQRT_HALF))
        return x * self.cdf

    def backward(self, gy):
        x = self.x
        pdf = get_array_module(x).exp(-0.5 * x * x) * _INV_SQRT_2PI
        return (gy * (self.cdf + x * pdf),)


class GELUTanh(Function):
    """The tanh approximation (``approximate="tanh"``)."""
    _C = math.sqrt(2.0 / math.pi)

    def forward(self, x):
        xp = get_array_module(x)
        self.x = x
        self.t = xp.tanh(self._C * (x + 0.044715 * x ** 3))
        return 0.5 * x * (1.0 + self.t)

    def backward(self, gy):
        x, t = self.x, self.t
        dinner = self._C * (1.0 + 3 * 0.044715 * x * x)
        return (gy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * dinner),)


class Tanh(Function):
    def forward(self, x):
        self.y = get_array_module(x).tanh(x)
        return self.y

    def backward(self, gy):
        y = self.y
        return (gy * (1.0 - y * y),)


class Sigmoid(Function):
    def forward(self, x):
        xp = get_array_module(x)
        # tanh form: no overflow in exp for large |x|
        self.y = 0.5 * (xp.tanh(0.5 * x) + 1.0)
        return self.y

    def backward(self, gy):
        y = self.y
        return (gy * y * (1.0 - y),)


def _rows(x, axis):
    """``x`` with ``axis`` moved last, as a C-contiguous 2-D (rows, classes) array."""
    if axis != x.ndim - 1:
        x = get_array_module(x).moveaxis(x, axis, -1)
    shape = x.shape
    x2 = x.reshape(-1, shape[-1]) if x.ndim != 2 else x
    if not x2.flags.c_contiguous:
        x2 = get_array_module(x2).ascontiguousarray(x2)
    return x2, shape


def _unrows(y2, shape, axis, ndim):
    y = y2.reshape(shape)
    if axis != ndim - 1:
        y = get_array_module(y).moveaxis(y, -1, axis)
    return y


class Softmax(Function):
    def __init__(self, axis):
        self.axis = axis

    def forward(self, x):
        x2, shape = _rows(x, self.axis)
        self.y = _unrows(backend.of(x2).softmax(x2), shape, self.axis, x.ndim)
        return self.y

    def backward(self, gy):
        y = self.y
        return (y * (gy - (gy * y).sum(axis=self.axis, keepdims=True)),)


class LogSoftmax(Function):
    def __init__(self, axis):
        self.axis = axis

    def forward(self, x):
        x2, shape = _rows(x, self.axis)
        self.y = _unrows(backend.of(x2).log_softmax(x2), shape, self.axis, x.ndim)
        return self.y

    def backward(self, gy):
        xp = get_array_module(gy)
        return (gy - xp.exp(self.y) * gy.sum(axis=self.axis, keepdims=True),)


def _axis(dim, ndim, fn):
    if dim is None:
        raise TypeError(f"{fn}: dim must be given (the axis to normalise over)")
    if not -ndim <= dim < max(ndim, 1):
        raise IndexError(f"{fn}: dimension {dim} out of range for a tensor with {ndim} dimensions")
    return dim % ndim


def relu(x):
    return ReLU().apply(x)


def gelu(x, approximate="none"):
    if approximate == "none":
        return GELU().apply(x)
    if approximate == "tanh":
        return GELUTanh().apply(x)
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


def tanh(x):
    return Tanh().apply(x)


def sigmoid(x):
    return Sigmoid().apply(x)


def softmax(x, dim):
    return Softmax(_axis(dim, x.data.ndim, "softmax")).apply(x)


def log_softmax(x, dim):
    return LogSoftmax(_axis(dim, x.data.ndim, "log_softmax")).apply(x)
