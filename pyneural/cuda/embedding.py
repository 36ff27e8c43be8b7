"""Embedding kernels on CuPy arrays (csrc/cuda/embedding.cu): float32 tables (V, D), int64 indices.

The gather and its dense gradient (atomic or deterministic); the row-sparse gradient (the U distinct
rows, ascending, and their summed gradients), the pairwise dot of gathered rows and its row-grouped
backward; the row-sparse SGD and lazy Adam steps. The twins of pyneural/kernels/embedding.py, with
the same results: the grouped sums and the steps give the CPU kernels' bits.

Host transfers. Grouping rows needs the number of distinct rows U on the host (it is the shape of
the result), so :func:`group_rows` reads back one small vector per call -- U and the smallest and
largest index of every array it groups, which also range-checks those indices at no extra cost.
That read is the only synchronisation of a row-sparse backward; the steps need none (their rows
are a coalesced gradient's: distinct, in range, not re-checked).
"""
import collections
import math

import numpy as np

from pyneural.cuda import _backend
from pyneural.kernels._checks import check_device_array as check_array
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


# ---- row-sparse gradients ----------------------------------------------------------------------

RowGroups = collections.namedtuple("RowGroups", "rows starts order skipped")
RowGroups.__doc__ = """Positions of an index array grouped by row: ``rows`` (U,) the distinct indices
ascending, group u is ``order[starts[u]:starts[u + 1]]`` (positions ascending), ``skipped`` the group
of the row asked to be skipped, or None."""


def group_rows(index_arrays, num_rows, skip_row=None):
    """One :class:`RowGroups` per int64 index array of ``index_arrays``, the k-th indexing a table of
    ``num_rows[k]`` rows; ``skip_row`` (an int or None) is the row whose group is reported as
    ``skipped``. Deterministic (stable sort). All arrays are grouped before one device -> host copy
    of (U, min, max) per array; an index outside its table raises ValueError."""
    fn = "cuda.group_rows"
    cp = _backend.cupy()
    if len(index_arrays) != len(num_rows):
        raise ValueError(f"{fn}: {len(index_arrays)} index arrays but {len(num_rows)} table sizes")
    num_rows = [_num_rows(fn, v) for v in num_rows]
    plans, summaries = [], []
    for k, (indices, v) in enumerate(zip(index_arrays, num_rows)):
        check_array(fn, f"indices[{k}]", indices, dtype=np.int64, allow_empty=True)
        flat = indices.reshape(-1)
        n = flat.size
        if n == 0:
            plans.append(None)
            continue
        order = cp.argsort(flat, kind="stable").astype(np.int64, copy=False)
        sorted_idx = cp.ascontiguousarray(flat[order])
        heads = cp.empty(n, dtype=np.int64)
        grid = _backend.elementwise_grid(n, THREADS)
        _backend.launch(_FILE, "pn_embedding_run_heads", grid, (THREADS,), (sorted_idx, heads, np.int64(n)))
        runs = cp.cumsum(heads)
        rows = cp.empty(n, dtype=np.int64)
        starts = cp.empty(n + 1, dtype=np.int64)
        skip_slot = cp.full((1,), -1, dtype=np.int64)
        _backend.launch(_FILE, "pn_embedding_run_bounds", grid, (THREADS,),
                        (sorted_idx, runs, rows, starts, skip_slot, np.int64(n),
                         np.int64(-1 if skip_row is None else skip_row)))
        plans.append((rows, starts, order))
        summaries += [runs[n - 1:], sorted_idx[:1], sorted_idx[n - 1:], skip_slot]
    counts = cp.concatenate(summaries).get().reshape(-1, 4).tolist() if summaries else []
    groups, read = [], iter(counts)
    for k, (plan, v) in enumerate(zip(plans, num_rows)):
        if plan is None:
            empty = cp.empty(0, dtype=np.int64)
            groups.append(RowGroups(empty, cp.zeros(1, dtype=np.int64), empty, None))
            continue
        u, lo, hi, slot = next(read)
        if lo < 0 or hi >= v:
            raise ValueError(f"{fn}: index {lo if lo < 0 else hi} is outside [0, {v}) for a table of {v} rows "
                             f"(index array {k} of {len(plans)})")
        rows, starts, order = plan
        groups.append(RowGroups(rows[:u], starts[:u + 1], order, None if slot < 0 else slot))
    return groups


