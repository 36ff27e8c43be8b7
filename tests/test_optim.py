"""Optimizers, schedulers and gradient clipping: against torch.optim step for step (where torch is
installed), against hand-computed updates, and on the bookkeeping (groups, state_dict, errors)."""
import json
import math

import numpy as np
import pytest

from conftest import rel_err
from pyneural.nn import Parameter
from pyneural.optim import SGD, Adam, AdamW, clip_grad_norm_, lr_scheduler
from pyneural.tensor import Tensor

SHAPES = [(7, 13), (5,), (3, 3, 2, 2)]


def make_params(rng, shapes=SHAPES, dtype=np.float32):
    return [Parameter(rng.standard_normal(s).astype(dtype)) for s in shapes]


def set_grads(params, grads):
    for p, g in zip(params, grads):
        p.grad = Tensor(g.copy())


SGD_CONFIGS = [
    dict(lr=0.1),
    dict(lr=0.1, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.3),
    dict(lr=0.1, momentum=0.9, nesterov=True),
    dict(lr=0.1, weight_decay=0.1),
    dict(lr=0.1, momentum=0.8, weight_decay=0.01, nesterov=True),
]
ADAM_CONFIGS = [
    dict(lr=0.01),
    dict(lr=0.01, weight_decay=0.1),
    dict(lr=0.003, betas=(0.8, 0.95), eps=1e-6),
]


def compare_with_torch(rng, ours_cls, torch_cls, config, steps=6):
    torch = pytest.importorskip("torch")
    params = make_params(rng)
    ref = [torch.nn.Parameter(torch.tensor(p.data.copy())) for p in params]
    ours, theirs = ours_cls(params, **config), torch_cls(ref, **config)
    for _ in range(steps):
        grads = [rng.standard_normal(p.data.shape).astype(np.float32) for p in params]
        set_grads(params, grads)
        for r, g in zip(ref, grads):
            r.grad = torch.tensor(g.copy())
        ours.step()
        theirs.step()
    for p, r in zip(params, ref):
        assert rel_err(p.data, r.detach().numpy()) < 1e-6


@pytest.mark.parametrize("config", SGD_CONFIGS, ids=str)
def test_sgd_matches_torch(rng, config):
    torch = pytest.importorskip("torch")
    compare_with_torch(rng, SGD, torch.optim.SGD, config)


@pytest.mark.parametrize("config", ADAM_CONFIGS, ids=str)
def test_adam_matches_torch(rng, config):
    torch = pytest.importorskip("torch")
    compare_with_torch(rng, Adam, torch.optim.Adam, config)


@pytest.mark.parametrize("config", ADAM_CONFIGS, ids=str)
def test_adamw_matches_torch(rng, config):
    torch = pytest.importorskip("torch")
    compare_with_torch(rng, AdamW, torch.optim.AdamW, config)


def test_sgd_momentum_by_hand():
    p = Parameter(np.array([1.0, -2.0]))
    opt = SGD([p], lr=0.5, momentum=0.9, weight_decay=0.1)
    p.grad = Tensor(np.array([0.2, 0.4]))
    opt.step()
    # g = grad + 0.1 p = [0.3, 0.2]; buf = g; p -= 0.5 buf
    np.testing.assert_allclose(p.data, [0.85, -2.1], rtol=1e-12)
    p.grad = Tensor(np.array([0.2, 0.4]))
    opt.step()
    # g = [0.285, 0.19]; buf = 0.9 [0.3, 0.2] + g = [0.555, 0.37]
    np.testing.assert_allclose(p.data, [0.85 - 0.2775, -2.1 - 0.185], rtol=1e-12)


def test_sgd_nesterov_by_hand():
    p = Parameter(np.array([1.0]))
    opt = SGD([p], lr=1.0, momentum=0.5, nesterov=True)
    # buf = 1 then 0.5 * 1 + 1 = 1.5; the step is g + 0.5 buf = 1.5 then 1.75
    for expected in (-0.5, -2.25):
        p.grad = Tensor(np.array([1.0]))
        opt.step()
        np.testing.assert_allclose(p.data, [expected], rtol=1e-12)


