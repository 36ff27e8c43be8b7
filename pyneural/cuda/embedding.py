"""Embedding gather and gradient scatter-add on CuPy arrays (csrc/cuda/embedding.cu): float32
tables (V, D), int64 indices of any shape."""
import numpy as np

from pyneural.cuda import _backend
from pyneural.cuda._checks import check_array
from pyneural.cuda.elementwise import fill

_FILE = "embedding.cu"
THREADS = 256


def _check_indices(fn, indices, v, validate):
    check_array(fn, "indices", indices, dtype=np.int64)
    if validate:  # one device -> host copy of two numbers
        lo, hi = (int(t) for t in _backend.cupy().stack([indices.min(), indices.max()]).get())
        if lo < 0 or hi >= v:
            raise ValueError(f"{fn}: indices hold {lo if lo < 0 else hi}, outside [0, {v}) for a table of {v} rows")


def embedding_forward(weight, indices, validate=True):
    """``weight[indices]`` of shape ``indices.shape + (D,)``. Without ``validate`` an out-of-range
    index gives a row of NaN (never an out-of-bounds read)."""
    fn = "cuda.embedding_forward"
    check_array(fn, "weight", weight, ndim=2)
    v, d = weight.shape
    _check_indices(fn, indices, v, validate)
    out = _backend.cupy().empty(indices.shape + (d,), dtype=np.float32)
    b = indices.size
    _backend.launch(_FILE, "pn_embedding_gather", _backend.elementwise_grid(b * d, THREADS), (THREADS,),
                    (weight, indices, out, np.int64(b), np.int64(v), np.int64(d)))
    return out


def embedding_backward(dout, indices, num_embeddings, deterministic=False, validate=True):
    """Dense ``dweight`` (num_embeddings, D): rows of ``dout`` summed per index. Atomic adds by
    default; ``deterministic`` sorts the indices and sums each run in order (same bits every run)."""
    fn = "cuda.embedding_backward"
    check_array(fn, "dout", dout)
    v = int(num_embeddings)
    if v < 1:
        raise ValueError(f"{fn}: num_embeddings must be >= 1, got {num_embeddings}")
    _check_indices(fn, indices, v, validate)
    if dout.shape[:-1] != indices.shape:
        raise ValueError(f"{fn}: dout has shape {dout.shape}, expected indices.shape + (D,) = {indices.shape} + (D,)")
    cp = _backend.cupy()
    d, b = dout.shape[-1], indices.size
    dweight = cp.empty((v, d), dtype=np.float32)
    fill(dweight, 0.0)
    grid = _backend.elementwise_grid(b * d, THREADS)
    if deterministic:
        flat = indices.reshape(-1)
        order = cp.argsort(flat, kind="stable").astype(np.int64)
        sorted_idx = cp.ascontiguousarray(flat[order])
        _backend.launch(_FILE, "pn_embedding_segment_sum", grid, (THREADS,),
                        (dout, sorted_idx, order, dweight, np.int64(b), np.int64(v), np.int64(d)))
    else:
        _backend.launch(_FILE, "pn_embedding_scatter_add", grid, (THREADS,),
                        (dout, indices, dweight, np.int64(b), np.int64(v), np.int64(d)))
    return dweight
