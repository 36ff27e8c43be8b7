"""Embedding lookup, and the pairwise dot of gathered rows (matrix-factorisation scores), with dense
or row-sparse weight gradients.

Row-sparse gradients. With ``sparse=True`` and a leaf weight (a Parameter), backward does not hand
the engine a dense (V, D) gradient: it groups the batch's indices by row (deterministically, see
csrc/cpu/embedding.cpp) and stores a :class:`RowSparseGrad` (the U distinct rows, ascending, and
their (U, D) summed gradients) as the weight's ``.grad`` directly, returning None to the engine.
Gradients from several lookups of the same table add up (the row sets are merged and coalesced).
The optimizers (pyneural/optim) update only those rows; ``clip_grad_norm_`` and ``zero_grad`` work
on ``.grad.data`` (the values). Limits of this side channel, by design: post-accumulate-grad hooks
do not fire for a sparse gradient (DistributedDataParallel relies on them; use
``pyneural.distributed.sparse`` instead), and a sparse table must not also receive a dense gradient
from another op in the same backward (add the dense use first, or make it sparse=False).

On the CUDA device the same ops run on pyneural/cuda/embedding.py's kernels with the same results
(the grouped sums are the CPU's bits); a RowSparseGrad then holds device arrays. Indices are
range-checked once per op: by the row grouping of the backward when it groups them (it reads the
number of distinct rows back to the host anyway, and the extreme indices with it), else in the
forward. A forward whose backward never runs may therefore return NaN for an index outside the
table instead of raising.
"""
import numpy as np

from pyneural import backend
from pyneural.tensor import Function, Tensor, get_array_module


class RowSparseGrad:
    """The gradient of a (V, D) table that is zero except on some rows.

    ``indices``: int64 (U,), distinct and ascending; ``values``: (U, D), the gradient of those rows;
    ``shape``: (V, D). ``.data`` is ``values`` (so code that zeroes or scales ``p.grad.data`` in place
    keeps working); ``to_dense()`` gives the (V, D) array."""
    __slots__ = ("indices", "values", "shape")

    def __init__(self, indices, values, shape):
        self.indices, self.values, self.shape = indices, values, tuple(shape)
        if values.shape != (indices.shape[0],) + self.shape[1:]:
            raise ValueError(f"RowSparseGrad: values {values.shape} do not fit {indices.shape[0]} rows of a "
                             f"table of shape {self.shape}")

    @property
    def data(self):
        return self.values

    @data.setter
    def data(self, values):  # Module.to(dtype / device) converts gradients through .data
        if values.shape != self.values.shape:
            raise ValueError(f"RowSparseGrad: new values {values.shape} must keep the shape {self.values.shape}")
        where = backend.device_of(values)
        if backend.device_of(self.indices) != where:
            self.indices = backend.to_device(self.indices, where)
        self.values = values

    @property
    def dtype(self):
        return self.values.dtype

    def to_dense(self):
        out = get_array_module(self.values).zeros(self.shape, dtype=self.values.dtype)
        out[self.indices] = self.values
        return out

    def add(self, indices, values):
        """This gradient plus another row-sparse one (``indices`` distinct), coalesced: a new object."""
        xp = get_array_module(self.values)
        idx = xp.concatenate([self.indices, indices])
        vals = xp.concatenate([self.values, values.astype(self.values.dtype, copy=False)])
        rows, summed = _sparse_rows(vals.reshape(idx.shape[0], -1), idx, self.shape[0])
        return RowSparseGrad(rows, summed.reshape(rows.shape + self.shape[1:]), self.shape)

    def __repr__(self):
        return f"RowSparseGrad({self.indices.shape[0]} of {self.shape[0]} rows, dim {self.shape[1:]}, {self.dtype})"


def accumulate_sparse_grad(param, rows, values):
    """Add the row-sparse gradient (``rows`` distinct, ascending; ``values`` (U, D)) into ``param.grad``."""
    g = param.grad
    if g is None:
        param.grad = RowSparseGrad(rows, values, param.data.shape)
    elif isinstance(g, RowSparseGrad):
        param.grad = g.add(rows, values)
    else:  # a dense gradient is already there: add into it (rows are distinct)
        dense = g.data if isinstance(g, Tensor) else g
        dense[rows] += values


def _sparse_target(weight, sparse):
    """The Parameter that receives a row-sparse gradient, or None when the gradient goes dense."""
    return weight if sparse and weight.requires_grad and weight.is_leaf else None


def _sparse_rows(dout2d, flat, num_rows, skip_row=None):
    """``(rows, grads)``: the distinct indices of ``flat`` ascending and the sums of the rows of ``dout2d``
    (n, D) over each one's positions, ``skip_row`` left out; on the device of the arrays."""
    backend.check_same_device("embedding backward", [dout2d, flat])
    return backend.of(dout2d).embedding_backward_sparse(dout2d, flat, num_rows, skip_row)