def test_adam_first_steps_by_hand():
    # After bias correction the first step is lr * g / (|g| + eps): a step of lr against the sign.
    g = np.array([0.5, -3.0, 1e-3])
    p = Parameter(np.array([1.0, 1.0, 1.0]))
    opt = Adam([p], lr=0.1, betas=(0.9, 0.99), eps=1e-8)
    p.grad = Tensor(g.copy())
    opt.step()
    np.testing.assert_allclose(p.data, 1.0 - 0.1 * g / (np.abs(g) + 1e-8), rtol=1e-12)
    p.grad = Tensor(2 * g)
    opt.step()
    m = (0.9 * 0.1 * g + 0.1 * 2 * g) / (1 - 0.9 ** 2)
    v = (0.99 * 0.01 * g * g + 0.01 * 4 * g * g) / (1 - 0.99 ** 2)
    np.testing.assert_allclose(p.data, 1.0 - 0.1 * g / (np.abs(g) + 1e-8) - 0.1 * m / (np.sqrt(v) + 1e-8),
                               rtol=1e-10)


def test_adamw_decays_weights_not_gradients():
    p = Parameter(np.array([2.0]))
    opt = AdamW([p], lr=0.1, weight_decay=0.5)
    p.grad = Tensor(np.array([4.0]))
    opt.step()
    np.testing.assert_allclose(p.data, [2.0 * (1 - 0.05) - 0.1 * 4.0 / (4.0 + 1e-8)], rtol=1e-12)


@pytest.mark.parametrize("cls", [SGD, Adam, AdamW])
def test_updates_in_place(rng, cls):
    params = make_params(rng)
    arrays = [p.data for p in params]
    views = [a.reshape(-1)[:3] for a in arrays]
    before = [v.copy() for v in views]
    opt = cls(params, lr=0.1)
    set_grads(params, [np.ones(p.data.shape, np.float32) for p in params])
    opt.step()
    for p, a, v, b in zip(params, arrays, views, before):
        assert p.data is a
        assert not np.array_equal(v, b)


def test_parameters_without_grad_are_skipped(rng):
    params = make_params(rng)
    before = params[1].data.copy()
    opt = Adam(params, lr=0.1)
    set_grads(params[:1], [np.ones(SHAPES[0], np.float32)])
    opt.step()
    np.testing.assert_array_equal(params[1].data, before)
    assert opt.state_dict()["state"].keys() == {0}


def test_zero_grad(rng):
    params = make_params(rng)
    opt = SGD(params, lr=0.1)
    set_grads(params, [np.ones(s, np.float32) for s in SHAPES])
    kept = params[0].grad
    opt.zero_grad(set_to_none=False)
    assert params[0].grad is kept and not kept.data.any()
    opt.zero_grad()
    assert all(p.grad is None for p in params)


def test_param_groups_with_their_own_lr(rng):
    a, b = make_params(rng, [(4,), (3,)])
    b_before = b.data.copy()
    opt = SGD([{"params": [a]}, {"params": [b], "lr": 0.0}], lr=0.5, momentum=0.9)
    assert opt.param_groups[0]["lr"] == 0.5 and opt.param_groups[1]["momentum"] == 0.9
    a_before = a.data.copy()
    set_grads([a, b], [np.ones(4, np.float32), np.ones(3, np.float32)])
    opt.step()
    np.testing.assert_allclose(a.data, a_before - 0.5, rtol=1e-6)
    np.testing.assert_array_equal(b.data, b_before)


def _json_part(obj):
    """Everything but the arrays must survive JSON."""
    if isinstance(obj, dict):
        return {str(k): _json_part(v) for k, v in obj.items() if not isinstance(v, np.ndarray)}
    return obj


