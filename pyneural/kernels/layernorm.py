"""Row normalisation for LayerNorm and GroupNorm: x viewed as (rows, D), every row normalised by
its own mean and biased variance, then an optional affine map whose parameter for element (r, c) is
``((r % groups) * D + c) // inner``. LayerNorm is groups = inner = 1 (a parameter per column);
GroupNorm of (N, C, S) is rows = N*G, D = (C/G)*S, groups = G, inner = S (a parameter per channel).

float32 runs the C++ kernels in ``pyneural._C`` (csrc/cpu/layernorm.cpp: one pass over each row for
the statistics, a fused backward) with the GIL released; float64 runs the whole-array code of
``forward_arrays`` / ``backward_arrays``, the reference the tests hold the kernels to, which the
CUDA backend runs on device arrays as well.
"""
import numpy as np

from pyneural import _C
from pyneural.kernels._checks import check_array, check_same_dtype
from pyneural.tensor import get_array_module


def _check_layout(fn, x, groups, inner, **params):
    check_array(fn, "x", x, ndim=2)
    rows, D = x.shape
    if groups < 1 or inner < 1 or rows % groups or D % inner:
        raise ValueError(f"{fn}: groups={groups} must divide the rows and inner={inner} the row length of x "
                         f"{x.shape}")
    count = groups * D // inner
    for name, p in params.items():
        if p is not None:
            check_array(fn, name, p, ndim=1)
            if p.shape != (count,):
                raise ValueError(f"{fn}: {name} has shape {p.shape}, expected ({count},) for x {x.shape}, "
                                 f"groups={groups}, inner={inner}")
    check_same_dtype(fn, x=x, **params)


def _check_like(fn, x, **arrays):
    """Each array is C-contiguous with x's dtype and the shape of x (dy) or of its rows (mean, rstd)."""
    for name, a in arrays.items():
        expected = x.shape if name == "dy" else x.shape[:1]
        check_array(fn, name, a, ndim=len(expected))
        if a.shape != expected:
            raise ValueError(f"{fn}: {name} has shape {a.shape}, expected {expected} for x {x.shape}")
    check_same_dtype(fn, x=x, **arrays)


def norm_rows_forward(x, weight=None, bias=None, eps=1e-5, groups=1, inner=1):
    """Return ``(y, mean, rstd)``: y like x, mean and rstd = 1/sqrt(var + eps) of each row (rows,)."""
    fn = "norm_rows_forward"
    _check_layout(fn, x, groups, inner, weight=weight, bias=bias)
    if x.dtype != np.float32:
        return forward_arrays(x, weight, bias, eps, groups, inner)
    y = np.empty_like(x)
    mean, rstd = np.empty(x.shape[0], np.float32), np.empty(x.shape[0], np.float32)
    _C.norm_rows_forward(x, weight, bias, y, mean, rstd, groups, inner, float(eps))
    return y, mean, rstd


def norm_rows_backward(dy, x, mean, rstd, weight=None, groups=1, inner=1, needs=(True, True, True)):
    """Return ``(dx, dweight, dbias)`` of norm_rows_forward; ``needs`` says which to compute (None
    for the others)."""
    fn = "norm_rows_backward"
    _check_layout(fn, x, groups, inner, weight=weight)
    _check_like(fn, x, dy=dy, mean=mean, rstd=rstd)
    if x.dtype != np.float32:
        return backward_arrays(dy, x, mean, rstd, weight, groups, inner, needs)
    count = groups * x.shape[1] // inner
    dx = np.empty_like(x) if needs[0] else None
    dweight = np.empty(count, np.float32) if needs[1] else None
    dbias = np.empty(count, np.float32) if needs[2] else None
    _C.norm_rows_backward(dy, x, mean, rstd, weight, dx, dweight, dbias, groups, inner)
    return dx, dweight, dbias


# ---- whole-array code: numpy float64, device arrays ---------------------------------------------

def _blocks(a, groups, inner):
    """A (rows, D) array as (rows/groups, groups, D/inner, inner): the parameter axes are 1 and 2."""
    rows, D = a.shape
    return a.reshape(rows // groups, groups, D // inner, inner)


def forward_arrays(x, weight, bias, eps, groups, inner):
    xp = get_array_module(x)
    mean = x.mean(axis=1)
    centred = x - mean[:, None]
    var = (centred * centred).mean(axis=1)
    rstd = 1.0 / xp.sqrt(var + eps)
    y = centred * rstd[:, None]
    if weight is not None or bias is not None:
        y4 = _blocks(y, groups, inner)
        pshape = (groups, -1, 1)
        if weight is not None:
            y4 = y4 * weight.reshape(pshape)
        if bias is not None:
            y4 = y4 + bias.reshape(pshape)
        y = y4.reshape(x.shape)
    return y, mean, rstd


def backward_arrays(dy, x, mean, rstd, weight, groups, inner, needs):
    xhat = (x - mean[:, None]) * rstd[:, None]
    dx = dweight = dbias = None
    if needs[0]:
        g = dy if weight is None else (_blocks(dy, groups, inner) * weight.reshape(groups, -1, 1)).reshape(dy.shape)
        dx = rstd[:, None] * (g - g.mean(axis=1, keepdims=True) - xhat * (g * xhat).mean(axis=1, keepdims=True))
    if needs[1]:
        dweight = _blocks(dy * xhat, groups, inner).sum(axis=(0, 3)).reshape(-1)
    if needs[2]:
        dbias = _blocks(dy, groups, inner).sum(axis=(0, 3)).reshape(-1)
    return dx, dweight, dbias
