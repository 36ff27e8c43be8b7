"""Reductions: sum, mean, var, max/min and argmax/argmin, over all elements or chosen dims.

``max(dim)``/``min(dim)`` return ``(values, indices)`` like PyTorch, and the gradient goes to the
one element the index names. The full reductions ``max()``/``min()`` split the gradient evenly
between tied maxima (PyTorch's rule for ``amax``).
"""
from collections import namedtuple

import numpy as np

from pyneural.tensor import Function, get_array_module, wrap

_max_builtin = max  # the names sum/max/min below shadow the builtins

MaxResult = namedtuple("MaxResult", ["values", "indices"])


def _axes(dim, ndim, fn):
    if dim is None:
        return None
    dims = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)
    out = []
    for d in dims:
        if not -ndim <= d < _max_builtin(ndim, 1):
            raise IndexError(f"{fn}: dimension {d} out of range for a tensor with {ndim} dimensions")
        out.append(int(d) % _max_builtin(ndim, 1))
    return tuple(out)


def _expand_back(gy, in_shape, axes, keepdims):
    """Broadcast a reduced gradient back over ``in_shape``."""
    xp = get_array_module(gy)
    if not keepdims and axes is not None:
        gy = xp.expand_dims(gy, axes)
    return xp.broadcast_to(gy, in_shape)


class Sum(Function):
    def __init__(self, axes, keepdims):
        self.axes, self.keepdims = axes, keepdims

    def forward(self, x):
        self.in_shape = x.shape
        return x.sum(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        return (_expand_back(gy, self.in_shape, self.axes, self.keepdims),)


class Mean(Function):
    def __init__(self, axes, keepdims):
        self.axes, self.keepdims = axes, keepdims

    def forward(self, x):
        self.in_shape = x.shape
        y = x.mean(axis=self.axes, keepdims=self.keepdims)
        self.count = x.size // _max_builtin(y.size, 1) if x.size else 1
        return y

    def backward(self, gy):
        return (_expand_back(gy / self.count, self.in_shape, self.axes, self.keepdims),)


class Var(Function):
    def __init__(self, axes, keepdims, ddof):
        self.axes, self.keepdims, self.ddof = axes, keepdims, ddof

    def forward(self, x):
        self.centered = x - x.mean(axis=self.axes, keepdims=True)
        y = (self.centered * self.centered).sum(axis=self.axes, keepdims=self.keepdims)
        self.denom = x.size // _max_builtin(y.size, 1) - self.ddof
        return y / self.denom

    def backward(self, gy):
        xc = self.centered
        return (_expand_back(gy, xc.shape, self.axes, self.keepdims) * (2.0 / self.denom) * xc,)


class MaxAll(Function):
    """max()/min() over every element; ties share the gradient evenly."""

    def __init__(self, use_min):
        self.use_min = use_min

    def forward(self, x):
        self.x = x
        self.y = x.min() if self.use_min else x.max()
        return self.y

    def backward(self, gy):
        mask = self.x == self.y
        return (mask * (gy / mask.sum()),)


class MaxDim(Function):
    """values of max(dim)/min(dim); the gradient goes to the element ``indices`` names."""

    def __init__(self, axis, keepdims, indices):
        self.axis, self.keepdims, self.indices = axis, keepdims, indices

    def forward(self, x):
        self.in_meta = (x.shape, x.dtype)
        xp = get_array_module(x)
        values = xp.take_along_axis(x, xp.expand_dims(self.indices, self.axis), axis=self.axis)
        return values if self.keepdims else values.squeeze(self.axis)

    def backward(self, gy):
        xp = get_array_module(gy)
        gx = xp.zeros(*self.in_meta)
        if not self.keepdims:
            gy = xp.expand_dims(gy, self.axis)
        xp.put_along_axis(gx, xp.expand_dims(self.indices, self.axis), gy, axis=self.axis)
        return (gx,)


def sum(x, dim=None, keepdim=False):
    return Sum(_axes(dim, x.data.ndim, "sum"), keepdim).apply(x)


def mean(x, dim=None, keepdim=False):
    if x.data.dtype.kind not in "fc":
        raise TypeError(f"mean: needs a floating point tensor, got {x.data.dtype}")
    return Mean(_axes(dim, x.data.ndim, "mean"), keepdim).apply(x)


def var(x, dim=None, keepdim=False, unbiased=True):
    return Var(_axes(dim, x.data.ndim, "var"), keepdim, 1 if unbiased else 0).apply(x)


def _max_min(x, dim, keepdim, use_min):
    fn = "min" if use_min else "max"
    if x.data.size == 0:
        raise ValueError(f"{fn}: empty tensor of shape {x.data.shape}")
    if dim is None:
        return MaxAll(use_min).apply(x)
    (axis,) = _axes(dim, x.data.ndim, fn)
    xp = get_array_module(x.data)
    indices = (xp.argmin if use_min else xp.argmax)(x.data, axis=axis)
    values = MaxDim(axis, keepdim, indices).apply(x)
    return MaxResult(values, wrap(xp.expand_dims(indices, axis) if keepdim else indices))


def max(x, dim=None, keepdim=False):
    return _max_min(x, dim, keepdim, False)


def min(x, dim=None, keepdim=False):
    return _max_min(x, dim, keepdim, True)


def argmax(x, dim=None, keepdim=False):
    """Index of the largest element (flattened when ``dim`` is None); not differentiable."""
    xp = get_array_module(x.data)
    if dim is None:
        return wrap(xp.asarray(xp.argmax(x.data)))
    (axis,) = _axes(dim, x.data.ndim, "argmax")
    return wrap(xp.argmax(x.data, axis=axis, keepdims=keepdim))


def argmin(x, dim=None, keepdim=False):
    xp = get_array_module(x.data)
    if dim is None:
        return wrap(xp.asarray(xp.argmin(x.data)))
    (axis,) = _axes(dim, x.data.ndim, "argmin")
    return wrap(xp.argmin(x.data, axis=axis, keepdims=keepdim))
