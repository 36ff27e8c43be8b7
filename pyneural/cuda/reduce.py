"""Sums and means of CuPy float32 arrays over one axis or per channel (csrc/cuda/reduce.cu)."""
import numpy as np

from pyneural.cuda import _backend
from pyneural.cuda._checks import check_array

_FILE = "reduce.cu"
THREADS = 256
MAX_GRID_X = 2**31 - 1


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
