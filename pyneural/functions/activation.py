"""Activations: relu, leaky_relu, elu, selu, silu, softplus, hardtanh/relu6, hardsigmoid,
hardswish, mish, gelu (exact, erf-based: PyTorch's default, or the tanh approximation), tanh,
sigmoid, softmax and log_softmax.

relu runs the C++ bias_relu/relu_backward kernels; softmax and log_softmax run the row kernels
on the last axis (another ``dim`` is moved last first). Each backward keeps only the output (relu,
tanh, sigmoid, softmax) or only the input (the rest). Subgradients at kinks are PyTorch's: leaky
relu and elu take the negative branch at 0, hardtanh passes no gradient at its ends.

``inplace=True`` writes the result into the input (PyTorch's semantics, through
``functions.inplace``); an activation that keeps its input for backward then runs on a copy.
"""
import math

import numpy as np

from pyneural import backend
from pyneural.tensor import Function, get_array_module, is_grad_enabled

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
    # scipy's erf is a numpy ufunc, so host arrays and the emulated device's arrays (which run
    # numpy ufuncs on their host memory) both take it; CuPy's arrays need CuPy's own
    if xp.__name__.startswith("cupy"):
        from cupyx.scipy.special import erf
        return erf
    from scipy.special import erf
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


def _sigmoid(xp, x):
    return 0.5 * (xp.tanh(0.5 * x) + 1.0)  # no overflow in exp for large |x|


def _softplus(xp, z):
    """log(1 + exp(z)) without overflow."""
    return xp.log1p(xp.exp(-xp.abs(z))) + xp.maximum(z, 0)


class LeakyReLU(Function):
    def __init__(self, negative_slope):
        self.slope = negative_slope

    def forward(self, x):
        self.x = x
        return get_array_module(x).where(x > 0, x, x * self.slope)

    def backward(self, gy):
        return (get_array_module(gy).where(self.x > 0, gy, gy * self.slope),)


class ELU(Function):
    """scale * (x if x > 0 else alpha * (exp(x) - 1)); SELU is ELU with its fixed constants."""

    def __init__(self, alpha, scale=1.0):
        self.alpha, self.scale = alpha, scale

    def forward(self, x):
        xp = get_array_module(x)
        self.x = x
        y = xp.where(x > 0, x, self.alpha * xp.expm1(xp.minimum(x, 0)))
        return y if self.scale == 1.0 else y * self.scale

    def backward(self, gy):
        xp = get_array_module(gy)
        x = self.x
        g = xp.where(x > 0, gy, gy * (self.alpha * xp.exp(xp.minimum(x, 0))))
        return (g if self.scale == 1.0 else g * self.scale,)


_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


class SiLU(Function):
    """x * sigmoid(x)"""

    def forward(self, x):
        xp = get_array_module(x)
        self.x, self.s = x, _sigmoid(xp, x)
        return x * self.s

    def backward(self, gy):
        s = self.s
        return (gy * (s * (1.0 + self.x * (1.0 - s))),)


class Softplus(Function):
    """log(1 + exp(beta * x)) / beta, and x itself where beta * x > threshold (PyTorch's switch
    to the linear branch)."""

    def __init__(self, beta, threshold):
        self.beta, self.threshold = beta, threshold

    def forward(self, x):
        xp = get_array_module(x)
        self.x = x
        z = x * self.beta
        return xp.where(z > self.threshold, x, _softplus(xp, z) / self.beta)

    def backward(self, gy):
        xp = get_array_module(gy)
        z = self.x * self.beta
        return (xp.where(z > self.threshold, gy, gy * _sigmoid(xp, z)),)


class Hardtanh(Function):
    """clip(x, min_val, max_val); the gradient passes strictly inside (PyTorch's rule)."""

    def __init__(self, min_val, max_val):
        self.min_val, self.max_val = min_val, max_val

    def forward(self, x):
        self.x = x
        return get_array_module(x).clip(x, self.min_val, self.max_val)

    def backward(self, gy):
        x = self.x
        return (gy * ((x > self.min_val) & (x < self.max_val)),)


class Hardsigmoid(Function):
    """relu6(x + 3) / 6; slope 1/6 strictly between -3 and 3."""

    def forward(self, x):
        self.x = x
        return get_array_module(x).clip(x / 6.0 + 0.5, 0.0, 1.0)

    def backward(self, gy):
        x = self.x
        return (gy * ((x > -3.0) & (x < 3.0)) / 6.0,)


class Hardswish(Function):
    """x * relu6(x + 3) / 6; the gradient is 0 below -3, x/3 + 1/2 up to 3 (inclusive), 1 above."""

    def forward(self, x):
        self.x = x
        return x * get_array_module(x).clip(x / 6.0 + 0.5, 0.0, 1.0)

    def backward(self, gy):
        xp = get_array_module(gy)
        x = self.x
        return (xp.where(x < -3.0, 0.0, xp.where(x <= 3.0, gy * (x / 3.0 + 0.5), gy)).astype(gy.dtype),)