@pytest.mark.parametrize("cls,config", [(SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
                                        (Adam, dict(lr=0.01, betas=(0.8, 0.9))),
                                        (AdamW, dict(lr=0.01, weight_decay=0.1))])
def test_state_dict_round_trip_is_exact(rng, cls, config):
    params = make_params(rng)
    opt = cls([{"params": params[:2]}, {"params": params[2:], "lr": 0.003}], **config)
    for _ in range(3):
        set_grads(params, [rng.standard_normal(s).astype(np.float32) for s in SHAPES])
        opt.step()
    saved = opt.state_dict()
    json.dumps(_json_part(saved))
    # Through JSON the state keys become strings: loading must accept them.
    saved["state"] = {str(k): v for k, v in saved["state"].items()}
    saved["param_groups"] = json.loads(json.dumps(saved["param_groups"]))

    clones = [Parameter(p.data.copy()) for p in params]
    restored = cls([{"params": clones[:2]}, {"params": clones[2:]}], lr=123.0)
    restored.load_state_dict(saved)
    assert restored.param_groups[1]["lr"] == 0.003
    for _ in range(2):
        grads = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
        set_grads(params, grads)
        set_grads(clones, grads)
        opt.step()
        restored.step()
    for p, c in zip(params, clones):
        np.testing.assert_array_equal(p.data, c.data)


def test_state_dict_is_a_snapshot(rng):
    params = make_params(rng)
    opt = SGD(params, lr=0.1, momentum=0.9)
    set_grads(params, [np.ones(s, np.float32) for s in SHAPES])
    opt.step()
    saved = opt.state_dict()
    buf = saved["state"][0]["momentum_buffer"].copy()
    opt.step()
    np.testing.assert_array_equal(saved["state"][0]["momentum_buffer"], buf)


def test_load_state_dict_rejects_mismatches(rng):
    params = make_params(rng)
    opt = Adam(params, lr=0.1)
    set_grads(params, [np.ones(s, np.float32) for s in SHAPES])
    opt.step()
    saved = opt.state_dict()
    with pytest.raises(ValueError, match="parameter groups"):
        Adam([{"params": params[:1]}, {"params": params[1:]}]).load_state_dict(saved)
    with pytest.raises(ValueError, match="group 0 has 3 parameters"):
        Adam(params[:2]).load_state_dict(saved)
    other = make_params(rng, [(7, 13), (6,), (3, 3, 2, 2)])
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        Adam(other).load_state_dict(saved)


def test_bad_arguments(rng):
    params = make_params(rng)
    with pytest.raises(ValueError, match="lr must be a number >= 0"):
        SGD(params, lr=-1.0)
    with pytest.raises(ValueError, match="Nesterov"):
        SGD(params, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        Adam(params, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="betas must be a pair"):
        Adam(params, betas=0.9)
    with pytest.raises(ValueError, match="empty parameter list"):
        SGD([], lr=0.1)
    with pytest.raises(ValueError, match="more than one"):
        SGD([{"params": params}, {"params": params[:1]}], lr=0.1)
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        SGD([{"params": params, "betas": (0.9, 0.9)}], lr=0.1)
    with pytest.raises(TypeError, match="single Parameter"):
        SGD(params[0], lr=0.1)
    with pytest.raises(TypeError, match="must be a Tensor with a numpy or CUDA array"):
        SGD([np.zeros(3)], lr=0.1)
    with pytest.raises(TypeError, match="float32 or float64"):
        SGD([Tensor(np.zeros(3, np.int64))], lr=0.1)
    opt = SGD(params, lr=0.1)
    params[0].grad = Tensor(np.zeros((13, 7), np.float32))
    with pytest.raises(ValueError, match=r"gradient shape \(13, 7\) does not match parameter shape \(7, 13\)"):
        opt.step()


# ---- schedulers -------------------------------------------------------------------------------

SCHEDULERS = [
    ("StepLR", dict(step_size=3, gamma=0.5)),
    ("CosineAnnealingLR", dict(T_max=10, eta_min=0.001)),
    ("LinearLR", dict(start_factor=0.1, end_factor=1.0, total_iters=4)),
    ("LinearLR", dict(start_factor=1.0, end_factor=0.2, total_iters=6)),
]


@pytest.mark.parametrize("name,config", SCHEDULERS, ids=lambda v: str(v))
def test_scheduler_matches_torch(rng, name, config):
    torch = pytest.importorskip("torch")
    params = make_params(rng, [(3,)])
    ours = getattr(lr_scheduler, name)(SGD(params, lr=0.1), **config)
    ref_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(3))], lr=0.1)
    theirs = getattr(torch.optim.lr_scheduler, name)(ref_opt, **config)
    for _ in range(14):
        np.testing.assert_allclose(ours.get_last_lr(), theirs.get_last_lr(), rtol=1e-12)
        assert ours.optimizer.param_groups[0]["lr"] == ours.get_last_lr()[0]
        ref_opt.step()
        ours.step()
        theirs.step()


