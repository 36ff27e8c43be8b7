"""F.pad: constant, reflect, replicate and circular padding with PyTorch's argument order.

``pad`` lists (before, after) pairs starting from the *last* dimension: ``(left, right, top,
bottom)`` pads W then H of an (N, C, H, W) input. Constant padding takes any number of pairs, and
negative amounts crop. The other modes pad the last 1, 2 or 3 dims of a batched or unbatched input
(PyTorch's combinations) by reading the input at computed positions: each padded dim is one
``index_select`` with a position vector (reflected, clamped or wrapped), so their gradients come
from index_select's backward, which adds up the entries a border position was copied to.
"""
import numpy as np

from pyneural.functions import indexing
from pyneural.tensor import Function, get_array_module

_MODES = ("constant", "reflect", "replicate", "circular")


class ConstantPad(Function):
    """Pad with ``value`` (positive widths) and crop (negative ones), per dimension."""

    def __init__(self, widths, value):
        self.widths, self.value = widths, value

    def forward(self, x):
        xp = get_array_module(x)
        grow = [(max(b, 0), max(a, 0)) for b, a in self.widths]
        y = xp.pad(x, grow, mode="constant", constant_values=self.value) if any(map(any, grow)) else x.copy()
        return y[tuple(slice(max(-b, 0), y.shape[d] - max(-a, 0)) for d, (b, a) in enumerate(self.widths))]

    def backward(self, gy):
        xp = get_array_module(gy)
        shrink = [(max(-b, 0), max(-a, 0)) for b, a in self.widths]
        g = xp.pad(gy, shrink, mode="constant") if any(map(any, shrink)) else gy
        return (g[tuple(slice(max(b, 0), g.shape[d] - max(a, 0)) for d, (b, a) in enumerate(self.widths))],)


def _positions(mode, n, before, after):
    i = np.arange(-before, n + after)
    if mode == "reflect":
        i = np.abs(i)
        return np.where(i >= n, 2 * (n - 1) - i, i)
    if mode == "replicate":
        return np.clip(i, 0, n - 1)
    return i % n  # circular


def _pairs(pad, ndim):
    pad = tuple(int(p) for p in pad)
    if len(pad) % 2 or len(pad) // 2 > ndim:
        raise ValueError(f"pad: padding length {len(pad)} must be even and at most twice the number of "
                         f"dimensions ({ndim}) of the input")
    return [(pad[2 * i], pad[2 * i + 1]) for i in range(len(pad) // 2)]  # last dim first


def pad(input, pad, mode="constant", value=None):
    """Pad ``input`` by ``pad`` = (last-dim before, last-dim after, next-to-last before, ...)."""
    if mode not in _MODES:
        raise ValueError(f"pad: mode must be one of {_MODES}, got {mode!r}")
    shape = input.data.shape
    pairs = _pairs(pad, len(shape))
    if mode == "constant":
        widths = [(0, 0)] * (len(shape) - len(pairs)) + pairs[::-1]
        for d, (b, a) in enumerate(widths):
            if shape[d] + b + a < 0:
                raise ValueError(f"pad: padding {(b, a)} of dim {d} leaves a negative size for input {shape}")
        return ConstantPad(widths, 0 if value is None else value).apply(input)
    if value not in (None, 0):
        raise ValueError(f"pad: padding mode {mode!r} doesn't take in a value argument")
    k = len(pairs)
    if k == 0 or len(shape) not in (k + 1, k + 2):
        raise ValueError(f"pad: padding size {2 * k} is not supported for {len(shape)}D input with mode {mode!r}; "
                         f"pad the last 1, 2 or 3 dims of a 2D-3D, 3D-4D or 4D-5D input respectively")
    xp = get_array_module(input.data)
    out = input
    for i, (before, after) in enumerate(pairs):
        d = len(shape) - 1 - i
        n = shape[d]
        if before < 0 or after < 0:
            raise ValueError(f"pad: mode {mode!r} needs non-negative padding, got {(before, after)} for dim {d}")
        if (mode == "reflect" and max(before, after) >= n) or (mode == "circular" and max(before, after) > n) or n == 0:
            raise ValueError(f"pad: padding {(before, after)} of dim {d} is too large for size {n} in mode {mode!r} "
                             f"(input shape {shape}): reflect needs padding < size, circular padding <= size")
        if before or after:
            positions = xp.asarray(_positions(mode, n, before, after))
            out = indexing.index_select(out, d, positions)
    return out