class Mish(Function):
    """x * tanh(softplus(x))"""

    def forward(self, x):
        xp = get_array_module(x)
        self.x = x
        self.t = xp.tanh(_softplus(xp, x))
        return x * self.t

    def backward(self, gy):
        xp = get_array_module(gy)
        x, t = self.x, self.t
        return (gy * (t + x * _sigmoid(xp, x) * (1.0 - t * t)),)


class Softmax(Function):
    def __init__(self, axis):
        self.axis = axis

    def forward(self, x):
        if x.size == 0:  # the row kernels refuse zero-size arrays; there is nothing to normalise
            self.y = get_array_module(x).empty_like(x)
            return self.y
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
        if x.size == 0:
            self.y = get_array_module(x).empty_like(x)
            return self.y
        x2, shape = _rows(x, self.axis)
        self.y = _unrows(backend.of(x2).log_softmax(x2), shape, self.axis, x.ndim)
        return self.y

    def backward(self, gy):
        xp = get_array_module(gy)
        return (gy - xp.exp(self.y) * gy.sum(axis=self.axis, keepdims=True),)


def _axis(dim, ndim, fn):
    if dim is None:
        raise TypeError(f"{fn}: dim must be given (the axis to normalise over)")
    if not -max(ndim, 1) <= dim < max(ndim, 1):
        raise IndexError(f"{fn}: dimension {dim} out of range for a tensor with {ndim} dimensions")
    return dim % ndim if ndim else 0


def implicit_softmax_dim(ndim, fn):
    """PyTorch's legacy choice of dim when none is given, with its warning."""
    import warnings
    warnings.warn(f"Implicit dimension choice for {fn} has been deprecated. Change the call to include dim=X "
                  f"as an argument.", UserWarning, stacklevel=3)
    return 0 if ndim in (0, 1, 3) else 1


def _activate(x, fn, inplace, what, keeps_input=True):
    """``fn(x)``, or with ``inplace`` the result written into x (on a copy of x when ``fn``
    keeps its input for backward, so the write cannot spoil it)."""
    if not inplace:
        return fn.apply(x)
    from pyneural.functions import elementwise, inplace as _inplace
    source = elementwise.clone(x) if keeps_input and x.requires_grad and is_grad_enabled() else x
    return _inplace.run(what, x, _inplace.Overwrite(), fn.apply(source))


def _check_float(fn, x):
    if not x.is_floating_point():
        raise TypeError(f"{fn}: needs a floating point tensor, got {x.data.dtype}")


def relu(x, inplace=False):
    return _activate(x, ReLU(), inplace, "relu_", keeps_input=False)


def leaky_relu(x, negative_slope=0.01, inplace=False):
    return _activate(x, LeakyReLU(float(negative_slope)), inplace, "leaky_relu_")


def elu(x, alpha=1.0, inplace=False):
    _check_float("elu", x)
    return _activate(x, ELU(float(alpha)), inplace, "elu_")


def selu(x, inplace=False):
    _check_float("selu", x)
    return _activate(x, ELU(_SELU_ALPHA, _SELU_SCALE), inplace, "selu_")


def silu(x, inplace=False):
    _check_float("silu", x)
    return _activate(x, SiLU(), inplace, "silu_")


def softplus(x, beta=1.0, threshold=20.0):
    _check_float("softplus", x)
    return Softplus(float(beta), float(threshold)).apply(x)


def hardtanh(x, min_val=-1.0, max_val=1.0, inplace=False):
    if min_val > max_val:
        raise ValueError(f"hardtanh: min_val {min_val} must not exceed max_val {max_val}")
    return _activate(x, Hardtanh(min_val, max_val), inplace, "hardtanh_")


def relu6(x, inplace=False):
    return hardtanh(x, 0.0, 6.0, inplace)


def hardsigmoid(x, inplace=False):
    _check_float("hardsigmoid", x)
    return _activate(x, Hardsigmoid(), inplace, "hardsigmoid_")


def hardswish(x, inplace=False):
    _check_float("hardswish", x)
    return _activate(x, Hardswish(), inplace, "hardswish_")


def mish(x, inplace=False):
    _check_float("mish", x)
    return _activate(x, Mish(), inplace, "mish_")


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


def _softmax_input(x, dim, dtype, fn):
    if dim is None:
        dim = implicit_softmax_dim(x.data.ndim, fn)
    if dtype is not None:
        from pyneural.functions import elementwise
        x = elementwise.cast(x, np.dtype(dtype))
    _check_float(fn, x)
    return x, _axis(dim, x.data.ndim, fn)


def softmax(x, dim=None, dtype=None):
    x, axis = _softmax_input(x, dim, dtype, "softmax")
    if x.data.ndim == 0:
        return Softmax(0).apply(x.reshape(1)).reshape(())
    return Softmax(axis).apply(x)


def log_softmax(x, dim=None, dtype=None):
    x, axis = _softmax_input(x, dim, dtype, "log_softmax")
    if x.data.ndim == 0:
        return LogSoftmax(0).apply(x.reshape(1)).reshape(())
    return LogSoftmax(axis).apply(x)