def test_cosine_by_hand(rng):
    sched = lr_scheduler.CosineAnnealingLR(SGD(make_params(rng, [(2,)]), lr=1.0), T_max=4)
    lrs = []
    for _ in range(5):
        lrs.append(sched.get_last_lr()[0])
        sched.step()
    np.testing.assert_allclose(lrs, [1.0, (1 + math.cos(math.pi / 4)) / 2, 0.5, (1 - math.cos(math.pi / 4)) / 2, 0.0],
                               atol=1e-15)


def test_scheduler_state_dict_resumes_the_schedule(rng):
    params = make_params(rng, [(2,)])
    opt = SGD([{"params": params[:1]}], lr=0.2)
    sched = lr_scheduler.CosineAnnealingLR(opt, T_max=8)
    for _ in range(3):
        sched.step()
    saved_opt, saved_sched = opt.state_dict(), json.loads(json.dumps(sched.state_dict()))
    opt2 = SGD(make_params(rng, [(2,)]), lr=5.0)
    opt2.load_state_dict(saved_opt)
    sched2 = lr_scheduler.CosineAnnealingLR(opt2, T_max=1)
    sched2.load_state_dict(saved_sched)
    for _ in range(4):
        sched.step()
        sched2.step()
        assert sched2.get_last_lr() == sched.get_last_lr()
        assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_scheduler_bad_arguments(rng):
    opt = SGD(make_params(rng, [(2,)]), lr=0.1)
    with pytest.raises(ValueError, match="step_size"):
        lr_scheduler.StepLR(opt, step_size=0)
    with pytest.raises(ValueError, match="T_max"):
        lr_scheduler.CosineAnnealingLR(opt, T_max=0)
    with pytest.raises(ValueError, match="start_factor"):
        lr_scheduler.LinearLR(opt, start_factor=0.0)
    with pytest.raises(KeyError, match="initial_lr"):
        lr_scheduler.StepLR(SGD(make_params(rng, [(2,)]), lr=0.1), step_size=2, last_epoch=4)


# ---- clipping ---------------------------------------------------------------------------------

def test_clip_grad_norm_by_hand():
    a, b = Parameter(np.zeros(2)), Parameter(np.zeros(1))
    set_grads([a, b], [np.array([3.0, 0.0]), np.array([4.0])])
    total = clip_grad_norm_([a, b], max_norm=1.0)
    assert total == pytest.approx(5.0)
    np.testing.assert_allclose(np.concatenate([a.grad.data, b.grad.data]), [0.6, 0.0, 0.8], rtol=1e-6)
    assert clip_grad_norm_([a, b], max_norm=10.0) == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(np.concatenate([a.grad.data, b.grad.data]), [0.6, 0.0, 0.8], rtol=1e-6)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf")])
