"""Sums and means of CuPy float32 arrays over one axis or per channel, and the gradient norm and
clipping of clip_grad_norm_ (csrc/cuda/reduce.cu)."""
import math

import numpy as np

from pyneural.cuda import _backend
from pyneural.kernels._checks import check_device_array as check_array

_FILE = "reduce.cu"
THREADS = 256
MAX_GRID_X = 2**31 - 1
NORM_BLOCKS = 1024  # most partials per array (a constant: the norm does not depend on the device)


def sum(x, axis=None, mean=False):  # noqa: A001 - mirrors numpy's name
    """Sum (or mean) over ``axis`` (an int, or None for every element); the axis is removed."""
    fn = "cuda.mean" if mean else "cuda.sum"
    check_array(fn, "x", x)
    cp = _backend.cupy()
    if axis is None:
        outer, r, inner, shape = 1, x.size, 1, ()
    else:
        if not isinstance(axis, (int, np.integer)) or not -x.ndim <= axis < x.ndim:
            raise ValueError(f"{fn}: axis must be an int in [{-x.ndim}, {x.ndim}) for x of shape {x.shape}, got {axis!r}")
        axis = int(axis) % x.ndim
        outer = int(np.prod(x.shape[:axis], dtype=np.int64))
        r = x.shape[axis]
        inner = int(np.prod(x.shape[axis + 1:], dtype=np.int64))
        shape = x.shape[:axis] + x.shape[axis + 1:]
    out = cp.empty(shape, dtype=np.float32)
    scale = np.float32(1.0 / r if mean else 1.0)
    if inner == 1:
        _backend.launch(_FILE, "pn_sum_rows", (outer,), (THREADS,), (x, out, np.int64(r), scale))
    else:
        _backend.launch(_FILE, "pn_sum_middle", _backend.elementwise_grid(outer * inner, THREADS), (THREADS,),
                        (x, out, np.int64(outer), np.int64(r), np.int64(inner), scale))
    return out


def channel_sum(x, mean=False):
    """Per-channel sum over every axis but 1 of an (N, C, ...) array: the bias gradient of an NCHW
    convolution (for NHWC / (N, C) use ``sum(x.reshape(-1, C), axis=0)``)."""
    fn = "cuda.channel_sum"
    check_array(fn, "x", x)
    if x.ndim < 2:
        raise ValueError(f"{fn}: x must have at least 2 dimensions (N, C, ...), got shape {x.shape}")
    n, c = x.shape[:2]
    inner = x.size // (n * c)
    out = _backend.cupy().empty((c,), dtype=np.float32)
    scale = np.float32(1.0 / (n * inner) if mean else 1.0)
    _backend.launch(_FILE, "pn_sum_channels", (c,), (THREADS,), (x, out, np.int64(n), np.int64(c), np.int64(inner),
                                                                  scale))
    return out


def _arrays(fn, arrays):
    """A list of float32 CuPy arrays (a single array is a list of one); empty ones are dropped."""
    cp = _backend.cupy()
    arrays = [arrays] if isinstance(arrays, cp.ndarray) else list(arrays)
    for i, a in enumerate(arrays):
        check_array(fn, f"arrays[{i}]", a, allow_empty=True)
    return [a for a in arrays if a.size]


def _norm_kind(fn, norm_type):
    try:
        p = float(norm_type)
    except (TypeError, ValueError):
        p = None
    if p not in (2.0, math.inf):
        raise ValueError(f"{fn}: norm_type must be 2.0 or inf, got {norm_type!r}")
    return np.int32(p == math.inf)


def grad_norm(arrays, norm_type=2.0):
    """The norm of all elements of ``arrays`` together (L2 or, with ``norm_type=inf``, max |x|), as a
    0-d device array; deterministic, and nothing is copied to the host. No arrays: 0."""
    fn = "cuda.grad_norm"
    inf_norm = _norm_kind(fn, norm_type)
    arrays = _arrays(fn, arrays)
    cp = _backend.cupy()
    if not arrays:
        return cp.zeros((), dtype=np.float32)
    blocks = [min(-(-a.size // THREADS), NORM_BLOCKS) for a in arrays]
    starts = np.cumsum([0] + blocks)  # array i writes partials[starts[i]:starts[i + 1]]
    norm = cp.empty((), dtype=np.float32)
    partials = cp.empty(int(starts[-1]), dtype=np.float32)
    for a, b, start in zip(arrays, blocks, starts):
        _backend.launch(_FILE, "pn_norm_partial", (b,), (THREADS,),
                        (a, partials[start:start + b], np.int64(a.size), inf_norm))
    _backend.launch(_FILE, "pn_norm_finish", (1,), (THREADS,), (partials, norm, np.int32(partials.size), inf_norm))
    return norm


def clip_grad_norm_(arrays, max_norm, norm_type=2.0, eps=1e-6):
    """torch.nn.utils.clip_grad_norm_: scale every array in place by min(1, max_norm / (norm + eps)),
    the factor computed on the device from the norm (no host transfer, no synchronisation). Returns
    the norm before clipping (a 0-d device array)."""
    arrays = _arrays("cuda.clip_grad_norm_", arrays)
    norm = grad_norm(arrays, norm_type)
    for a in arrays:
        _backend.launch(_FILE, "pn_clip_scale", _backend.elementwise_grid(a.size, THREADS), (THREADS,),
                        (a, norm, np.int64(a.size), np.float32(max_norm), np.float32(eps)))
    return norm