class Embedding(Function):
    def __init__(self, indices, padding_idx=None, sparse_target=None):
        self.indices = indices
        self.padding_idx = padding_idx
        self.sparse_target = sparse_target

    def forward(self, weight):
        self.num_embeddings = weight.shape[0]
        flat = self.indices.reshape(-1)
        if flat.size == 0:
            return get_array_module(weight).empty(self.indices.shape + (weight.shape[1],), dtype=weight.dtype)
        backend.check_same_device("Embedding", [weight, flat])
        # a row-sparse backward checks the indices as it groups them (see the module docstring)
        grouped_later = self.sparse_target is not None and getattr(self, "needs_input_grad", None) is not None
        out = backend.of(weight).embedding_forward(weight, flat, validate=not grouped_later)
        return out.reshape(self.indices.shape + (weight.shape[1],))

    def backward(self, gy):
        dim = gy.shape[-1]
        xp = get_array_module(gy)
        if gy.size == 0:
            return (None if self.sparse_target is not None else xp.zeros((self.num_embeddings, dim), dtype=gy.dtype),)
        gy2 = gy.reshape(-1, dim)
        if not gy2.flags.c_contiguous:
            gy2 = xp.ascontiguousarray(gy2)
        flat = self.indices.reshape(-1)
        if self.sparse_target is not None:
            accumulate_sparse_grad(self.sparse_target, *_sparse_rows(gy2, flat, self.num_embeddings, self.padding_idx))
            return (None,)
        gw = backend.of(gy2).embedding_backward_dense(gy2, flat, self.num_embeddings)
        if self.padding_idx is not None:
            gw[self.padding_idx] = 0
        return (gw,)


def embedding_indices(indices, fn):
    """The index array of ``indices`` (a Tensor, a device array or array-like of integers), C-contiguous
    int64, on the device it was given on."""
    if isinstance(indices, Tensor):
        idx = indices.data
    else:
        idx = indices if backend.is_device_array(indices) else np.asarray(indices)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"{fn}: indices must be integers, got dtype {idx.dtype}")
    if idx.dtype != np.int64:
        idx = idx.astype(np.int64)
    if not idx.flags.c_contiguous:
        idx = get_array_module(idx).ascontiguousarray(idx)
    return idx


def embedding(indices, weight, padding_idx=None, sparse=False):
    """Rows of ``weight`` selected by ``indices``; the result has shape indices.shape + (dim,).
    ``sparse=True`` gives a leaf ``weight`` a :class:`RowSparseGrad` instead of a dense gradient."""
    idx = embedding_indices(indices, "embedding")
    if weight.data.ndim != 2:
        raise ValueError(f"embedding: weight must be (num_embeddings, dim), got shape {weight.data.shape}")
    n = weight.data.shape[0]
    if padding_idx is not None:
        if not -n <= padding_idx < n:
            raise ValueError(f"embedding: padding_idx {padding_idx} out of range for {n} embeddings")
        padding_idx %= n
    return Embedding(idx, padding_idx, _sparse_target(weight, sparse)).apply(weight)


# ---- pairwise dot of gathered rows ------------------------------------------------------------

