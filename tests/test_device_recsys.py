"""Row-sparse embedding gradients, their optimizer steps and the recommender on the CUDA device,
against the CPU (same bits where the arithmetic is the same) and float64 references.

Runs on a real GPU or, in CI, on the emulated device (conftest switches it on). Marked ``cuda``.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import pyneural as pn
from conftest import subprocess_env
from pyneural import backend
from pyneural.cuda import embedding as cuda_emb
from pyneural.functions.embedding import RowSparseGrad, embedding, embedding_dot
from pyneural.optim.clip import clip_grad_norm_
from pyneural.recsys import NCF, MatrixFactorization, evaluate, synthetic, train_epoch, train_test_split

pytestmark = pytest.mark.cuda
U32 = 2.0 ** -24  # float32 unit roundoff


@pytest.fixture(autouse=True)
def _needs_cuda(cuda_xp):
    return cuda_xp


def on(device, a):
    return pn.tensor(a).to(device)


def param(device, a):
    """A leaf Parameter holding a copy of ``a`` on ``device``."""
    return pn.nn.Parameter(pn.tensor(np.array(a)).to(device).data)


def host(a):
    return a.get() if hasattr(a, "get") else np.array(a)


def sparse_grad_of(device, weights, indices, cotangent, padding_idx=None):
    """The RowSparseGrad (rows, values on the host) of sum(embedding(indices) * cotangent)."""
    w = param(device, weights)
    out = embedding(on(device, indices), w, padding_idx=padding_idx, sparse=True)
    (out * on(device, cotangent)).sum().backward()
    g = w.grad
    assert isinstance(g, RowSparseGrad)
    assert backend.device_of(g.indices) == device and backend.device_of(g.values) == device
    return host(g.indices), host(g.values)


def grouped_reference(indices, cotangent, padding_idx=None):
    """float64 (rows, sums, bound): rows ascending, sums of the cotangent rows per index, and the error
    bound of a float32 sum of those terms in any order (count * u * sum of |terms|)."""
    flat, dout = indices.reshape(-1), cotangent.reshape(-1, cotangent.shape[-1]).astype(np.float64)
    rows = np.unique(flat)
    if padding_idx is not None:
        rows = rows[rows != padding_idx]
    sums = np.stack([dout[flat == r].sum(0) for r in rows])
    bound = np.stack([(flat == r).sum() * U32 * np.abs(dout[flat == r]).sum(0) for r in rows])
    return rows, sums, bound


# ---- the row-sparse backward ------------------------------------------------------------------------

@pytest.mark.parametrize("padding_idx", [None, 3])
@pytest.mark.parametrize("V,D,shape", [(50, 7, (9, 6)), (5, 33, (400,)), (1000, 4, (64,))])
def test_sparse_backward_on_the_device_is_the_cpus_bits_and_matches_float64(rng, V, D, shape, padding_idx):
    w = rng.standard_normal((V, D)).astype(np.float32)
    idx = rng.integers(0, V, shape)
    idx.reshape(-1)[:3] = 3  # padding row always present (and repeated)
    cot = rng.standard_normal(shape + (D,)).astype(np.float32)
    rows, values = sparse_grad_of("cuda", w, idx, cot, padding_idx)
    ref_rows, ref, bound = grouped_reference(idx, cot, padding_idx)
    assert rows.dtype == np.int64 and np.array_equal(rows, ref_rows)
    assert np.all(np.abs(values - ref) <= bound)
    cpu_rows, cpu_values = sparse_grad_of("cpu", w, idx, cot, padding_idx)
    assert np.array_equal(rows, cpu_rows) and values.tobytes() == cpu_values.tobytes()


def test_sparse_backward_with_one_heavy_row_is_the_same_bits_every_run(rng):
    V, D, n = 40, 16, 6000
    idx = np.where(rng.random(n) < 0.8, 7, rng.integers(0, V, n))  # one row takes most positions
    cot = (rng.standard_normal((n, D)) * 10.0 ** rng.integers(-3, 4, (n, 1))).astype(np.float32)
    w = rng.standard_normal((V, D)).astype(np.float32)
    first, second = sparse_grad_of("cuda", w, idx, cot), sparse_grad_of("cuda", w, idx, cot)
    assert first[1].tobytes() == second[1].tobytes()
    assert first[1].tobytes() == sparse_grad_of("cpu", w, idx, cot)[1].tobytes()


def test_two_lookups_of_one_table_add_up_coalesced_on_the_device(rng):
    w0 = rng.standard_normal((30, 5)).astype(np.float32)
    i1, i2 = rng.integers(0, 30, 40), rng.integers(10, 30, 25)
    c1, c2 = rng.standard_normal((40, 5)).astype(np.float32), rng.standard_normal((25, 5)).astype(np.float32)
    grads = {}
    for device in ("cpu", "cuda"):
        w = param(device, w0)
        loss = (embedding(on(device, i1), w, sparse=True) * on(device, c1)).sum()
        loss = loss + (embedding(on(device, i2), w, sparse=True) * on(device, c2)).sum()
        loss.backward()
        grads[device] = (host(w.grad.indices), host(w.grad.values), host(w.grad.to_dense()))
    ref = np.zeros((30, 5))
    np.add.at(ref, i1, c1.astype(np.float64))
    np.add.at(ref, i2, c2.astype(np.float64))
    assert np.array_equal(grads["cuda"][0], np.unique(np.concatenate([i1, i2])))
    assert np.allclose(grads["cuda"][2], ref, rtol=0, atol=1e-5)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(grads["cpu"], grads["cuda"]))


def test_empty_index_list_on_the_device_gives_no_gradient():
    emb = pn.nn.Embedding(10, 3, sparse=True).to("cuda")
    out = embedding(on("cuda", np.zeros((0, 2), np.int64)), emb.weight, sparse=True)
    assert out.shape == (0, 2, 3) and out.device == "cuda"
    out.sum().backward()
    assert emb.weight.grad is None
    rows, grads = cuda_emb.embedding_backward_sparse(pn.zeros(0, 3, device="cuda").data,
                                                     on("cuda", np.zeros(0, np.int64)).data, 10)
    assert rows.shape == (0,) and grads.shape == (0, 3)


def test_an_index_outside_the_table_raises_on_the_device():
    w = param("cuda", np.ones((6, 2), np.float32))
    bad = on("cuda", np.array([1, 6, 2]))
    out = embedding(bad, w, sparse=True)  # checked by the backward's grouping, with no extra read
    with pytest.raises(ValueError, match=r"index 6 is outside \[0, 6\)"):
        out.sum().backward()
    with pn.no_grad(), pytest.raises(ValueError, match="outside"):
        embedding(bad, w, sparse=True)
    with pytest.raises(RuntimeError, match="same device"):
        embedding(np.array([1, 2]), w, sparse=True)


def test_module_to_moves_a_row_sparse_gradient_with_its_rows(rng):
    emb = pn.nn.Embedding(12, 4, sparse=True)
    emb(np.array([3, 1, 3])).sum().backward()
    emb.to("cuda")
    g = emb.weight.grad
    assert backend.device_of(g.indices) == "cuda" and backend.device_of(g.values) == "cuda"
    assert np.array_equal(host(g.indices), [1, 3]) and np.array_equal(host(g.values), [[1.0] * 4, [2.0] * 4])


# ---- the pairwise dot ---------------------------------------------------------------------------------

def dot_run(device, base, ia, ib, sparse, l2):
    params = [param(device, x) for x in base]
    scores = embedding_dot(on(device, ia), params[0], on(device, ib), params[1], *params[2:], sparse=sparse, l2=l2)
    (scores * scores).sum().backward()
    grads = [p.grad.to_dense() if isinstance(p.grad, RowSparseGrad) else p.grad.data for p in params]
    return host(scores.detach().data), [host(g) for g in grads]


@pytest.mark.parametrize("sparse,l2", [(True, 0.0), (True, 0.3), (False, 0.1)])
def test_embedding_dot_on_the_device_matches_the_cpu_and_float64(rng, sparse, l2):
    Va, Vb, D, n = 25, 18, 9, 300
    ia, ib = rng.integers(0, Va, n), rng.integers(0, Vb, n)
    base = [rng.standard_normal(s).astype(np.float32) for s in ((Va, D), (Vb, D), (Va, 1), (Vb, 1), (1,))]
    scores, grads = dot_run("cuda", base, ia, ib, sparse, l2)
    a, b, ba, bb, off = (x.astype(np.float64) for x in base)
    ref = off[0] + ba[ia, 0] + bb[ib, 0] + np.einsum("nd,nd->n", a[ia], b[ib])
    terms = np.abs(off[0]) + np.abs(ba[ia, 0]) + np.abs(bb[ib, 0]) + np.einsum("nd,nd->n", np.abs(a[ia]), np.abs(b[ib]))
    assert np.all(np.abs(scores - ref) <= (D + 3) * U32 * terms)
    cpu_scores, cpu_grads = dot_run("cpu", base, ia, ib, sparse, l2)
    assert np.allclose(scores, cpu_scores, rtol=0, atol=(D + 3) * 2 * U32 * terms.max())
    # the gradients from the device's scores, grouped on the device: the CPU's bits given the same scores
    gy = 2 * scores.astype(np.float64)
    ref_ga = np.zeros((Va, D))
    np.add.at(ref_ga, ia, gy[:, None] * b[ib] + 2 * l2 / n * a[ia])
    assert np.allclose(grads[0], ref_ga, rtol=1e-4, atol=1e-4 * np.abs(ref_ga).max())
    assert np.allclose(grads[4], gy.sum(), rtol=1e-5)
    for g, c in zip(grads, cpu_grads):
        assert np.allclose(g, c, rtol=1e-4, atol=1e-4 * max(np.abs(c).max(), 1.0))


def test_embedding_dot_backward_rows_on_the_device_is_the_cpus_bits(rng):
    from pyneural.kernels import embedding as cpu_emb
    V, Vo, D, n = 30, 20, 6, 500
    idx, other_idx = rng.integers(0, V, n), rng.integers(0, Vo, n)
    gy = rng.standard_normal(n).astype(np.float32)
    other, own = rng.standard_normal((Vo, D)).astype(np.float32), rng.standard_normal((V, D)).astype(np.float32)
    own_bias = rng.standard_normal(V).astype(np.float32)
    rows, grads, bias = cpu_emb.embedding_dot_backward_rows(gy, idx, V, other, other_idx, True, 0.01, own, own_bias)
    d = [pn.tensor(x).to("cuda").data for x in (gy, idx, other, other_idx, own, own_bias)]
    groups, = cuda_emb.group_rows([d[1]], [V])
    g_grads, g_bias = cuda_emb.embedding_dot_backward_rows(d[0], groups, d[2], d[3], True, 0.01, d[4], d[5])
    assert np.array_equal(host(groups.rows), rows)
    assert host(g_grads).tobytes() == grads.tobytes() and host(g_bias).tobytes() == bias.tobytes()


# ---- optimizer steps ------------------------------------------------------------------------------------

OPTIMIZERS = [
    (pn.optim.SGD, dict(lr=0.3)),
    (pn.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.01, dampening=0.2)),
    (pn.optim.SGD, dict(lr=0.1, momentum=0.8, nesterov=True)),
    (pn.optim.Adam, dict(lr=0.05, weight_decay=0.02)),
    (pn.optim.AdamW, dict(lr=0.05, weight_decay=0.1)),
]


@pytest.mark.parametrize("opt_cls,options", OPTIMIZERS)
def test_sparse_steps_on_the_device_are_the_cpus_bits(rng, opt_cls, options):
    V, D = 40, 6
    w0 = rng.standard_normal((V, D)).astype(np.float32)
    batches = [(rng.integers(0, V, 30), rng.standard_normal((30, D)).astype(np.float32)) for _ in range(4)]
    result = {}
    for device in ("cpu", "cuda"):
        w = param(device, w0)
        opt = opt_cls([w], **options)
        for idx, cot in batches:
            opt.zero_grad()
            (embedding(on(device, idx), w, sparse=True) * on(device, cot)).sum().backward()
            opt.step()
        state = opt.state[id(w)]
        result[device] = [host(w.data)] + [host(v) for _, v in sorted(state.items()) if hasattr(v, "shape")]
    assert len(result["cuda"]) > 1 or opt_cls is pn.optim.SGD
    assert all(c.tobytes() == g.tobytes() for c, g in zip(result["cpu"], result["cuda"]))
    untouched = np.setdiff1d(np.arange(V), np.concatenate([i for i, _ in batches]))
    if "weight_decay" not in options:
        assert np.array_equal(result["cuda"][0][untouched], w0[untouched])


def test_sparse_step_wrappers_check_their_arguments():
    p = pn.zeros(5, 3, device="cuda").data
    rows = on("cuda", np.array([0, 2])).data
    with pytest.raises(ValueError, match=r"grads must have shape \(2, 3\)"):
        cuda_emb.sparse_sgd_update(p, rows, pn.zeros(2, 4, device="cuda").data, 0.1)
    with pytest.raises(ValueError, match="momentum buffer"):
        cuda_emb.sparse_sgd_update(p, rows, pn.zeros(2, 3, device="cuda").data, 0.1, momentum=0.9)
    with pytest.raises(TypeError, match="int64"):
        cuda_emb.sparse_adam_update(p, rows.astype(np.int32), pn.zeros(2, 3, device="cuda").data, p.copy(), p.copy(),
                                    1, 0.1, (0.9, 0.999), 1e-8)


def test_clip_grad_norm_and_zero_grad_with_device_row_sparse_gradients(rng):
    idx, cot = rng.integers(0, 20, 50), rng.standard_normal((50, 4)).astype(np.float32)
    norms, values = {}, {}
    for device in ("cpu", "cuda"):
        pn.manual_seed(0)
        emb, dense = pn.nn.Embedding(20, 4, sparse=True).to(device), pn.nn.Linear(4, 2).to(device)
        (dense(emb(on(device, idx))).sum() + (emb(on(device, idx)) * on(device, cot)).sum()).backward()
        params = list(emb.parameters()) + list(dense.parameters())
        norms[device] = float(clip_grad_norm_(params, 0.5))
        values[device] = host(emb.weight.grad.values)
        after = float(clip_grad_norm_(params, 1e9))
        assert after == pytest.approx(0.5, rel=1e-5)
        opt = pn.optim.SGD(params, lr=0.1)
        opt.zero_grad(set_to_none=False)
        assert not np.any(host(emb.weight.grad.values))
        opt.zero_grad()
        assert emb.weight.grad is None
    assert norms["cuda"] == pytest.approx(norms["cpu"], rel=1e-5)
    assert np.allclose(values["cuda"], values["cpu"], rtol=1e-5, atol=1e-7)


# ---- the recommender ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ratings():
    data = synthetic(24_000, seed=3)
    return data, train_test_split(data, shuffled=True)


def count_host_reads(monkeypatch):
    """Counts every device -> host read of the emulated device's arrays (None on a real GPU)."""
    from pyneural.cuda import emulator
    if not emulator.enabled():
        return None
    from pyneural.cuda.emulator import xp
    reads = []
    for name in ("get", "item", "tolist", "__float__", "__int__", "__bool__", "__index__"):
        real = getattr(xp.ndarray, name)
        monkeypatch.setattr(xp.ndarray, name, lambda self, *a, _real=real, _name=name, **k:
                            reads.append(_name) or _real(self, *a, **k))
    return reads


