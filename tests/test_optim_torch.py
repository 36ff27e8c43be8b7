"""Adagrad, RMSprop, Adadelta and the learning-rate schedules against PyTorch's: the same problem
from the same start, the same trajectory step for step (float64 to rounding, float32 to 1e-6), the
same lr sequence over 100+ steps; and their bookkeeping: param groups, state_dict round trips
through a checkpoint file, state on the parameters' device, bad arguments."""
import json
import math

import numpy as np
import pytest

import pyneural as pn
from conftest import rel_err
from pyneural import optim
from pyneural.nn import Parameter
from pyneural.optim import lr_scheduler
from pyneural.tensor import Tensor

SHAPES = [(7, 13), (5,), (3, 3, 2, 2)]
STEPS = 25

OPTIMIZER_CONFIGS = [
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.05, weight_decay=0.1, initial_accumulator_value=0.3, eps=1e-8)),
    ("Adagrad", dict(lr=0.05, maximize=True)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, alpha=0.9, momentum=0.9, weight_decay=0.1)),
    ("RMSprop", dict(lr=0.003, centered=True, eps=1e-6)),
    ("RMSprop", dict(lr=0.003, alpha=0.95, centered=True, momentum=0.5, maximize=True)),
    ("Adadelta", dict()),
    ("Adadelta", dict(lr=0.5, rho=0.8, eps=1e-5, weight_decay=0.2)),
    ("Adadelta", dict(lr=2.0, maximize=True)),
]


class Problem:
    """A smooth non-quadratic loss per parameter, its gradient from the parameter's current value:
    the two optimizers must stay on the same trajectory, or the gradients drift apart too."""

    def __init__(self, rng, dtype):
        self.targets = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
        self.scales = [rng.uniform(0.2, 3.0, s).astype(dtype) for s in SHAPES]

    def grads(self, values):
        return [s * np.tanh(v - t) * (1 + 0.1 * v * v) for v, t, s in zip(values, self.targets, self.scales)]


def run_against_torch(rng, name, config, dtype, steps=STEPS, groups=None):
    """Both optimizers from one start on one Problem; returns (start, ours, theirs, optimizers)."""
    torch = pytest.importorskip("torch")
    start = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    params = [Parameter(a.copy()) for a in start]
    ref = [torch.nn.Parameter(torch.tensor(a.copy())) for a in start]
    split = (lambda ps: ps) if groups is None else groups
    ours, theirs = getattr(optim, name)(split(params), **config), getattr(torch.optim, name)(split(ref), **config)
    problem = Problem(rng, dtype)
    for _ in range(steps):
        for p, g in zip(params, problem.grads([p.data for p in params])):
            p.grad = Tensor(g)
        for r, g in zip(ref, problem.grads([r.detach().numpy() for r in ref])):
            r.grad = torch.tensor(g)
        ours.step()
        theirs.step()
    return start, params, ref, (ours, theirs)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name,config", OPTIMIZER_CONFIGS, ids=str)
def test_optimizer_follows_torchs_trajectory(rng, name, config, dtype):
    start, params, ref, (ours, theirs) = run_against_torch(rng, name, config, dtype)
    tol = 1e-12 if dtype == np.float64 else 1e-6
    for a, p, r in zip(start, params, ref):
        r = r.detach().numpy()
        assert p.data.dtype == dtype
        assert rel_err(p.data, r) < tol
        # the distance travelled too, so that a step too small to see in the weights still counts
        assert rel_err(p.data - a, r - a) < (1e-10 if dtype == np.float64 else 1e-4)
        assert rel_err(p.data - a, np.zeros_like(a)) > 1e-3  # it did move
    for i, p in enumerate(params):
        mine, torchs = ours.state[id(p)], theirs.state[ref[i]]
        assert set(mine) == set(torchs), "state names follow PyTorch's"
        assert mine["step"] == STEPS == int(torchs["step"])
        for key in set(mine) - {"step"}:
            assert rel_err(mine[key], torchs[key].numpy()) < 100 * tol, key


