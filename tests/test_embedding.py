"""Embedding lookup and its dense and row-sparse backward: float32 C++ on every SIMD path against
the float64 numpy path, which is itself checked against weight[indices] and np.add.at."""
import numpy as np
import pytest

from conftest import poisoned, rel_err
from pyneural import _C
from pyneural.kernels.embedding import embedding_backward_dense, embedding_backward_sparse, embedding_forward



# (V, D, indices shape): odd widths, a scalar index, 1-D to 3-D indices, enough work to go parallel.
CASES = [(11, 5, (13,)), (1, 5, (40,)), (50, 37, (6, 7)), (7, 3, ()), (200, 16, (3, 4, 5)), (3000, 64, (4000,))]


def add_at_reference(dout, indices, num_embeddings):
    dweight = np.zeros((num_embeddings, dout.shape[-1]))
    np.add.at(dweight, indices.reshape(-1), dout.reshape(-1, dout.shape[-1]))
    return dweight


@pytest.mark.parametrize("V,D,shape", CASES)
def test_forward_float32_matches_float64(isa, rng, V, D, shape):
    weight = rng.standard_normal((V, D))
    indices = rng.integers(0, V, shape)
    ref = embedding_forward(weight, indices)
    assert ref.shape == shape + (D,) and np.array_equal(ref, weight[indices])
    w32 = weight.astype(np.float32)
    assert np.array_equal(embedding_forward(w32, indices), w32[indices])
    out = poisoned((indices.size, D))
    _C.embedding_forward(w32, indices, out)
    assert rel_err(out, ref.reshape(-1, D)) < 1e-7


@pytest.mark.parametrize("V,D,shape", CASES)
def test_backward_float32_matches_float64(isa, rng, V, D, shape):
    indices = rng.integers(0, V, shape)
    dout = rng.standard_normal(shape + (D,)).astype(np.float32).astype(np.float64)  # exact in float32
    ref = embedding_backward_dense(dout, indices, V)
    assert rel_err(ref, add_at_reference(dout, indices, V)) < 1e-14
    ref_rows, ref_grads = embedding_backward_sparse(dout, indices, V)
    assert np.array_equal(ref_rows, np.unique(indices)) and np.array_equal(ref_grads, ref[ref_rows])

    d32 = dout.astype(np.float32)
    dense = embedding_backward_dense(d32, indices, V)
    rows, grads = embedding_backward_sparse(d32, indices, V)
    assert dense.dtype == grads.dtype == np.float32 and rows.dtype == np.int64
    assert rel_err(dense, ref) < 1e-5
    assert np.array_equal(rows, ref_rows)
    assert rel_err(grads, ref_grads) < 1e-5