@pytest.mark.parametrize("model_cls,options,reads_per_step,n_train,batch", [
    (MatrixFactorization, dict(prior=2.0, l2=0.01), 2, None, 2048),  # one grouping read (both sides) + the loss
    (NCF, dict(hidden=(16, 8)), 3, 3000, 1024),  # one grouping read per table + the loss; the emulated GEMMs are slow
])
def test_a_recommender_epoch_on_the_device_matches_the_cpu(ratings, monkeypatch, model_cls, options,
                                                            reads_per_step, n_train, batch):
    data, (train, test) = ratings
    train = train.subset(slice(0, n_train))
    results = {}
    for device in ("cpu", "cuda"):
        pn.manual_seed(0)
        model = model_cls(data.n_users, data.n_items, 8, **options).to(device)
        opt = pn.optim.Adam(model.parameters(), lr=0.02)
        train_d, test_d = train.to(device), test.to(device)
        if getattr(model, "prior", 0.0):
            model.set_counts(train_d)
        reads = count_host_reads(monkeypatch) if device == "cuda" else None
        losses = [train_epoch(model, opt, train_d, batch, np.random.default_rng(1)) for _ in range(2)]
        if reads is not None:
            assert len(reads) == reads_per_step * 2 * -(-len(train) // batch), reads
            monkeypatch.undo()
        results[device] = (np.array(losses), evaluate(model, test_d),
                           [host(p.data) for p in model.parameters()])
    (cl, ce, cp_), (gl, ge, gp) = results["cpu"], results["cuda"]
    assert np.all(np.abs(gl - cl) <= 1e-4 * np.abs(cl)), (gl, cl)
    assert ge == pytest.approx(ce, rel=1e-4)
    for g, c in zip(gp, cp_):
        assert np.linalg.norm(g - c) <= 1e-2 * np.linalg.norm(c)  # Adam magnifies rounding in tiny gradients


def test_ratings_move_to_the_device_and_back(ratings):
    _, (train, _) = ratings
    d = train.to("cuda")
    assert d.device == "cuda" and d.users.dtype == np.int64 and len(d) == len(train)
    back = d.to("cpu")
    assert back.users.dtype == np.int32 and np.array_equal(back.users, train.users)
    assert np.array_equal(back.ratings, train.ratings) and d.noise_floor() == pytest.approx(train.noise_floor())


def run_cli(*args, emulate=True):
    env = subprocess_env(PYNEURAL_CUDA_EMULATE="1") if emulate else subprocess_env()
    if not emulate:
        env.pop("PYNEURAL_CUDA_EMULATE", None)
    # cwd outside the checkout: in CI the source tree (no _C) must not shadow the installed package
    return subprocess.run([sys.executable, "-m", "pyneural", "recsys", *args], capture_output=True, text=True,
                          env=env, timeout=300, cwd=os.path.expanduser("~"))


def test_cli_trains_on_the_device():
    out = run_cli("--device", "cuda", "--synthetic", "100000", "--epochs", "1", "--no-progress")
    assert out.returncode == 0, out.stderr
    assert "training on cuda" in out.stdout and "test RMSE" in out.stdout and "train RMSE" in out.stdout


def test_cli_refuses_an_unusable_device_and_distributed_device_runs():
    out = run_cli("--device", "cuda", "--synthetic", "1000", "--distributed")
    assert out.returncode == 2 and "--distributed" in out.stderr
    import importlib.util
    if importlib.util.find_spec("cupy") is None:  # no CuPy: without the emulator there is no CUDA device
        out = run_cli("--device", "cuda", "--synthetic", "1000", emulate=False)
        assert out.returncode == 2 and "cuda:0 is not available" in out.stderr, out.stderr