@pytest.mark.parametrize("name", ["Adagrad", "RMSprop", "Adadelta"])
def test_param_groups_with_their_own_hyperparameters(rng, name):
    extra = {"Adagrad": dict(lr_decay=0.1), "RMSprop": dict(momentum=0.9, centered=True),
             "Adadelta": dict(rho=0.5)}[name]
    groups = lambda ps: [{"params": ps[:2]}, {"params": ps[2:], "lr": 0.2, "weight_decay": 0.05, **extra}]  # noqa: E731
    _, params, ref, (ours, _) = run_against_torch(rng, name, dict(lr=0.01), np.float64, groups=groups)
    assert ours.param_groups[1]["lr"] == 0.2 and ours.param_groups[0]["weight_decay"] == 0.0
    for p, r in zip(params, ref):
        assert rel_err(p.data, r.detach().numpy()) < 1e-12


@pytest.mark.parametrize("name,config", [("Adagrad", dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1)),
                                         ("RMSprop", dict(lr=0.01, momentum=0.9, centered=True)),
                                         ("Adadelta", dict(lr=1.0, weight_decay=0.1))], ids=str)
def test_state_dict_round_trip_through_a_checkpoint_is_exact(tmp_path, rng, name, config):
    cls = getattr(optim, name)
    params = [Parameter(rng.standard_normal(s).astype(np.float32)) for s in SHAPES]
    opt = cls([{"params": params[:2]}, {"params": params[2:], "lr": 0.003}], **config)
    problem = Problem(rng, np.float32)

    def step(ps, o):
        for p, g in zip(ps, problem.grads([p.data for p in ps])):
            p.grad = Tensor(g)
        o.step()
    for _ in range(3):
        step(params, opt)
    pn.save({"optimizer": opt.state_dict()}, tmp_path / "opt.npz")
    clones = [Parameter(p.data.copy()) for p in params]
    restored = cls([{"params": clones[:2]}, {"params": clones[2:]}], lr=123.0)
    restored.load_state_dict(pn.load(tmp_path / "opt.npz")["optimizer"])
    assert restored.param_groups[1]["lr"] == 0.003 and restored.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    for _ in range(4):
        step(params, opt)
        step(clones, restored)
    for p, c in zip(params, clones):
        assert np.array_equal(p.data, c.data)


def test_bad_arguments_name_the_hyperparameter(rng):
    params = [Parameter(rng.standard_normal(3).astype(np.float32))]
    for cls, kwargs, match in [(optim.Adagrad, dict(lr=-0.1), "lr must be a number >= 0"),
                               (optim.Adagrad, dict(lr_decay=-1), "lr_decay"),
                               (optim.Adagrad, dict(initial_accumulator_value=-1), "initial_accumulator_value"),
                               (optim.RMSprop, dict(alpha=1.5), r"alpha must be a number >= 0 and <= 1.0"),
                               (optim.RMSprop, dict(momentum=float("nan")), "momentum"),
                               (optim.RMSprop, dict(eps="1e-8"), "eps"),
                               (optim.Adadelta, dict(rho=-0.1), "rho"),
                               (optim.Adadelta, dict(weight_decay=-1), "weight_decay")]:
        with pytest.raises(ValueError, match=match):
            cls(params, **kwargs)
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        optim.RMSprop([{"params": params, "rho": 0.9}])
    with pytest.raises(TypeError, match="RMSprop does not support row-sparse"):
        from pyneural.functions.embedding import RowSparseGrad
        p = Parameter(np.zeros((4, 2), np.float32))
        p.grad = RowSparseGrad(np.array([1]), np.ones((1, 2), np.float32), (4, 2))
        optim.RMSprop([p]).step()


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name,config", [("Adagrad", dict(lr=0.1, weight_decay=0.1)),
                                         ("RMSprop", dict(lr=0.01, momentum=0.9, centered=True)),
                                         ("Adadelta", dict(maximize=True)),
                                         ("Adam", dict(lr=0.01, weight_decay=0.1)),
                                         ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.01))], ids=str)
