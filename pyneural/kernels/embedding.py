"""Embedding lookup and its backward, dense or row-sparse; the pairwise dot of gathered rows
(matrix-factorisation scores) and its row-sparse backward; row-sparse SGD and Adam steps.

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


def _check_pair_indices(fn, ia, ib, va, vb):
    _check_indices(fn, ia, va)
    _check_indices(fn, ib, vb)
    if ia.ndim != 1 or ib.shape != ia.shape:
        raise ValueError(f"{fn}: ia and ib must be 1-D of one length, got shapes {ia.shape} and {ib.shape}")


def _check_bias(fn, name, bias, table):
    if bias is None:
        return None
    check_array(fn, name, bias, dtypes=(table.dtype.type,))
    if bias.size != table.shape[0]:
        raise ValueError(f"{fn}: {name} must have one value per row of its table ({table.shape[0]}), "
                         f"got shape {bias.shape}")
    return bias.reshape(-1)


def embedding_dot_forward(a, ia, b, ib, bias_a=None, bias_b=None, offset=0.0):
    """Return ``out[i] = offset + bias_a[ia[i]] + bias_b[ib[i]] + <a[ia[i]], b[ib[i]]>``, shape (n,).
    ``a`` (Va, D) and ``b`` (Vb, D) share one float dtype; the biases hold one value per row or are None."""
    fn = "embedding_dot_forward"
    check_array(fn, "a", a, ndim=2)
    check_array(fn, "b", b, ndim=2, dtypes=(a.dtype.type,))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{fn}: a {a.shape} and b {b.shape} must have rows of the same width")
    _check_pair_indices(fn, ia, ib, a.shape[0], b.shape[0])
    bias_a, bias_b = _check_bias(fn, "bias_a", bias_a, a), _check_bias(fn, "bias_b", bias_b, b)
    out = np.empty(ia.shape, dtype=a.dtype)
    if a.dtype == np.float32:
        _C.embedding_dot_forward(a, ia, b, ib, bias_a, bias_b, float(offset), out)
        return out
    np.einsum("nd,nd->n", a[ia], b[ib], out=out)
    out += offset
    if bias_a is not None:
        out += bias_a[ia]
    if bias_b is not None:
        out += bias_b[ib]
    return out


def embedding_dot_backward_rows(gy, indices, num_rows, other_table=None, other_indices=None, with_bias=False,
                                decay=0.0, self_table=None, self_bias=None):
    """One side of the backward of :func:`embedding_dot_forward`, as a row-sparse gradient:
    ``(rows, grads, bias_grads)`` with the U distinct ``indices`` ascending,
    ``grads[u] = sum_i gy[i] other_table[other_indices[i]]`` (None without ``other_table``) and
    ``bias_grads[u] = sum_i gy[i]`` (None unless ``with_bias``), over the positions i of row u.
    ``decay`` adds ``decay * count_u * self_table[row]`` (and ``self_bias``) with count_u the number of
    positions of row u: the gradient of an L2 penalty paid per use of a row.
    Deterministic: one thread per row, positions in order."""
    fn = "embedding_dot_backward_rows"
    num_rows = _check_num_embeddings(fn, num_rows)
    check_array(fn, "gy", gy, ndim=1)
    _check_indices(fn, indices, num_rows)
    if indices.shape != gy.shape:
        raise ValueError(f"{fn}: gy {gy.shape} and indices {indices.shape} must have the same shape")
    if other_table is not None:
        check_array(fn, "other_table", other_table, ndim=2, dtypes=(gy.dtype.type,))
        _check_indices(fn, other_indices, other_table.shape[0])
        if other_indices.shape != gy.shape:
            raise ValueError(f"{fn}: other_indices {other_indices.shape} must match gy {gy.shape}")
    if gy.dtype == np.float32:
        groups = _C.EmbeddingRowGroups(indices, num_rows)
        rows = np.empty(groups.num_rows, dtype=np.int64)
        groups.rows_into(rows)
        grads = None if other_table is None else np.empty((groups.num_rows, other_table.shape[1]), np.float32)
        bias = np.empty(groups.num_rows, np.float32) if with_bias else None
        if grads is not None or bias is not None:
            groups.weighted_sum_into(gy, other_table, indices if other_indices is None else other_indices, grads, bias,
                                     decay, self_table if decay else None,
                                     None if self_bias is None or not decay else self_bias.reshape(-1))
        return rows, grads, bias
    cols = [] if other_table is None else [gy[:, None] * other_table[other_indices]]
    if with_bias:
        cols.append(gy[:, None])
    cols.append(np.ones_like(gy)[:, None])
    rows, summed = _group_rows_numpy(np.concatenate(cols, axis=1), indices)
    counts = summed[:, -1]
    grads = np.ascontiguousarray(summed[:, :other_table.shape[1]]) if other_table is not None else None
    bias = summed[:, -2].copy() if with_bias else None
    if decay:
        if grads is not None:
            grads += decay * counts[:, None] * self_table[rows]
        if bias is not None:
            bias += decay * counts * self_bias.reshape(-1)[rows]
    return rows, grads, bias


def _check_sparse_step(fn, param, rows, grads):
    check_array(fn, "param", param, ndim=2)
    check_array(fn, "rows", rows, ndim=1, dtypes=(np.int64,), allow_empty=True)
    check_array(fn, "grads", grads, ndim=2, dtypes=(param.dtype.type,), allow_empty=True)
    if grads.shape != (rows.size, param.shape[1]):
        raise ValueError(f"{fn}: grads must have shape {(rows.size, param.shape[1])} for {rows.size} rows of "
                         f"param {param.shape}, got {grads.shape}")


def sparse_sgd_update(param, rows, grads, lr, weight_decay=0.0, momentum=0.0, dampening=0.0, nesterov=False,
                      buf=None):
    """SGD on the distinct ascending ``rows`` of ``param`` in place (see csrc/cpu/embedding_update.cpp);
    ``buf`` is the full momentum table (required exactly when momentum != 0)."""
    fn = "sparse_sgd_update"
    _check_sparse_step(fn, param, rows, grads)
    if rows.size == 0:
        return
    if param.dtype == np.float32:
        _C.sparse_sgd_update(param, rows, grads, lr, weight_decay, momentum, dampening, nesterov, buf)
        return
    if rows.min() < 0 or rows.max() >= param.shape[0] or np.any(np.diff(rows) <= 0):
        raise ValueError(f"{fn}: rows must be distinct, ascending and in [0, {param.shape[0]})")
    p = param[rows]
    g = grads + weight_decay * p if weight_decay else grads
    if momentum:
        b = buf[rows] * momentum + g * (1.0 - dampening)
        buf[rows] = b
        g = g + momentum * b if nesterov else b
    param[rows] = p - lr * g


def sparse_adam_update(param, rows, grads, exp_avg, exp_avg_sq, step, lr, betas, eps, weight_decay=0.0,
                       decoupled=False):
    """Lazy Adam on the distinct ascending ``rows`` of ``param`` in place, at the parameter's global
    ``step`` (>= 1) for the bias corrections; moments of the other rows are left as they are."""
    fn = "sparse_adam_update"
    _check_sparse_step(fn, param, rows, grads)
    if rows.size == 0:
        return
    b1, b2 = betas
    bc1, bc2 = 1.0 - b1 ** step, 1.0 - b2 ** step
    if param.dtype == np.float32:
        _C.sparse_adam_update(param, rows, grads, exp_avg, exp_avg_sq, lr, b1, b2, eps, weight_decay, decoupled,
                              bc1, bc2)
        return
    if rows.min() < 0 or rows.max() >= param.shape[0] or np.any(np.diff(rows) <= 0):
        raise ValueError(f"{fn}: rows must be distinct, ascending and in [0, {param.shape[0]})")
    p = param[rows]
    g = grads
    if weight_decay:
        if decoupled:
            p *= 1.0 - lr * weight_decay
        else:
            g = grads + weight_decay * p
    m = exp_avg[rows] * b1 + (1.0 - b1) * g
    v = exp_avg_sq[rows] * b2 + (1.0 - b2) * g * g
    exp_avg[rows], exp_avg_sq[rows] = m, v
    param[rows] = p - (lr / bc1) * m / (np.sqrt(v) / np.sqrt(bc2) + eps)