def test_clip_grad_norm_matches_torch(rng, norm_type):
    torch = pytest.importorskip("torch")
    params = make_params(rng)
    grads = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    set_grads(params, grads)
    ref = [torch.nn.Parameter(torch.zeros(s)) for s in SHAPES]
    for r, g in zip(ref, grads):
        r.grad = torch.tensor(g.copy())
    total = clip_grad_norm_(params + [Parameter(np.zeros(3, np.float32))], 0.5, norm_type=norm_type)
    expected = torch.nn.utils.clip_grad_norm_(ref, 0.5, norm_type=norm_type)
    assert total == pytest.approx(float(expected), rel=1e-5)
    for p, r in zip(params, ref):
        assert rel_err(p.grad.data, r.grad.numpy()) < 1e-6


def test_clip_grad_norm_nonfinite():
    p = Parameter(np.zeros(2))
    p.grad = Tensor(np.array([np.inf, 1.0]))
    assert clip_grad_norm_([p], 1.0) == np.inf
    np.testing.assert_array_equal(p.grad.data, [np.inf, 1.0])
    with pytest.raises(RuntimeError, match="inf"):
        clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm_([p], -1.0)


# ---- row-sparse gradients -------------------------------------------------------------------------

from pyneural.functions.embedding import RowSparseGrad  # noqa: E402
from pyneural.kernels.embedding import sparse_adam_update, sparse_sgd_update  # noqa: E402


def sparse_grad(rng, V, D, U, dtype=np.float32):
    rows = np.sort(rng.choice(V, U, replace=False)).astype(np.int64)
    return RowSparseGrad(rows, rng.standard_normal((U, D)).astype(dtype), (V, D))


def sparse_pair(rng, V=57, D=7, dtype=np.float32):
    w = rng.standard_normal((V, D)).astype(dtype)
    return Parameter(w.copy()), Parameter(w.copy())


@pytest.mark.parametrize("cls,config", [(SGD, dict(lr=0.1)), (Adam, dict(lr=0.01)), (AdamW, dict(lr=0.01,
                                                                                                weight_decay=0))])
def test_sparse_step_equals_the_dense_step_bitwise(rng, cls, config):
    """Without momentum/weight decay (SGD) and from fresh state (Adam: zero moments stay zero where
    the gradient is zero), updating only the touched rows is exactly the dense step."""
    ps, pd = sparse_pair(rng)
    opt_s, opt_d = cls([ps], **config), cls([pd], **config)
    for _ in range(3):
        g = sparse_grad(rng, 57, 7, 11)
        ps.grad, pd.grad = g, Tensor(g.to_dense())
        opt_s.step()
        opt_d.step()
        if cls is SGD:
            assert np.array_equal(ps.data, pd.data)
    if cls is not SGD:  # moments of rows touched earlier keep decaying in the dense step only
        assert rel_err(ps.data, pd.data) < 1e-2


def lazy_adam_reference(w, steps, lr, b1, b2, eps, wd, decoupled):
    w = w.astype(np.float64).copy()
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(steps, start=1):
        r, gv = g.indices, g.values.astype(np.float64)
        if decoupled:
            w[r] *= 1 - lr * wd
        else:
            gv = gv + wd * w[r]
        m[r] = b1 * m[r] + (1 - b1) * gv
        v[r] = b2 * v[r] + (1 - b2) * gv * gv
        w[r] -= lr / (1 - b1 ** t) * m[r] / (np.sqrt(v[r]) / math.sqrt(1 - b2 ** t) + eps)
    return w, m, v


@pytest.mark.parametrize("cls,wd", [(Adam, 0.0), (Adam, 0.1), (AdamW, 0.1)])
def test_sparse_adam_matches_the_lazy_reference(rng, cls, wd):
    p, _ = sparse_pair(rng, V=300, D=33)
    w0 = p.data.copy()
    opt = cls([p], lr=0.05, betas=(0.8, 0.95), eps=1e-6, weight_decay=wd)
    steps = [sparse_grad(rng, 300, 33, n) for n in (40, 1, 299, 17)]
    for g in steps:
        p.grad = g
        opt.step()
    ref, m, v = lazy_adam_reference(w0, steps, 0.05, 0.8, 0.95, 1e-6, wd, cls is AdamW)
    state = opt.state[id(p)]
    assert state["step"] == 4
    assert rel_err(p.data, ref) < 1e-5 and rel_err(state["exp_avg"], m) < 1e-5 and rel_err(state["exp_avg_sq"], v) < 1e-5
    untouched = np.setdiff1d(np.arange(300), np.concatenate([g.indices for g in steps]))
    assert np.array_equal(p.data[untouched], w0[untouched])