def test_state_lives_on_the_parameters_device(cp, rng, name, config, dtype):
    """On the device: the same steps as on the CPU, state arrays on the device, and a CPU
    state_dict loaded there goes to the device."""
    cls = getattr(optim, name)
    start = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    host = [Parameter(a.copy()) for a in start]
    dev = [Parameter(cp.asarray(a)) for a in start]
    opt_host, opt_dev = cls(host, **config), cls(dev, **config)
    problem = Problem(rng, dtype)
    for _ in range(5):
        for ph, pd, g in zip(host, dev, problem.grads([p.data for p in host])):
            ph.grad, pd.grad = Tensor(g), Tensor(cp.asarray(g))
        opt_host.step()
        opt_dev.step()
    for ph, pd in zip(host, dev):
        assert pd.data.dtype == dtype and rel_err(pd.data.get(), ph.data) < 1e-6
        for key, value in opt_dev.state[id(pd)].items():
            if key != "step":
                assert pn.backend.is_device_array(value), key
    resumed = [Parameter(cp.asarray(p.data)) for p in host]
    opt_resumed = cls(resumed, **config)
    opt_resumed.load_state_dict(opt_host.state_dict())
    state = opt_resumed.state[id(resumed[0])]
    assert all(pn.backend.is_device_array(v) for k, v in state.items() if k != "step")
    saved = opt_dev.state_dict()["state"][0]
    assert all(pn.backend.is_device_array(v) for k, v in saved.items() if k != "step")


# ---- schedulers ------------------------------------------------------------------------------


class InverseSqrt:
    """A callable object (not a function): LambdaLR's state_dict saves its settings."""

    def __init__(self, warmup):
        self.warmup = warmup

    def __call__(self, epoch):
        return min((epoch + 1) / self.warmup, math.sqrt(self.warmup / (epoch + 1)))


SCHEDULES = [
    ("StepLR", dict(step_size=7, gamma=0.5)),
    ("MultiStepLR", dict(milestones=[10, 30, 30, 80], gamma=0.3)),
    ("ExponentialLR", dict(gamma=0.97)),
    ("CosineAnnealingLR", dict(T_max=30, eta_min=0.001)),
    ("CosineAnnealingLR", dict(T_max=47)),
    ("LambdaLR", dict(lr_lambda=lambda epoch: 1 / (1 + epoch) ** 0.5)),
    ("LambdaLR", dict(lr_lambda=[InverseSqrt(10), lambda epoch: 0.99 ** epoch])),
    ("OneCycleLR", dict(max_lr=[0.5, 0.2], total_steps=130)),
    ("OneCycleLR", dict(max_lr=0.5, epochs=13, steps_per_epoch=10, anneal_strategy="linear", three_phase=True,
                        pct_start=0.25, base_momentum=0.7, max_momentum=0.9, div_factor=10.0)),
    ("OneCycleLR", dict(max_lr=0.3, total_steps=130, cycle_momentum=False, final_div_factor=100.0)),
]
SCHEDULE_STEPS = 130


