"""Row-wise log-sum-exp, softmax / log-softmax and softmax cross-entropy on CuPy float32 arrays
(csrc/cuda/softmax.cu); rows are the last axis."""
import numpy as np

from pyneural.cuda import _backend
from pyneural.kernels._checks import check_device_array as check_array, check_device_output as check_output

_FILE = "softmax.cu"
THREADS, ROWS_PER_BLOCK = 256, 8  # one warp per row


def launch_config(rows):
    return (-(-rows // ROWS_PER_BLOCK),), (THREADS,), 0


def _rows(fn, x):
    check_array(fn, "x", x)
    if x.ndim < 1:
        raise ValueError(f"{fn}: x must have at least one dimension, got shape {x.shape}")
    return x.size // x.shape[-1], x.shape[-1]


def logsumexp(x):
    """``log(sum(exp(x)))`` over the last axis."""
    rows, c = _rows("cuda.logsumexp", x)
    out = _backend.cupy().empty(x.shape[:-1], dtype=np.float32)
    grid, block, smem = launch_config(rows)
    _backend.launch(_FILE, "pn_logsumexp_rows", grid, block, (x, out, np.int32(rows), np.int32(c)), smem)
    return out


def softmax(x, log=False, out=None):
    fn = "cuda.log_softmax" if log else "cuda.softmax"
    rows, c = _rows(fn, x)
    out = check_output(fn, "out", out, x.shape)
    grid, block, smem = launch_config(rows)
    _backend.launch(_FILE, "pn_softmax_rows", grid, block, (x, out, np.int32(rows), np.int32(c), np.int32(bool(log))),
                    smem)
    return out


def _check_labels(fn, labels, rows, c, validate):
    check_array(fn, "labels", labels, ndim=1, dtype=np.int64)
    if labels.shape != (rows,):
        raise ValueError(f"{fn}: labels must have shape ({rows},), got {labels.shape}")
    if validate:  # one device -> host copy of two numbers
        lo, hi = (int(v) for v in _backend.cupy().stack([labels.min(), labels.max()]).get())
        if lo < 0 or hi >= c:
            raise ValueError(f"{fn}: labels hold {lo if lo < 0 else hi}, outside [0, {c}) for {c} classes")


def softmax_cross_entropy(x, labels, validate=True):
    """Return ``(loss, lse)``: per-row ``lse - x[label]`` and the row log-sum-exp (for the backward).
    x is (rows, C), labels int64 (rows,). ``validate`` checks the labels' range (a host sync);
    without it an out-of-range label gives a NaN loss for its row."""
    fn = "cuda.softmax_cross_entropy"
    check_array(fn, "x", x, ndim=2)
    rows, c = x.shape
    _check_labels(fn, labels, rows, c, validate)
    cp = _backend.cupy()
    loss = cp.empty((rows,), dtype=np.float32)
    lse = cp.empty((rows,), dtype=np.float32)
    grid, block, smem = launch_config(rows)
    _backend.launch(_FILE, "pn_softmax_xent_fwd", grid, block, (x, labels, loss, lse, np.int32(rows), np.int32(c)),
                    smem)
    return loss, lse


def softmax_cross_entropy_backward(x, labels, lse, dloss, scale=None, out=None):
    """``dx = scale * dloss * (softmax(x) - onehot(labels))``; ``dloss`` is a one-element device
    array (the gradient of the reduced loss), ``scale`` defaults to 1/rows (mean reduction)."""
    fn = "cuda.softmax_cross_entropy_backward"
    check_array(fn, "x", x, ndim=2)
    rows, c = x.shape
    _check_labels(fn, labels, rows, c, False)
    check_array(fn, "lse", lse, ndim=1)
    if lse.shape != (rows,):
        raise ValueError(f"{fn}: lse must have shape ({rows},), got {lse.shape}")
    check_array(fn, "dloss", dloss)
    if dloss.size != 1:
        raise ValueError(f"{fn}: dloss must hold one element, got shape {dloss.shape}")
    out = check_output(fn, "out", out, x.shape)
    scale = 1.0 / rows if scale is None else float(scale)
    grid, block, smem = launch_config(rows)
    _backend.launch(_FILE, "pn_softmax_xent_bwd", grid, block,
                    (x, labels, lse, dloss, out, np.int32(rows), np.int32(c), np.float32(scale)), smem)
    return out