def _drop_group(rows, values, slot):
    """``rows`` and ``values`` without entry ``slot`` (None: unchanged)."""
    if slot is None:
        return rows, values
    cp = _backend.cupy()
    return (cp.concatenate([rows[:slot], rows[slot + 1:]]),
            cp.concatenate([values[:slot], values[slot + 1:]]))


def segment_rows(dout, groups):
    """(U, D): row u is the sum of the rows of ``dout`` (n, D) at group u's positions, in position order."""
    fn = "cuda.segment_rows"
    check_array(fn, "dout", dout, ndim=2, allow_empty=True)
    if dout.shape[0] != groups.order.size:
        raise ValueError(f"{fn}: dout has {dout.shape[0]} rows for {groups.order.size} grouped positions")
    u, d = groups.rows.size, dout.shape[1]
    grads = _backend.cupy().empty((u, d), dtype=np.float32)
    if u and d:
        _backend.launch(_FILE, "pn_embedding_segment_rows", _backend.elementwise_grid(u * d, THREADS), (THREADS,),
                        (dout, groups.order, groups.starts, grads, np.int64(u), np.int64(d)))
    return grads


def embedding_backward_sparse(dout, indices, num_embeddings, skip_row=None):
    """``(rows, grads)``: the U distinct ``indices`` (int64, ascending) and their summed rows of ``dout``
    (indices.shape + (D,)), as pyneural.kernels.embedding's; ``skip_row`` (padding_idx) is left out.
    Same bits every run and as the CPU. One device -> host read (see :func:`group_rows`)."""
    fn = "cuda.embedding_backward_sparse"
    check_array(fn, "dout", dout, allow_empty=True)
    v = _num_rows(fn, num_embeddings)
    if dout.shape[:-1] != indices.shape or dout.ndim != indices.ndim + 1:
        raise ValueError(f"{fn}: dout has shape {dout.shape}, expected indices.shape + (D,) = {indices.shape} + (D,)")
    groups, = group_rows([indices], [v], skip_row)
    grads = segment_rows(dout.reshape(-1, dout.shape[-1]), groups)
    return _drop_group(groups.rows, grads, groups.skipped)


def count_rows(indices, num_rows):
    """(num_rows,) int64: how many of ``indices`` name each row (numpy.bincount with minlength, without
    cupy.bincount's two reads back to the host). Indices outside the table are not counted."""
    fn = "cuda.count_rows"
    check_array(fn, "indices", indices, dtype=np.int64, allow_empty=True)
    v = _num_rows(fn, num_rows)
    counts = _backend.cupy().zeros((v,), dtype=np.int64)
    n = indices.size
    if n:
        _backend.launch(_FILE, "pn_embedding_count_rows", _backend.elementwise_grid(n, THREADS), (THREADS,),
                        (indices, counts, np.int64(n), np.int64(v)))
    return counts


def _num_rows(fn, num_rows):
    if not isinstance(num_rows, (int, np.integer)) or isinstance(num_rows, bool) or num_rows < 1:
        raise ValueError(f"{fn}: the table must have an int number of rows >= 1, got {num_rows!r}")
    return int(num_rows)


# ---- pairwise dot of gathered rows -------------------------------------------------------------

def _check_bias(fn, name, bias, rows):
    if bias is None:
        return None
    check_array(fn, name, bias)
    if bias.size != rows:
        raise ValueError(f"{fn}: {name} must hold one value per row of its table ({rows}), got shape {bias.shape}")
    return bias.reshape(-1)


def check_index_ranges(fn, named):
    """ValueError unless every index array of ``named`` ((name, indices, num_rows) triples) lies in
    [0, num_rows): one device -> host copy of all their minima and maxima together."""
    cp = _backend.cupy()
    named = [(name, idx, v) for name, idx, v in named if idx.size]
    if not named:
        return
    bounds = cp.stack([m for _, idx, _ in named for m in (idx.min(), idx.max())]).get().tolist()
    for (name, _, v), lo, hi in zip(named, bounds[::2], bounds[1::2]):
        if lo < 0 or hi >= v:
            raise ValueError(f"{fn}: {name} has index {lo if lo < 0 else hi}, which is outside [0, {v}) for a "
                             f"table of {v} rows")