@pytest.mark.parametrize("nesterov", [False, True])
def test_sparse_sgd_lazy_momentum_and_decay_match_the_reference(rng, nesterov):
    p, _ = sparse_pair(rng, V=80, D=5)
    w = p.data.astype(np.float64)
    buf = np.zeros_like(w)
    opt = SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=nesterov)
    for n in (10, 79, 3):
        g = sparse_grad(rng, 80, 5, n)
        p.grad = g
        opt.step()
        r = g.indices
        gv = g.values + 0.01 * w[r]
        buf[r] = 0.9 * buf[r] + gv
        w[r] -= 0.1 * (gv + 0.9 * buf[r] if nesterov else buf[r])
    assert rel_err(p.data, w) < 1e-5
    assert rel_err(opt.state[id(p)]["momentum_buffer"], buf) < 1e-5


def test_float64_sparse_steps_match_float32(rng):
    g = sparse_grad(rng, 40, 6, 9)
    for cls in (SGD, Adam):
        p32, _ = sparse_pair(rng, V=40, D=6)
        p64 = Parameter(p32.data.astype(np.float64))
        for p in (p32, p64):
            opt = cls([p], lr=0.05, weight_decay=0.1)
            p.grad = RowSparseGrad(g.indices, g.values.astype(p.data.dtype), g.shape)
            opt.step()
        assert rel_err(p32.data, p64.data) < 1e-6


def test_clip_and_zero_grad_work_on_sparse_gradients(rng):
    p, q = sparse_pair(rng)
    g = sparse_grad(rng, 57, 7, 5)
    p.grad, q.grad = g, Tensor(g.to_dense())
    total = clip_grad_norm_([p], 0.5)
    assert math.isclose(total, np.linalg.norm(q.grad.data), rel_tol=1e-5)
    assert math.isclose(np.linalg.norm(p.grad.to_dense()), 0.5, rel_tol=1e-4)
    opt = SGD([p], lr=1.0)
    opt.zero_grad(set_to_none=False)
    assert isinstance(p.grad, RowSparseGrad) and not p.grad.values.any()
    opt.zero_grad()
    assert p.grad is None


def test_sparse_state_dict_round_trips(rng):
    p, q = sparse_pair(rng)
    opt = Adam([p], lr=0.1)
    p.grad = sparse_grad(rng, 57, 7, 5)
    opt.step()
    q.data[...] = p.data
    other = Adam([q], lr=0.1)
    other.load_state_dict(opt.state_dict())
    g = sparse_grad(rng, 57, 7, 20)
    p.grad, q.grad = g, g
    opt.step()
    other.step()
    assert np.array_equal(p.data, q.data)


def test_sparse_update_kernels_reject_bad_rows(rng):
    w = np.zeros((10, 3), np.float32)
    with pytest.raises(ValueError, match="strictly ascending"):
        sparse_sgd_update(w, np.array([2, 2]), np.zeros((2, 3), np.float32), 0.1)
    with pytest.raises(ValueError, match="out of range"):
        sparse_sgd_update(w, np.array([3, 10]), np.zeros((2, 3), np.float32), 0.1)
    with pytest.raises(ValueError, match="grads must have shape"):
        sparse_adam_update(w, np.array([1]), np.zeros((1, 4), np.float32), np.zeros_like(w), np.zeros_like(w), 1,
                           0.1, (0.9, 0.99), 1e-8)
    with pytest.raises(ValueError, match="momentum"):
        from pyneural import _C
        _C.sparse_sgd_update(w, np.array([1]), np.zeros((1, 3), np.float32), 0.1, 0.0, 0.9, 0.0, False, None)
