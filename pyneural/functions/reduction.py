"""Reductions: sum, prod, mean, var/std, norm, logsumexp, max/min and argmax/argmin, any/all, and
cumsum, over all elements or chosen dims.

``max(dim)``/``min(dim)`` return ``(values, indices)`` like PyTorch, and the gradient goes to the
one element the index names. The full reductions ``max()``/``min()`` split the gradient evenly
between tied maxima (PyTorch's rule for ``amax``).

Empty inputs give PyTorch's results: sum 0, mean and var NaN, logsumexp -inf, any False, all True;
max/min/argmax over nothing raise (there is no identity to return).
"""
import warnings
from collections import namedtuple

import numpy as np

from pyneural.tensor import Function, Tensor, get_array_module, wrap

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
    if len(set(out)) != len(out):
        raise ValueError(f"{fn}: dim {dim} names a dimension twice")
    return tuple(out) if ndim else ()  # a 0-d tensor's dim 0 is itself: reduce over nothing


def _count(shape, axes):
    """How many elements each output of a reduction over ``axes`` combines."""
    n = 1
    for i, size in enumerate(shape):
        if axes is None or i in axes:
            n *= size
    return n


def _expand_back(gy, in_shape, axes, keepdims):
    """Broadcast a reduced gradient back over ``in_shape``."""
    xp = get_array_module(gy)
    if not keepdims and axes is not None:
        gy = xp.expand_dims(gy, axes)
    return xp.broadcast_to(gy, in_shape)


def _divide(total, count):
    # total / count, NaN where nothing was counted (0/0 without numpy's warning)
    return total / count if count else total * np.nan


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
        self.count = _count(x.shape, self.axes)
        return _divide(x.sum(axis=self.axes, keepdims=self.keepdims), self.count)

    def backward(self, gy):
        return (_expand_back(_divide(gy, self.count), self.in_shape, self.axes, self.keepdims),)