def test_bindings_write_every_output(isa, rng):
    V, D, n = 40, 9, 30
    indices = rng.integers(0, V // 2, n)  # rows V/2.. untouched: the dense kernel must zero them
    dout = rng.standard_normal((n, D)).astype(np.float32)
    ref = add_at_reference(dout, indices, V)
    dweight = poisoned((V, D))
    _C.embedding_backward_dense(dout, indices, dweight)
    assert rel_err(dweight, ref) < 1e-5

    groups = _C.EmbeddingRowGroups(indices, V)
    rows = np.full(groups.num_rows, -1, np.int64)
    grads = poisoned((groups.num_rows, D))
    groups.rows_into(rows)
    groups.sum_into(dout, grads)
    assert np.array_equal(rows, np.unique(indices))
    assert rel_err(grads, ref[rows]) < 1e-5


@pytest.mark.parametrize("n_rows", [1, 7])
def test_sparse_backward_with_many_duplicates_is_deterministic(isa, rng, n_rows):
    V, D, n = 100_000, 33, 6000
    indices = rng.choice(rng.integers(0, V, n_rows), size=n)  # ~6000/n_rows copies of each row
    dout = rng.standard_normal((n, D)).astype(np.float32)
    ref = add_at_reference(dout.astype(np.float64), indices, V)
    rows, grads = embedding_backward_sparse(dout, indices, V)
    assert np.array_equal(rows, np.unique(indices))
    assert rel_err(grads, ref[rows]) < 1e-5
    again_rows, again = embedding_backward_sparse(dout, indices, V)
    assert np.array_equal(again_rows, rows) and np.array_equal(again.view(np.uint32), grads.view(np.uint32))
    # The dense backward runs the same plan: the same bits, zeros elsewhere.
    dense = embedding_backward_dense(dout, indices, V)
    assert np.array_equal(dense[rows].view(np.uint32), grads.view(np.uint32))
    assert np.count_nonzero(np.delete(dense, rows, axis=0)) == 0


def test_sparse_backward_sums_rows_in_index_order(rng):
    """Each row is summed serially in the order its indices appear (the documented order that makes the
    result independent of the thread count), so float32 addition in that order reproduces it bit for bit."""
    V, D, n = 500, 24, 20000
    indices = rng.integers(0, 40, n)
    dout = rng.standard_normal((n, D)).astype(np.float32)
    rows, grads = embedding_backward_sparse(dout, indices, V)
    for u, r in enumerate(rows[:5]):
        acc = np.zeros(D, np.float32)
        for i in np.flatnonzero(indices == r):
            acc += dout[i]
        assert np.array_equal(acc.view(np.uint32), grads[u].view(np.uint32))


def test_backward_with_vocabulary_far_larger_than_batch(isa, rng):
    # V > 32 n groups by sorting instead of counting.
    V, D, n = 2_000_000, 8, 300
    indices = rng.integers(0, V, n)
    indices[::7] = indices[0]
    dout = rng.standard_normal((n, D)).astype(np.float32)
    ref_rows, ref_grads = embedding_backward_sparse(dout.astype(np.float64), indices, V)
    rows, grads = embedding_backward_sparse(dout, indices, V)
    assert np.array_equal(rows, ref_rows)
    assert rel_err(grads, ref_grads) < 1e-5


# ---- bad input: one test each ------------------------------------------------------------------

def test_forward_rejects_index_too_large():
    with pytest.raises(ValueError, match=r"indices\[1, 0\] = 5 is out of range for 5 embeddings"):
        embedding_forward(np.zeros((5, 3), np.float32), np.array([[0], [5]]))


def test_backward_rejects_negative_index():
    with pytest.raises(ValueError, match=r"indices\[2\] = -1 is out of range for 5 embeddings"):
        embedding_backward_sparse(np.zeros((3, 2), np.float32), np.array([0, 1, -1]), 5)


def test_forward_binding_checks_indices_itself():
    with pytest.raises(ValueError, match=r"indices\[1\] \(flat\) = 9 is out of range for 5 embeddings"):
        _C.embedding_forward(np.zeros((5, 3), np.float32), np.array([0, 9]), np.empty((2, 3), np.float32))


def test_row_groups_binding_checks_indices_itself():
    with pytest.raises(ValueError, match=r"indices\[0\] \(flat\) = -2 is out of range for 5 embeddings"):
        _C.EmbeddingRowGroups(np.array([-2, 0]), 5)


def test_dense_binding_checks_indices_itself():
    with pytest.raises(ValueError, match=r"= 5 is out of range for 5 embeddings"):
        _C.embedding_backward_dense(np.zeros((2, 3), np.float32), np.array([0, 5]), np.empty((5, 3), np.float32))


def test_rejects_int32_indices():
    with pytest.raises(TypeError, match="indices must have dtype int64"):
        embedding_forward(np.zeros((5, 3), np.float32), np.array([0, 1], np.int32))


def test_rejects_1d_weight():
    with pytest.raises(ValueError, match=r"weight must have 2 dimensions, got shape \(5,\)"):
        embedding_forward(np.zeros(5, np.float32), np.array([0, 1]))


def test_rejects_int_weight():
    with pytest.raises(TypeError, match="weight must have dtype float32 or float64"):
        embedding_forward(np.zeros((5, 3), np.int32), np.array([0, 1]))


def test_rejects_empty_indices():
    with pytest.raises(ValueError, match="zero-size"):
        embedding_forward(np.zeros((5, 3), np.float32), np.zeros(0, np.int64))


def test_rejects_non_contiguous_indices():
    with pytest.raises(ValueError, match="C-contiguous"):
        embedding_backward_dense(np.zeros((2, 3), np.float32), np.arange(4)[::2], 5)


def test_backward_rejects_dout_shape():
    with pytest.raises(ValueError, match=r"dout has shape \(3, 4\) but indices \(2,\) needs \(2, 'D'\)"):
        embedding_backward_sparse(np.zeros((3, 4), np.float32), np.array([0, 1]), 5)


def test_backward_rejects_zero_embeddings():
    with pytest.raises(ValueError, match="num_embeddings must be >= 1, got 0"):
        embedding_backward_dense(np.zeros((2, 3), np.float32), np.array([0, 0]), 0)


def test_backward_rejects_float_num_embeddings():
    with pytest.raises(TypeError, match="num_embeddings must be an int, got float"):
        embedding_backward_sparse(np.zeros((2, 3), np.float32), np.array([0, 0]), 5.0)


def test_sum_into_binding_checks_dout_rows():
    groups = _C.EmbeddingRowGroups(np.array([0, 2, 2]), 5)
    with pytest.raises(ValueError, match=r"dout must have shape \(3, D\)"):
        groups.sum_into(np.zeros((4, 3), np.float32), np.empty((2, 3), np.float32))


# ---- row-sparse gradients, the pairwise dot of gathered rows ------------------------------------

import pyneural as pn  # noqa: E402
from pyneural import nn  # noqa: E402
from pyneural.functions.embedding import RowSparseGrad, embedding, embedding_dot  # noqa: E402
from pyneural.kernels.embedding import embedding_dot_backward_rows, embedding_dot_forward  # noqa: E402


def test_sparse_embedding_gradient_matches_finite_differences(rng):
    V, D = 9, 3
    w = pn.Tensor(rng.standard_normal((V, D)), requires_grad=True)  # float64
    idx = rng.integers(0, V, (4, 5))
    cot = rng.standard_normal((4, 5, D))
    (embedding(idx, w, sparse=True) * pn.Tensor(cot)).sum().backward()
    g = w.grad
    assert isinstance(g, RowSparseGrad)
    assert np.array_equal(g.indices, np.unique(idx))  # exactly the touched rows, ascending
    numeric = np.zeros((V, D))
    eps = 1e-6
    for r in range(V):
        for d in range(D):
            for sign in (1, -1):
                w.data[r, d] += sign * eps
                numeric[r, d] += sign * np.sum(w.data[idx] * cot) / (2 * eps)
                w.data[r, d] -= sign * eps
    assert np.allclose(g.to_dense(), numeric, atol=1e-6)


def test_sparse_and_dense_embedding_gradients_agree_and_accumulate(rng):
    sparse, dense = nn.Embedding(40, 6, sparse=True, padding_idx=3), nn.Embedding(40, 6, padding_idx=3)
    dense.weight.data[...] = sparse.weight.data
    for _ in range(2):  # two backwards accumulate (rows merged and coalesced)
        idx = rng.integers(0, 40, 50)
        idx[:3] = 3
        for m in (sparse, dense):
            (m(idx) ** 2).sum().backward()
    g = sparse.weight.grad
    assert 3 not in g.indices and np.all(np.diff(g.indices) > 0)
    assert rel_err(g.to_dense(), dense.weight.grad.data) < 1e-6


def test_sparse_gradient_of_a_non_leaf_table_goes_dense(rng):
    w = pn.Tensor(rng.standard_normal((5, 2)).astype(np.float32), requires_grad=True)
    (embedding([1, 1, 4], w * 2.0, sparse=True)).sum().backward()
    assert not isinstance(w.grad, RowSparseGrad)
    assert np.allclose(w.grad.data, [[0, 0], [4, 4], [0, 0], [0, 0], [2, 2]])


def dot_reference(a, ia, b, ib, ba, bb, off):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return np.einsum("nd,nd->n", a[ia], b[ib]) + ba.reshape(-1)[ia] + bb.reshape(-1)[ib] + off


@pytest.mark.parametrize("Va,Vb,D,n", [(37, 53, 5, 211), (1000, 20, 33, 70000), (3, 4, 1, 1)])
def test_embedding_dot_forward_matches_float64(rng, Va, Vb, D, n):
    a = rng.standard_normal((Va, D)).astype(np.float32)
    b = rng.standard_normal((Vb, D)).astype(np.float32)
    ba, bb = rng.standard_normal((Va, 1)).astype(np.float32), rng.standard_normal(Vb).astype(np.float32)
    ia, ib = rng.integers(0, Va, n), rng.integers(0, Vb, n)
    out = poisoned(n)
    _C.embedding_dot_forward(a, ia, b, ib, ba, bb, 0.25, out)
    ref = dot_reference(a, ia, b, ib, ba, bb, 0.25)
    assert rel_err(out, ref) < 1e-5
    assert rel_err(embedding_dot_forward(a, ia, b, ib), ref - ba.reshape(-1)[ia] - bb[ib] - 0.25) < 1e-5


@pytest.mark.parametrize("V,D,n", [(37, 5, 211), (300, 33, 70000), (50000, 8, 300)])
def test_embedding_dot_backward_rows_matches_float64(rng, V, D, n):
    other = rng.standard_normal((29, D)).astype(np.float32)
    own, own_bias = rng.standard_normal((V, D)).astype(np.float32), rng.standard_normal((V, 1)).astype(np.float32)
    idx, oidx = rng.integers(0, V, n), rng.integers(0, 29, n)
    gy = rng.standard_normal(n).astype(np.float32)
    rows, grads, bias = embedding_dot_backward_rows(gy, idx, V, other, oidx, True, 0.3, own, own_bias)
    ref = np.zeros((V, D))
    np.add.at(ref, idx, gy[:, None].astype(np.float64) * other[oidx])
    ref_b = np.bincount(idx, weights=gy, minlength=V)
    counts = np.bincount(idx, minlength=V)
    ref += 0.3 * counts[:, None] * own
    ref_b += 0.3 * counts * own_bias[:, 0]
    assert np.array_equal(rows, np.flatnonzero(counts))
    assert rel_err(grads, ref[rows]) < 1e-5 and rel_err(bias, ref_b[rows]) < 1e-5
    r64, g64, b64 = embedding_dot_backward_rows(gy.astype(np.float64), idx, V, other.astype(np.float64), oidx, True,
                                                0.3, own.astype(np.float64), own_bias.astype(np.float64))
    assert np.array_equal(r64, rows) and rel_err(g64, ref[rows]) < 1e-12 and rel_err(b64, ref_b[rows]) < 1e-12


def test_weighted_sum_binding_writes_every_output(rng):
    idx, other = rng.integers(0, 100, 5000), rng.integers(0, 7, 5000)
    groups = _C.EmbeddingRowGroups(idx, 100)
    grads, wsum = poisoned((groups.num_rows, 4)), poisoned(groups.num_rows)
    table = rng.standard_normal((7, 4)).astype(np.float32)
    groups.weighted_sum_into(rng.standard_normal(5000).astype(np.float32), table, other, grads, wsum)
    assert np.all(np.isfinite(grads)) and np.all(np.isfinite(wsum))


def test_embedding_dot_gradcheck_dense(rng):
    ia, ib = rng.integers(0, 6, 20), rng.integers(0, 4, 20)
    tensors = [pn.Tensor(rng.standard_normal(s), requires_grad=True) for s in ((6, 3), (4, 3), (6, 1), (4, 1), (1,))]
    assert pn.gradcheck(lambda a, b, ba, bb, off: embedding_dot(ia, a, ib, b, ba, bb, off), tensors)


def test_embedding_dot_sparse_gradients_match_dense_and_l2_is_the_penalty_gradient(rng):
    ia, ib = rng.integers(0, 6, 30), rng.integers(0, 4, 30)
    shapes = ((6, 3), (4, 3), (6, 1), (4, 1))
    base = [rng.standard_normal(s) for s in shapes]
    cot = rng.standard_normal(30)
    dense = [pn.Tensor(x.copy(), requires_grad=True) for x in base]
    sparse = [pn.Tensor(x.copy(), requires_grad=True) for x in base]
    # dense reference: scores plus the per-pair penalty written out with ordinary ops
    s = embedding_dot(ia, dense[0], ib, dense[1], dense[2], dense[3])
    penalty = sum(((embedding(i, t) ** 2).sum()) for i, t in zip((ia, ib, ia, ib), dense)) * (0.2 / 30)
    ((s * pn.Tensor(cot)).sum() + penalty).backward()
    s = embedding_dot(ia, sparse[0], ib, sparse[1], sparse[2], sparse[3], sparse=True, l2=0.2)
    (s * pn.Tensor(cot)).sum().backward()
    for d, sp in zip(dense, sparse):
        assert isinstance(sp.grad, RowSparseGrad)
        assert np.allclose(sp.grad.to_dense(), d.grad.data, atol=1e-12)


def test_embedding_dot_rejects_bad_input(rng):
    a, b = np.zeros((5, 3), np.float32), np.zeros((4, 2), np.float32)
    with pytest.raises(ValueError, match="same width"):
        embedding_dot_forward(a, np.zeros(2, np.int64), b, np.zeros(2, np.int64))
    b = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match="out of range"):
        embedding_dot_forward(a, np.array([0, 5]), b, np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="out of range"):
        _C.embedding_dot_forward(a, np.array([0, 1]), b, np.array([0, 4]), None, None, 0.0, np.empty(2, np.float32))
    with pytest.raises(ValueError, match="same length|1-D"):
        embedding_dot_forward(a, np.zeros(3, np.int64), b, np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="one value per row"):
        embedding_dot_forward(a, np.zeros(2, np.int64), b, np.zeros(2, np.int64), bias_a=np.zeros(4, np.float32))
