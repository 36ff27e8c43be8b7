"""sort, argsort and topk along one dimension, with PyTorch's return values and NaN order.

The values are one ``take_along_axis`` of the input by the sorting permutation, so backward
puts each gradient back where its value came from. NaN sorts as the largest value (last in
ascending order, first in descending), as in PyTorch. A descending sort is a stable ascending
sort of the reversed input, reversed again: equal values keep their original order, and NaN
ends up first.
"""
from collections import namedtuple

import numpy as np

from pyneural.tensor import Function, get_array_module, wrap

SortResult = namedtuple("SortResult", ["values", "indices"])
TopKResult = namedtuple("TopKResult", ["values", "indices"])


class TakeAlong(Function):
    """x picked along ``axis`` by ``indices`` that never repeat (a permutation or part of one)."""

    def __init__(self, axis, indices):
        self.axis, self.indices = axis, indices

    def forward(self, x):
        self.in_meta = (x.shape, x.dtype)
        return get_array_module(x).take_along_axis(x, self.indices, axis=self.axis)

    def backward(self, gy):
        xp = get_array_module(gy)
        gx = xp.zeros(*self.in_meta)
        xp.put_along_axis(gx, self.indices, gy, axis=self.axis)
        return (gx,)


def _axis(dim, ndim, fn):
    if not -max(ndim, 1) <= dim < max(ndim, 1):
        raise IndexError(f"{fn}: dimension {dim} out of range for a tensor with {ndim} dimensions")
    return dim % ndim if ndim else 0


def _order(a, axis, descending):
    """The stable sorting permutation of array ``a`` along ``axis``, as int64."""
    xp = get_array_module(a)
    if not descending:
        return xp.argsort(a, axis=axis, kind="stable").astype(np.int64, copy=False)
    n = a.shape[axis]
    reversed_order = xp.argsort(xp.flip(a, axis), axis=axis, kind="stable")
    return xp.flip((n - 1) - reversed_order, axis).astype(np.int64, copy=False)


def argsort(input, dim=-1, descending=False, stable=False):
    """Indices that sort ``input`` along ``dim`` (always stable here; ``stable`` is accepted)."""
    data = input.data
    if data.ndim == 0:
        return wrap(get_array_module(data).zeros((), dtype=np.int64))
    return wrap(_order(data, _axis(dim, data.ndim, "argsort"), descending))


def sort(input, dim=-1, descending=False, stable=False):
    """(values, indices) of ``input`` sorted along ``dim``; the values are differentiable."""
    if input.data.ndim == 0:
        return SortResult(input * 1, wrap(get_array_module(input.data).zeros((), dtype=np.int64)))
    axis = _axis(dim, input.data.ndim, "sort")
    indices = _order(input.data, axis, descending)
    return SortResult(TakeAlong(axis, indices).apply(input), wrap(indices))


def topk(input, k, dim=-1, largest=True, sorted=True):
    """(values, indices) of the ``k`` largest (``largest=False``: smallest) entries along ``dim``,
    in sorted order."""
    data = input.data
    axis = _axis(dim, data.ndim, "topk")
    n = data.shape[axis] if data.ndim else 1
    if not isinstance(k, (int, np.integer)) or not 0 <= k <= n:
        raise RuntimeError(f"topk: selected index k={k!r} out of range for dimension {dim} of size {n} "
                           f"(input shape {data.shape})")
    if data.ndim == 0:
        x = input.reshape(1)
        values, indices = topk(x, k, 0, largest, sorted)
        return TopKResult(values.reshape(()) if k else values, indices.reshape(()) if k else indices)
    order = _order(data, axis, largest)
    indices = order[(slice(None),) * axis + (slice(0, int(k)),)]
    return TopKResult(TakeAlong(axis, indices).apply(input), wrap(indices))