class Var(Function):
    """sum((x - mean)^2) / (N - correction); with ``sqrt`` the standard deviation, whose gradient
    is taken as 0 where it is 0 (PyTorch's rule) instead of 0 * inf."""

    def __init__(self, axes, keepdims, correction, sqrt=False):
        self.axes, self.keepdims, self.correction, self.sqrt = axes, keepdims, correction, sqrt

    def forward(self, x):
        n = _count(x.shape, self.axes)
        self.centered = x - _divide(x.sum(axis=self.axes, keepdims=True), n)
        squares = (self.centered * self.centered).sum(axis=self.axes, keepdims=self.keepdims)
        self.denom = _max_builtin(n - self.correction, 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            y = squares / self.denom
            if self.sqrt:
                y = get_array_module(x).sqrt(y)
                self.y = y
        return y

    def backward(self, gy):
        xc = self.centered
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.sqrt:
                gy = get_array_module(gy).where(self.y == 0, 0, gy / (2 * self.y))
            return (_expand_back(gy, xc.shape, self.axes, self.keepdims) * (2.0 / self.denom) * xc,)


class LogSumExp(Function):
    """log(sum(exp(x))) with the max shifted out; the gradient is softmax(x) over the dims."""

    def __init__(self, axes, keepdims):
        self.axes, self.keepdims = axes, keepdims

    def forward(self, x):
        xp = get_array_module(x)
        if x.size == 0 or _count(x.shape, self.axes) == 0:
            y = xp.full(x.sum(axis=self.axes, keepdims=True).shape, -np.inf, dtype=x.dtype)
        else:
            m = x.max(axis=self.axes, keepdims=True)
            m = xp.where(xp.isfinite(m), m, 0)  # all -inf (or an inf): no shift, the sum decides
            with np.errstate(divide="ignore"):
                y = xp.log(xp.exp(x - m).sum(axis=self.axes, keepdims=True)) + m
        self.x, self.y = x, y
        if self.keepdims:
            return y
        return y.reshape(tuple(n for i, n in enumerate(x.shape) if self.axes is not None and i not in self.axes))

    def backward(self, gy):
        xp = get_array_module(gy)
        g = _expand_back(gy, self.x.shape, self.axes, self.keepdims)
        with np.errstate(invalid="ignore"):
            return (g * xp.exp(self.x - self.y),)


class CumSum(Function):
    def __init__(self, axis):
        self.axis = axis

    def forward(self, x):
        return get_array_module(x).cumsum(x, axis=self.axis)

    def backward(self, gy):
        # d(cumsum)ᵀ is the reversed cumulative sum
        xp = get_array_module(gy)
        return (xp.flip(xp.cumsum(xp.flip(gy, self.axis), axis=self.axis), self.axis),)


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


class Prod(Function):
    """The product over one axis (or all elements). Backward multiplies the gradient by the product
    of the *other* elements, from exclusive running products from both ends, so zeros in the
    input give the right gradient (``prod / x`` would divide by them)."""

    def __init__(self, axis, keepdims):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.x = x
        return get_array_module(x).prod(x, axis=self.axis, keepdims=self.keepdims)

    def backward(self, gy):
        xp = get_array_module(gy)
        x = self.x if self.axis is not None else self.x.reshape(-1)
        axis = 0 if self.axis is None else self.axis
        last = xp.moveaxis(x, axis, -1)
        ones = xp.ones(last.shape[:-1] + (1,), dtype=x.dtype)
        before = xp.concatenate([ones, xp.cumprod(last, axis=-1)[..., :-1]], axis=-1)
        after = xp.concatenate([xp.cumprod(last[..., ::-1], axis=-1)[..., ::-1][..., 1:], ones], axis=-1)
        g = gy if self.keepdims or self.axis is None else xp.expand_dims(gy, axis)
        g = xp.moveaxis(xp.reshape(g, (1,) * x.ndim) if self.axis is None else g, axis, -1)
        return (xp.moveaxis(g * before * after, -1, axis).reshape(self.x.shape).astype(self.x.dtype),)


class Norm(Function):
    """The vector p-norm over ``axes``: (sum |x|^p)^(1/p); p = inf/-inf the largest/smallest |x|,
    p = 0 the count of nonzeros. Backward is PyTorch's: zero where the norm is zero, an inf-norm's
    gradient shared evenly between tied extremes."""

    def __init__(self, p, axes, keepdims):
        self.p, self.axes, self.keepdims = p, axes, keepdims

    def forward(self, x):
        xp = get_array_module(x)
        a, p, axes = xp.abs(x), self.p, self.axes
        if p == 2:
            y = xp.sqrt(xp.sum(x * x, axis=axes, keepdims=True))
        elif p == float("inf"):
            y = xp.max(a, axis=axes, keepdims=True)
        elif p == float("-inf"):
            y = xp.min(a, axis=axes, keepdims=True)
        elif p == 0:
            y = xp.sum(x != 0, axis=axes, keepdims=True).astype(x.dtype)
        else:
            y = xp.sum(a ** p, axis=axes, keepdims=True) ** (1.0 / p)
        self.x, self.y = x, y
        return y if self.keepdims else xp.squeeze(y, axis=axes) if axes is not None else y.reshape(())

    def backward(self, gy):
        xp = get_array_module(gy)
        x, y, p = self.x, self.y, self.p
        g = gy.reshape(y.shape)
        if p == 0:
            return (xp.zeros_like(x),)
        if p in (float("inf"), float("-inf")):
            extreme = xp.abs(x) == y
            share = extreme / xp.sum(extreme, axis=self.axes, keepdims=True)
            return (g * xp.sign(x) * share,)
        safe = xp.where(y == 0, 1, y)
        if p == 2:
            scale = x / safe
        elif p == 1:
            scale = xp.sign(x)
        else:
            magnitude = xp.where(x == 0, 1, xp.abs(x))  # sign(0) = 0 zeroes these; 0 ** (p - 1) may be inf
            scale = xp.sign(x) * magnitude ** (p - 1) / safe ** (p - 1)
        return (xp.where(y == 0, 0, g * scale).astype(x.dtype),)


def _with_dtype(x, dtype):
    if dtype is None or np.dtype(dtype) == x.data.dtype:
        return x
    from pyneural.functions import elementwise
    return elementwise.cast(x, np.dtype(dtype))


def sum(x, dim=None, keepdim=False, dtype=None):
    """Sum over ``dim`` (an int, a tuple, or None for all); bool and integer tensors sum to int64."""
    x = _with_dtype(x, dtype)
    if dtype is None and x.data.dtype.kind in "biu" and x.data.dtype != np.int64:
        x = _with_dtype(x, np.int64)
    return Sum(_axes(dim, x.data.ndim, "sum"), keepdim).apply(x)


def prod(x, dim=None, keepdim=False, dtype=None):
    """Product over one ``dim`` (an int) or all elements; bool and integer tensors multiply in int64."""
    x = _with_dtype(x, dtype)
    if dtype is None and x.data.dtype.kind in "biu" and x.data.dtype != np.int64:
        x = _with_dtype(x, np.int64)
    if dim is not None and not isinstance(dim, (int, np.integer)):
        raise TypeError(f"prod: dim must be an int or None, got {type(dim).__name__}")
    axes = _axes(dim, x.data.ndim, "prod")
    return Prod(axes[0] if axes else None, keepdim and dim is not None).apply(x)


def norm(x, p="fro", dim=None, keepdim=False, dtype=None):
    """The vector ``p``-norm over ``dim`` (an int, a tuple, or None for all elements), as
    ``torch.norm``: p a number, ``inf``/``-inf``, or "fro" (the 2-norm of all elements taken)."""
    if p == "fro":
        p = 2
    if isinstance(p, str) or isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise ValueError(f"norm: p must be a number, inf, -inf or 'fro', got {p!r} (matrix norms such as 'nuc' "
                         f"are not supported)")
    x = _with_dtype(x, dtype)
    if not x.is_floating_point():
        raise TypeError(f"norm: needs a floating point tensor, got {x.data.dtype}; pass dtype= or cast first")
    return Norm(float(p), _axes(dim, x.data.ndim, "norm"), keepdim).apply(x)


def mean(x, dim=None, keepdim=False, dtype=None):
    x = _with_dtype(x, dtype)
    if not x.is_floating_point():
        raise TypeError(f"mean: needs a floating point tensor, got {x.data.dtype}; pass dtype= or cast first")
    return Mean(_axes(dim, x.data.ndim, "mean"), keepdim).apply(x)


def _correction(fn, unbiased, correction):
    if unbiased is not None and correction is not None:
        raise TypeError(f"{fn}: pass either unbiased or correction, not both")
    if correction is not None:
        return correction
    return 0 if unbiased is False else 1


def _variance(fn, x, dim, unbiased, keepdim, correction, sqrt):
    if isinstance(dim, bool):  # var(True): the old signature var(unbiased)
        dim, unbiased = None, dim
    if not x.is_floating_point():
        raise TypeError(f"{fn}: needs a floating point tensor, got {x.data.dtype}")
    axes = _axes(dim, x.data.ndim, fn)
    ddof = _correction(fn, unbiased, correction)
    if _count(x.data.shape, axes) - ddof <= 0:
        warnings.warn(f"{fn}(): degrees of freedom is <= 0. Correction should be strictly less than the "
                      f"reduction factor (input numel divided by output numel).", UserWarning, stacklevel=3)
    return Var(axes, keepdim, ddof, sqrt).apply(x)


def var(x, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """Variance over ``dim`` with ``correction`` (default 1, Bessel's); ``unbiased=False`` is
    correction 0. Positional arguments follow PyTorch's ``var(dim, unbiased, keepdim)``."""
    return _variance("var", x, dim, unbiased, keepdim, correction, False)


def std(x, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """The square root of ``var`` (same arguments)."""
    return _variance("std", x, dim, unbiased, keepdim, correction, True)


def logsumexp(x, dim, keepdim=False):
    """log(sum(exp(x), dim)), computed without overflow; -inf over an empty dim."""
    if not x.is_floating_point():
        from pyneural.functions import elementwise
        x = elementwise.cast(x, np.float32)
    return LogSumExp(_axes(dim, x.data.ndim, "logsumexp"), keepdim).apply(x)


def cumsum(x, dim, dtype=None):
    """Running sum along ``dim``; bool and integer tensors accumulate in int64."""
    x = _with_dtype(x, dtype)
    if dtype is None and x.data.dtype.kind in "biu" and x.data.dtype != np.int64:
        x = _with_dtype(x, np.int64)
    axes = _axes(dim, x.data.ndim, "cumsum")
    if not axes:
        return CumSum(None).apply(x).reshape(())  # a 0-d tensor
    return CumSum(axes[0]).apply(x)


def _reduce_bool(fn, x, dim, keepdim):
    axes = _axes(dim, x.data.ndim, fn)
    xp = get_array_module(x.data)
    return wrap(xp.asarray(getattr(xp, fn)(x.data, axis=axes, keepdims=keepdim)))


def any(x, dim=None, keepdim=False):
    """True where any element (along ``dim``) is nonzero; False over nothing."""
    return _reduce_bool("any", x, dim, keepdim)


def all(x, dim=None, keepdim=False):
    """True where every element (along ``dim``) is nonzero; True over nothing."""
    return _reduce_bool("all", x, dim, keepdim)


def _reduced_axis(x, dim, fn):
    if not isinstance(dim, (int, np.integer)):
        raise TypeError(f"{fn}: dim must be an integer, got {dim!r}")
    axes = _axes(dim, x.data.ndim, fn)
    if not axes:
        return None  # a 0-d tensor
    (axis,) = axes
    if x.data.shape[axis] == 0:
        raise IndexError(f"{fn}(): Expected reduction dim {dim} to have non-zero size (input shape "
                         f"{x.data.shape}).")
    return axis


def _max_min(x, dim, keepdim, use_min):
    fn = "min" if use_min else "max"
    if isinstance(dim, Tensor):  # max(a, b): the elementwise form
        from pyneural.functions import arithmetic
        return arithmetic.minimum(x, dim) if use_min else arithmetic.maximum(x, dim)
    if dim is None:
        if x.data.size == 0:
            raise RuntimeError(f"{fn}(): Expected reduction dim to be specified for input.numel() == 0 "
                               f"(input shape {x.data.shape}). Specify the reduction dim with the 'dim' argument.")
        return MaxAll(use_min).apply(x)
    axis = _reduced_axis(x, dim, fn)
    xp = get_array_module(x.data)
    if axis is None:
        return MaxResult(MaxAll(use_min).apply(x), wrap(xp.zeros((), dtype=np.int64)))
    indices = (xp.argmin if use_min else xp.argmax)(x.data, axis=axis)
    values = MaxDim(axis, keepdim, indices).apply(x)
    return MaxResult(values, wrap(xp.expand_dims(indices, axis) if keepdim else indices))


def max(x, dim=None, keepdim=False):
    return _max_min(x, dim, keepdim, False)


def min(x, dim=None, keepdim=False):
    return _max_min(x, dim, keepdim, True)


def _arg(fn, x, dim, keepdim):
    xp = get_array_module(x.data)
    find = xp.argmin if fn == "argmin" else xp.argmax
    if dim is None:
        if x.data.size == 0:
            raise RuntimeError(f"{fn}(): Expected reduction dim to be specified for input.numel() == 0 "
                               f"(input shape {x.data.shape}).")
        index = xp.asarray(find(x.data)).astype(np.int64)
        return wrap(index.reshape((1,) * x.data.ndim) if keepdim else index)
    axis = _reduced_axis(x, dim, fn)
    if axis is None:
        return wrap(xp.zeros((), dtype=np.int64))
    return wrap(find(x.data, axis=axis, keepdims=keepdim).astype(np.int64))


def argmax(x, dim=None, keepdim=False):
    """Index of the largest element (flattened when ``dim`` is None); not differentiable."""
    return _arg("argmax", x, dim, keepdim)


def argmin(x, dim=None, keepdim=False):
    return _arg("argmin", x, dim, keepdim)