class EmbeddingDot(Function):
    """``offset + bias_a[ia] + bias_b[ib] + <a[ia], b[ib]>`` per pair; inputs (a, b, [bias_a], [bias_b],
    [offset]) as flagged by ``has``. ``targets`` maps an input position to the Parameter that takes a
    row-sparse gradient (positions 0-3)."""

    def __init__(self, ia, ib, has, targets, l2=0.0):
        self.ia, self.ib, self.has, self.targets, self.l2 = ia, ib, has, targets, l2
        # input positions: 0 a, 1 b, then the biases and the offset in order of presence
        self.bias_pos = (2 if has[0] else None, (2 + has[0]) if has[1] else None)
        self.offset_pos = (2 + has[0] + has[1]) if has[2] else None

    def _grouped(self, side):
        """Whether backward groups the rows of ``side`` (0: a, 1: b): for any gradient of its table or bias."""
        needs = getattr(self, "needs_input_grad", None)
        if needs is None:
            return False
        bias_pos = self.bias_pos[side]
        return needs[side] or (bias_pos is not None and needs[bias_pos])

    def forward(self, a, b, *rest):
        rest = list(rest)
        bias_a = rest.pop(0) if self.has[0] else None
        bias_b = rest.pop(0) if self.has[1] else None
        offset = rest.pop(0) if self.has[2] else None
        self.a, self.b, self.biases = a, b, (bias_a, bias_b)
        self.shapes = (a.shape, b.shape, None if bias_a is None else bias_a.shape,
                       None if bias_b is None else bias_b.shape, None if offset is None else offset.shape)
        backend.check_same_device("embedding_dot", [a, self.ia, self.ib])
        # a side that backward groups may be range-checked there (see the module docstring)
        return backend.of(a).embedding_dot_forward(a, self.ia, b, self.ib, bias_a, bias_b, offset,
                                                   check=(not self._grouped(0), not self._grouped(1)))

    def _side(self, gy, pos, idx, other_table, other_idx, groups):
        """Gradients of one side: (table grad, bias grad), each dense, or None once stored sparse.
        ``groups``: this side's rows as the backend grouped them (None where it groups in the kernel)."""
        needs, bias_pos = self.needs_input_grad, self.bias_pos[pos]
        want_t, want_b = needs[pos], bias_pos is not None and needs[bias_pos]
        if not (want_t or want_b):
            return None, None
        decay = 2.0 * self.l2 / gy.shape[0]
        table_args = (other_table, other_idx) if want_t else (None, None)
        own = ((self.a, self.b)[pos], self.biases[pos])
        rows, grads, bias = backend.of(gy).embedding_dot_backward_rows(gy, idx, self.shapes[pos][0], groups,
                                                                       *table_args, want_b, decay, *own)
        out = []
        for p, values, shape in ((pos, grads, self.shapes[pos]),
                                 (bias_pos, bias, None if bias_pos is None else self.shapes[2 + pos])):
            if values is None:
                out.append(None)
                continue
            values = values.reshape((values.shape[0],) + tuple(shape[1:]))
            target = self.targets.get(p)
            if target is not None:
                accumulate_sparse_grad(target, rows, values)
                out.append(None)
            else:
                dense = get_array_module(values).zeros(shape, dtype=values.dtype)
                dense[rows] = values
                out.append(dense)
        return out

    def backward(self, gy):
        xp = get_array_module(gy)
        gy = xp.ascontiguousarray(gy)
        sides = [side for side in (0, 1) if self._grouped(side)]  # both grouped at once (one device read-back)
        groups = dict(zip(sides, backend.of(gy).embedding_group_rows([(self.ia, self.ib)[side] for side in sides],
                                                                     [self.shapes[side][0] for side in sides])))
        ga, gba = self._side(gy, 0, self.ia, self.b, self.ib, groups.get(0))
        gb, gbb = self._side(gy, 1, self.ib, self.a, self.ia, groups.get(1))
        grads = [ga, gb]
        if self.has[0]:
            grads.append(gba)
        if self.has[1]:
            grads.append(gbb)
        if self.has[2]:
            g_offset = None
            if self.needs_input_grad[self.offset_pos]:
                g_offset = xp.empty(self.shapes[4], dtype=gy.dtype)
                g_offset[...] = gy.sum(dtype=np.float64).astype(gy.dtype)
            grads.append(g_offset)
        return tuple(grads)


def embedding_dot(ia, a, ib, b, bias_a=None, bias_b=None, offset=None, sparse=False, l2=0.0):
    """Scores of pairs of rows: ``offset + bias_a[ia] + bias_b[ib] + <a[ia], b[ib]>``, shape (n,).

    ``a`` (Va, D) and ``b`` (Vb, D) are tables, ``bias_a``/``bias_b`` optional (V, 1) tables,
    ``offset`` an optional one-element tensor; ``ia``/``ib`` n indices each. The gathered rows are
    never materialised (one fused pass, csrc/cpu/embedding.cpp). With ``sparse=True`` the leaf
    tables (and bias tables) receive :class:`RowSparseGrad` gradients; ``offset`` stays dense.

    ``l2`` > 0 adds to the table and bias gradients those of the per-pair penalty
    ``l2 / n * sum_i (|a[ia[i]]|^2 + |b[ib[i]]|^2 + bias_a[ia[i]]^2 + bias_b[ib[i]]^2)`` (matrix
    factorisation's classic regulariser: a row is shrunk in proportion to how often the batch uses
    it). The penalty's value is not part of the returned scores; only its gradient is added, in the
    same grouped pass (no second grouping of the indices)."""
    if not l2 >= 0:
        raise ValueError(f"embedding_dot: l2 must be >= 0, got {l2}")
    ia = embedding_indices(ia, "embedding_dot").reshape(-1)
    ib = embedding_indices(ib, "embedding_dot").reshape(-1)
    if offset is not None and offset.data.size != 1:
        raise ValueError(f"embedding_dot: offset must hold one value, got shape {offset.data.shape}")
    inputs = [a, b] + [t for t in (bias_a, bias_b, offset) if t is not None]
    has = (bias_a is not None, bias_b is not None, offset is not None)
    targets = {}
    for pos, t in ((0, a), (1, b)):
        if _sparse_target(t, sparse) is not None:
            targets[pos] = t
    if has[0] and _sparse_target(bias_a, sparse) is not None:
        targets[2] = bias_a
    if has[1] and _sparse_target(bias_b, sparse) is not None:
        targets[2 + has[0]] = bias_b
    return EmbeddingDot(ia, ib, has, targets, float(l2)).apply(*inputs)