def embedding_dot_forward(a, ia, b, ib, bias_a=None, bias_b=None, offset=None, validate=True):
    """``out[i] = offset + bias_a[ia[i]] + bias_b[ib[i]] + <a[ia[i]], b[ib[i]]>``, shape (n,). ``offset``
    is a one-element device array (or None: 0), read by the kernel. Without ``validate`` an index
    outside its table scores NaN (never an out-of-bounds read) and nothing is read back."""
    fn = "cuda.embedding_dot_forward"
    check_array(fn, "a", a, ndim=2)
    check_array(fn, "b", b, ndim=2)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{fn}: a {a.shape} and b {b.shape} must have rows of the same width")
    for name, idx in (("ia", ia), ("ib", ib)):
        check_array(fn, name, idx, ndim=1, dtype=np.int64)
    if ib.shape != ia.shape:
        raise ValueError(f"{fn}: ia and ib must have one length, got shapes {ia.shape} and {ib.shape}")
    bias_a, bias_b = _check_bias(fn, "bias_a", bias_a, a.shape[0]), _check_bias(fn, "bias_b", bias_b, b.shape[0])
    if offset is not None:
        check_array(fn, "offset", offset)
        if offset.size != 1:
            raise ValueError(f"{fn}: offset must hold one value, got shape {offset.shape}")
    if validate:
        check_index_ranges(fn, [("ia", ia, a.shape[0]), ("ib", ib, b.shape[0])])
    n = ia.size
    out = _backend.cupy().empty((n,), dtype=np.float32)
    _backend.launch(_FILE, "pn_embedding_dot_forward", _backend.elementwise_grid(n, THREADS), (THREADS,),
                    (a, ia, b, ib, bias_a, bias_b, None if offset is None else offset.reshape(-1), out, np.int64(n),
                     np.int64(a.shape[0]), np.int64(b.shape[0]), np.int64(a.shape[1])))
    return out


def embedding_dot_backward_rows(gy, groups, other_table=None, other_indices=None, with_bias=False, decay=0.0,
                                self_table=None, self_bias=None):
    """One side of the backward of :func:`embedding_dot_forward` over ``groups`` (this side's
    :class:`RowGroups`): ``(grads, bias_grads)``, ``grads[u] = sum_i gy[i] other_table[other_indices[i]]``
    (None without ``other_table``) and ``bias_grads[u] = sum_i gy[i]`` (None unless ``with_bias``)
    over the positions i of group u, plus ``decay * count_u`` times this side's own row (``self_table``,
    ``self_bias``) when ``decay`` != 0. pyneural.kernels.embedding.embedding_dot_backward_rows's bits."""
    fn = "cuda.embedding_dot_backward_rows"
    check_array(fn, "gy", gy, ndim=1)
    if gy.shape[0] != groups.order.size:
        raise ValueError(f"{fn}: gy has {gy.shape[0]} values for {groups.order.size} grouped positions")
    cp = _backend.cupy()
    u = groups.rows.size
    grads, d, vo = None, 0, 0
    if other_table is not None:
        check_array(fn, "other_table", other_table, ndim=2)
        check_array(fn, "other_indices", other_indices, ndim=1, dtype=np.int64)
        if other_indices.shape != gy.shape:
            raise ValueError(f"{fn}: other_indices {other_indices.shape} must match gy {gy.shape}")
        vo, d = other_table.shape
        grads = cp.empty((u, d), dtype=np.float32)
    bias = cp.empty((u,), dtype=np.float32) if with_bias else None
    decay = float(decay)
    if decay:
        if self_table is not None:
            check_array(fn, "self_table", self_table, ndim=2)
            if other_table is not None and self_table.shape[1] != d:
                raise ValueError(f"{fn}: self_table {self_table.shape} must have rows of width {d}")
        self_bias = None if self_bias is None else check_array(fn, "self_bias", self_bias).reshape(-1)
    else:
        self_table = self_bias = None
    cols = d + bool(with_bias)
    if u and cols:
        _backend.launch(_FILE, "pn_embedding_dot_backward_rows", _backend.elementwise_grid(u * cols, THREADS),
                        (THREADS,), (gy, groups.order, groups.starts, groups.rows, other_table, other_indices,
                                     np.int64(vo), self_table, self_bias, grads, bias, np.int64(u), np.int64(d),
                                     np.float32(decay)))
    return grads, bias