def two_group_optimizers(name="SGD", **config):
    torch = pytest.importorskip("torch")
    ours = getattr(optim, name)([{"params": [Parameter(np.zeros(3, np.float32))]},
                                 {"params": [Parameter(np.zeros(2, np.float32))], "lr": 0.05}], lr=0.1, **config)
    theirs = getattr(torch.optim, name)([{"params": [torch.nn.Parameter(torch.zeros(3))]},
                                         {"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 0.05}],
                                        lr=0.1, **config)
    return ours, theirs


def momentum_of(group):
    return group["betas"][0] if "betas" in group else group["momentum"]


def assert_same_rates(ours, theirs, scale):
    # relative, or against the schedule's scale where the rate crosses zero
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15 * scale)


SCHEDULE_CASES = [(name, config, "SGD") for name, config in SCHEDULES] + [
    ("OneCycleLR", dict(max_lr=0.01, total_steps=130, base_momentum=0.8, max_momentum=0.9), "Adam")]  # betas[0] cycles


@pytest.mark.parametrize("name,config,opt_name", SCHEDULE_CASES, ids=str)
def test_schedule_matches_torch(name, config, opt_name):
    torch = pytest.importorskip("torch")
    ours_opt, theirs_opt = two_group_optimizers(opt_name, **({"momentum": 0.9} if opt_name == "SGD" else {}))
    ours = getattr(lr_scheduler, name)(ours_opt, **config)
    theirs = getattr(torch.optim.lr_scheduler, name)(theirs_opt, **config)
    for _ in range(SCHEDULE_STEPS):
        assert_same_rates(ours.get_last_lr(), theirs.get_last_lr(), 0.5)
        assert [g["lr"] for g in ours_opt.param_groups] == ours.get_last_lr()
        np.testing.assert_allclose([momentum_of(g) for g in ours_opt.param_groups],
                                   [momentum_of(g) for g in theirs_opt.param_groups], rtol=1e-12)
        theirs_opt.step()
        ours.step()
        theirs.step()
    if name == "OneCycleLR":
        with pytest.raises(ValueError, match="total_steps=130"):
            ours.step()


PLATEAUS = [
    dict(),
    dict(mode="max", factor=0.5, patience=3, threshold=0.01, cooldown=2),
    dict(mode="min", factor=0.3, patience=2, threshold=0.05, threshold_mode="abs", min_lr=[0.002, 0.004]),
    dict(mode="max", factor=0.7, patience=0, threshold=0.0, threshold_mode="abs", cooldown=1, min_lr=1e-3,
         eps=1e-2),  # from 0.024 on, a reduction would be smaller than eps: skipped
]


def noisy_plateaus(rng, n, mode):
    """A metric that improves in bursts and stalls (or slips back) for 3 to 25 steps in between,
    with noise: long stalls trigger reductions at any patience used here."""
    values, level = [], 0.0
    while len(values) < n:
        level += rng.choice([rng.uniform(0.2, 1.0), 0.0, -0.1])
        values += list(level + 0.02 * rng.standard_normal(rng.integers(3, 26)))
    values = np.array(values[:n])
    return -values if mode == "min" else values


@pytest.mark.parametrize("config", PLATEAUS, ids=str)
def test_reduce_on_plateau_matches_torch(rng, config):
    torch = pytest.importorskip("torch")
    ours_opt, theirs_opt = two_group_optimizers()
    ours = lr_scheduler.ReduceLROnPlateau(ours_opt, **config)
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(theirs_opt, **config)
    rates = set()
    for metric in noisy_plateaus(rng, 150, config.get("mode", "min")):
        theirs_opt.step()
        ours.step(pn.tensor(metric, dtype=np.float64) if rates else float(metric))  # a number or a 0-d tensor
        theirs.step(float(metric))
        assert ours.get_last_lr() == theirs.get_last_lr()
        assert (ours.num_bad_epochs, ours.cooldown_counter, ours.best) == (theirs.num_bad_epochs,
                                                                           theirs.cooldown_counter, theirs.best)
        rates.add(tuple(ours.get_last_lr()))
    assert len(rates) > 2, "the sequence must exercise some reductions"


def make_scheduler(name, config, opt):
    if name == "ReduceLROnPlateau":
        return lr_scheduler.ReduceLROnPlateau(opt, **config)
    return getattr(lr_scheduler, name)(opt, **config)


@pytest.mark.parametrize("name,config", SCHEDULES + [("ReduceLROnPlateau", PLATEAUS[1])], ids=str)
def test_schedule_state_dict_resumes_exactly(tmp_path, rng, name, config):
    """Stop after 40 steps, save optimizer and schedule into a checkpoint, rebuild both, load, and
    continue: the same rates and momenta as the run that never stopped."""
    metrics = noisy_plateaus(rng, 100, "max")

    def advance(sched, i):
        if name == "ReduceLROnPlateau":
            sched.step(metrics[i])
        else:
            sched.step()

    opt = optim.SGD([{"params": [Parameter(np.zeros(2))]}, {"params": [Parameter(np.zeros(1))], "lr": 0.05}],
                    lr=0.1, momentum=0.9)
    sched = make_scheduler(name, config, opt)
    for i in range(40):
        advance(sched, i)
    pn.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, tmp_path / "run.npz")
    json.dumps(sched.state_dict())  # plain values only: no functions

    saved = pn.load(tmp_path / "run.npz")
    opt2 = optim.SGD([{"params": [Parameter(np.zeros(2))]}, {"params": [Parameter(np.zeros(1))]}], lr=9.0, momentum=0.0)
    if name == "LambdaLR" and isinstance(config["lr_lambda"], list):  # its warmup=10 comes from the state_dict
        config = dict(config, lr_lambda=[InverseSqrt(999), config["lr_lambda"][1]])
    sched2 = make_scheduler(name, config, opt2)
    opt2.load_state_dict(saved["optimizer"])
    sched2.load_state_dict(saved["scheduler"])
    for i in range(40, 100 if name != "OneCycleLR" else 130):
        advance(sched, i % 100)
        advance(sched2, i % 100)
        assert sched2.get_last_lr() == sched.get_last_lr()
        assert [(g["lr"], g["momentum"]) for g in opt2.param_groups] == [(g["lr"], g["momentum"])
                                                                          for g in opt.param_groups]


