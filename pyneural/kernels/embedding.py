"""Embedding lookup and its backward, dense or row-sparse.

``weight`` is (V, D) float; ``indices`` is int64 of any shape, each in [0, V) (checked). float32 runs
the C++ kernels in ``pyneural._C`` (csrc/cpu/embedding.cpp) with the GIL released. Their backward
groups the positions of each row with a counting sort and sums every row on one thread in index
order, so gradients are the same bits for any thread count; see that file for the plan. float64
runs plain numpy (the gradient-check and reference path: a stable argsort and np.add.reduceat).
"""
import numpy as np

from pyneural import _C
from pyneural.kernels._checks import check_array


def _check_indices(fn, indices, num_embeddings):
    check_array(fn, "indices", indices, dtypes=(np.int64,))
    lo, hi = indices.min(), indices.max()
    if lo < 0 or hi >= num_embeddings:
        flat = indices.reshape(-1)
        i = int(np.flatnonzero((flat < 0) | (flat >= num_embeddings))[0])
        where = np.unravel_index(i, indices.shape)
        raise ValueError(f"{fn}: indices[{', '.join(map(str, where))}] = {flat[i]} is out of range for "
                         f"{num_embeddings} embeddings (expected 0 <= index < {num_embeddings})")


def _check_num_embeddings(fn, num_embeddings):
    if not isinstance(num_embeddings, (int, np.integer)) or isinstance(num_embeddings, bool):
        raise TypeError(f"{fn}: num_embeddings must be an int, got {type(num_embeddings).__name__}")
    if num_embeddings < 1:
        raise ValueError(f"{fn}: num_embeddings must be >= 1, got {num_embeddings}")
    return int(num_embeddings)


def _check_dout(fn, dout, indices):
    check_array(fn, "dout", dout)
    if dout.shape[:-1] != indices.shape or dout.ndim != indices.ndim + 1:
        raise ValueError(f"{fn}: dout has shape {dout.shape} but indices {indices.shape} needs "
                         f"{indices.shape + ('D',)}")
    return dout.reshape(-1, dout.shape[-1])


def embedding_forward(weight, indices):
    """Return ``weight[indices]``: shape ``indices.shape + (D,)``."""
    fn = "embedding_forward"
    check_array(fn, "weight", weight, ndim=2)
    _check_indices(fn, indices, weight.shape[0])
    out = np.empty(indices.shape + (weight.shape[1],), dtype=weight.dtype)
    if weight.dtype == np.float32:
        _C.embedding_forward(weight, indices, out.reshape(-1, weight.shape[1]))
        return out
    np.take(weight, indices, axis=0, out=out)
    return out


def _group_rows_numpy(dout2d, flat_indices):
    """(rows, grads): the distinct indices ascending and the sum of dout over each one's positions."""
    order = np.argsort(flat_indices, kind="stable")
    sorted_indices = flat_indices[order]
    rows, starts = np.unique(sorted_indices, return_index=True)
    return rows, np.add.reduceat(dout2d[order], starts, axis=0)


def embedding_backward_dense(dout, indices, num_embeddings):
    """Return ``dweight`` (V, D): the sum of ``dout`` over each row's positions, zero where untouched."""
    fn = "embedding_backward_dense"
    num_embeddings = _check_num_embeddings(fn, num_embeddings)
    _check_indices(fn, indices, num_embeddings)
    dout2d = _check_dout(fn, dout, indices)
    dweight = np.empty((num_embeddings, dout.shape[-1]), dtype=dout.dtype)
    if dout.dtype == np.float32:
        _C.embedding_backward_dense(dout2d, indices, dweight)
        return dweight
    rows, grads = _group_rows_numpy(dout2d, indices.reshape(-1))
    dweight[...] = 0.0
    dweight[rows] = grads
    return dweight


def embedding_backward_sparse(dout, indices, num_embeddings):
    """Return ``(rows, grads)``: the U distinct touched rows (int64, ascending) and their summed
    gradients (U, D). Deterministic: the same bits whatever the thread count."""
    fn = "embedding_backward_sparse"
    num_embeddings = _check_num_embeddings(fn, num_embeddings)
    _check_indices(fn, indices, num_embeddings)
    dout2d = _check_dout(fn, dout, indices)
    if dout.dtype == np.float32:
        groups = _C.EmbeddingRowGroups(indices, num_embeddings)
        rows = np.empty(groups.num_rows, dtype=np.int64)
        grads = np.empty((groups.num_rows, dout.shape[-1]), dtype=np.float32)
        groups.rows_into(rows)
        groups.sum_into(dout2d, grads)
        return rows, grads
    return _group_rows_numpy(dout2d, indices.reshape(-1))