# ---- row-sparse optimizer steps ----------------------------------------------------------------

def _check_sparse_step(fn, param, rows, grads, **state):
    check_array(fn, "param", param, ndim=2)
    check_array(fn, "rows", rows, ndim=1, dtype=np.int64, allow_empty=True)
    check_array(fn, "grads", grads, ndim=2, allow_empty=True)
    if grads.shape != (rows.size, param.shape[1]):
        raise ValueError(f"{fn}: grads must have shape {(rows.size, param.shape[1])} for {rows.size} rows of "
                         f"param {param.shape}, got {grads.shape}")
    for name, table in state.items():
        check_array(fn, name, table, ndim=2)
        if table.shape != param.shape:
            raise ValueError(f"{fn}: {name} must have the shape of param {param.shape}, got {table.shape}")


def sparse_sgd_update(param, rows, grads, lr, weight_decay=0.0, momentum=0.0, dampening=0.0, nesterov=False,
                      buf=None):
    """SGD in place on the distinct ``rows`` of ``param`` (pyneural.kernels.embedding.sparse_sgd_update
    on the device, same bits); ``buf`` is the full momentum table (required exactly when momentum != 0).
    Rows are not re-checked (a coalesced gradient's); one outside the table is skipped."""
    fn = "cuda.sparse_sgd_update"
    if momentum and buf is None:
        raise ValueError(f"{fn}: momentum={momentum} needs a momentum buffer buf of shape {param.shape}")
    _check_sparse_step(fn, param, rows, grads, **({"buf": buf} if momentum else {}))
    u, (v, d) = rows.size, param.shape
    if u == 0:
        return param
    _backend.launch(_FILE, "pn_sparse_sgd_update", _backend.elementwise_grid(u * d, THREADS), (THREADS,),
                    (param, rows, grads, buf if momentum else None, np.int64(u), np.int64(v), np.int64(d),
                     np.float32(-lr), np.float32(weight_decay), np.float32(momentum), np.float32(1.0 - dampening),
                     np.int32(dampening != 0.0), np.int32(bool(nesterov))))
    return param


def sparse_adam_update(param, rows, grads, exp_avg, exp_avg_sq, step, lr, betas, eps, weight_decay=0.0,
                       decoupled=False):
    """Lazy Adam in place on the distinct ``rows`` of ``param`` at the parameter's global ``step``
    (>= 1) (pyneural.kernels.embedding.sparse_adam_update on the device, same bits); the moments
    of other rows are left as they are."""
    fn = "cuda.sparse_adam_update"
    _check_sparse_step(fn, param, rows, grads, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
    if int(step) < 1:
        raise ValueError(f"{fn}: step counts from 1, got {step}")
    u, (v, d) = rows.size, param.shape
    if u == 0:
        return param
    b1, b2 = (float(b) for b in betas)
    bc1, bc2 = 1.0 - b1 ** int(step), 1.0 - b2 ** int(step)
    # the constants rounded to float32 from their double expressions, as the CPU binding does
    _backend.launch(_FILE, "pn_sparse_adam_update", _backend.elementwise_grid(u * d, THREADS), (THREADS,),
                    (param, rows, grads, exp_avg, exp_avg_sq, np.int64(u), np.int64(v), np.int64(d),
                     np.float32(lr / bc1), np.float32(math.sqrt(bc2)), np.float32(b1), np.float32(b2),
                     np.float32(1.0 - b1), np.float32(1.0 - b2), np.float32(eps),
                     np.float32(0.0 if decoupled else weight_decay), np.float32(1.0 - lr * weight_decay),
                     np.int32(bool(decoupled) and np.float32(weight_decay) != 0)))
    return param