def test_scheduler_bad_arguments(rng):
    opt = optim.SGD([Parameter(np.zeros(2))], lr=0.1)
    with pytest.raises(ValueError, match="milestones must be ints"):
        lr_scheduler.MultiStepLR(opt, milestones=[3, 2.5])
    with pytest.raises(ValueError, match="gamma must be a number > 0"):
        lr_scheduler.ExponentialLR(opt, gamma=0.0)
    with pytest.raises(ValueError, match="2 lr_lambdas for 1 parameter groups"):
        lr_scheduler.LambdaLR(opt, [lambda e: 1.0, lambda e: 1.0])
    with pytest.raises(TypeError, match="must be callable"):
        lr_scheduler.LambdaLR(opt, 0.5)
    with pytest.raises(ValueError, match="give total_steps, or epochs and steps_per_epoch"):
        lr_scheduler.OneCycleLR(opt, max_lr=1.0, epochs=3)
    with pytest.raises(ValueError, match="total_steps must be an int >= 1"):
        lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=0)
    with pytest.raises(ValueError, match="pct_start"):
        lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=10, pct_start=1.5)
    with pytest.raises(ValueError, match="anneal_strategy"):
        lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=10, anneal_strategy="exp")
    with pytest.raises(ValueError, match="max_lr has 2 values"):
        lr_scheduler.OneCycleLR(opt, max_lr=[1.0, 2.0], total_steps=10)
    with pytest.raises(ValueError, match="needs an optimizer with momentum or betas"):
        lr_scheduler.OneCycleLR(optim.Adagrad([Parameter(np.zeros(2))]), max_lr=1.0, total_steps=10)
    with pytest.raises(ValueError, match="factor must be a number in"):
        lr_scheduler.ReduceLROnPlateau(opt, factor=1.0)
    with pytest.raises(ValueError, match="mode must be 'min' or 'max'"):
        lr_scheduler.ReduceLROnPlateau(opt, mode="up")
    with pytest.raises(ValueError, match="threshold_mode"):
        lr_scheduler.ReduceLROnPlateau(opt, threshold_mode="pct")
    with pytest.raises(ValueError, match="patience must be an int >= 0"):
        lr_scheduler.ReduceLROnPlateau(opt, patience=-1)
