"""The model zoo (against PyTorch twins with the same weights) and the Trainer loop, including an
interrupted run resumed mid-epoch that ends bit-identical to an uninterrupted one."""
import importlib.util
import os

import numpy as np
import pytest

import pyneural as pn
from conftest import rel_err
from pyneural import functional as F
from pyneural import models, optim
from pyneural.data import DataLoader, TensorDataset
from pyneural.datasets import digits
from pyneural.trainer import EpochStats, Trainer

# Small enough that a float32 draw clear of every ReLU / max-pool kink (below) comes within a few tries.
INPUTS = {"mlp": (5, 1, 8, 8), "cnn": (5, 1, 8, 8), "resnet_small": (2, 3, 8, 8)}


def torch_twins():
    pytest.importorskip("torch")
    path = os.path.join(os.path.dirname(__file__), os.pardir, "bench", "torch_models.py")
    spec = importlib.util.spec_from_file_location("torch_models", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def grad_tol(dtype):
    """Norm-wise bound on a model's loss and gradients in ``dtype`` against exact arithmetic: each of
    the ~20 layers a forward and backward pass runs (resnet_small: 8 convolutions, 8 batch norms,
    the head, the loss; mlp/cnn fewer) adds a relative error of at most lambda * sqrt(K) * u with
    high probability (Higham & Mary's probabilistic bound, lambda ~ 4) for sums of K <= 576 products
    (64 channels x 3x3), batch norm's division by the batch std included. float32: 1.2e-4 (measured
    ~2e-6); float64: 2e-13 (measured ~3e-15)."""
    return 4 * np.sqrt(576) * np.finfo(dtype).eps / 2 * 20


def torch_twin(name, ours, dtype):
    """The torch twin of zoo model ``name`` holding ``ours``' parameters and buffers, in ``dtype``:
    from a float32 model in float64, the exact reference at the float32 point."""
    torch = pytest.importorskip("torch")
    theirs = torch_twins().MODELS[name]()
    state = {k: torch.from_numpy(v) for k, v in ours.state_dict().items()}
    theirs.load_state_dict(state)  # same names and shapes, or this raises
    return theirs.to(dtype)


def compare_with_twin(ours, theirs, x, y, tol):
    """Loss and every parameter's gradient, training mode then eval mode (running stats from the
    training pass), norm-wise within ``tol`` of the twin's."""
    torch = pytest.importorskip("torch")
    dtype = next(theirs.parameters()).dtype
    for training in (True, False):
        ours.train(training)
        theirs.train(training)
        loss_ref = torch.nn.functional.cross_entropy(theirs(torch.tensor(x, dtype=dtype)), torch.tensor(y))
        loss_ref.backward()
        ours.zero_grad()
        loss = F.cross_entropy(ours(pn.Tensor(x)), pn.Tensor(y))
        loss.backward()
        assert abs(loss.item() - loss_ref.item()) <= tol * max(1.0, abs(loss_ref.item())), training
        for (key, p), (key_ref, p_ref) in zip(ours.named_parameters(), theirs.named_parameters()):
            assert key == key_ref
            err = rel_err(p.grad.data, p_ref.grad.numpy())
            assert err <= tol, f"{key} (training={training}): relative error {err:.3g} > {tol:.3g}"
        theirs.zero_grad()


def kink_points(theirs, x):
    """Where a forward of ``theirs`` in training then eval mode meets a kink of the gradient: every
    ReLU input, and the max-pool windows' top-two gaps (windows with a positive maximum: an all-zero
    window after a ReLU passes no gradient on). Returns one flat float64 array per kink site."""
    torch = pytest.importorskip("torch")
    from torch.overrides import TorchFunctionMode
    tF = torch.nn.functional

    class Record(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is tF.relu:
                sites.append(args[0].detach().double().flatten())
            elif func is tF.max_pool2d:
                k = args[1] if len(args) > 1 else kwargs["kernel_size"]
                windows = tF.unfold(args[0].detach().double(), k, stride=kwargs.get("stride") or k)
                windows = windows.reshape(args[0].shape[0], args[0].shape[1], -1, windows.shape[-1])
                top = windows.topk(2, dim=2).values
                sites.append((top[:, :, 0] - top[:, :, 1])[top[:, :, 0] > 0].flatten())
            return func(*args, **kwargs)

    sites = []
    dtype = next(theirs.parameters()).dtype
    with Record(), torch.no_grad():
        for training in (True, False):
            theirs.train(training)
            theirs(torch.tensor(x, dtype=dtype))
    return [s.numpy() for s in sites]


def draw_clear_of_kinks(name, ours, rng, tries=30):
    """Float32 inputs whose float32 forward cannot cross a kink: a ReLU whose input, or a max-pool
    whose two largest values, lie within float32 rounding of each other can switch between two
    float32 libraries (ours and torch), and the gradients then differ by far more than rounding (seen:
    4% on resnet_small, a stage-2 ReLU input 1.9e-6 from zero, the forward's error ~3e-6). A draw
    counts as clear when every kink is 10x farther than torch's own largest float32 forward error at
    those points (ours sums the same products in another order, to an error of the same size)."""
    torch = pytest.importorskip("torch")
    for _ in range(tries):
        x = rng.standard_normal(INPUTS[name]).astype(np.float32)
        exact = kink_points(torch_twin(name, ours, torch.float64), x)
        rounded = kink_points(torch_twin(name, ours, torch.float32), x)
        forward_err = max(np.abs(a - b).max() for a, b in zip(rounded, exact))
        if min(np.abs(a).min() for a in exact if a.size) > 10 * forward_err:
            return x
    pytest.fail(f"no float32 input clear of the kinks in {tries} draws")


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet_small"])
def test_models_match_their_torch_twins_in_float64(rng, name):
    """Architecture and every op of the model against torch, both in float64: a kink is within
    rounding of an input with probability ~1e-9, and the bound is tight."""
    torch = pytest.importorskip("torch")
    ours = models.MODELS[name]()
    theirs = torch_twin(name, ours, torch.float64)
    ours.double()
    x = rng.standard_normal(INPUTS[name])
    compare_with_twin(ours, theirs, x, rng.integers(0, 10, size=len(x)), grad_tol(np.float64))


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet_small"])
def test_models_match_their_torch_twins_in_float32(rng, name):
    """The float32 path (its own kernels) against torch in float64 at the same float32 weights and
    inputs, the exact answer for them: only our rounding counts, on inputs clear of every kink."""
    torch = pytest.importorskip("torch")
    ours = models.MODELS[name]()
    x = draw_clear_of_kinks(name, ours, rng)
    theirs = torch_twin(name, ours, torch.float64)
    compare_with_twin(ours, theirs, x, rng.integers(0, 10, size=len(x)), grad_tol(np.float32))


def test_parameter_counts():
    count = lambda m: sum(p.data.size for p in m.parameters())  # noqa: E731
    assert count(models.mlp()) == 64 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10
    assert count(models.cnn()) == 32 * 9 + 32 + 64 * 32 * 9 + 64 + 1024 * 128 + 128 + 128 * 10 + 10
    assert models.resnet_small()(pn.Tensor(np.zeros((2, 3, 32, 32), np.float32))).shape == (2, 10)


# ---- Trainer ----------------------------------------------------------------------------------

def small_digits(n_train):
    train, test = digits()
    x, y = train.arrays
    return TensorDataset(x[:n_train], y[:n_train]), test


def test_trainer_fit_learns_digits():
    pn.manual_seed(0)
    train, test = small_digits(800)
    model = models.mlp()
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    seen = []

    class Record:
        def on_step_end(self, trainer, loss):
            seen.append(loss)

        def on_epoch_end(self, trainer, stats):
            seen.append(stats)

    sched = optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    trainer = Trainer(model, opt, scheduler=sched, callbacks=[Record()], max_grad_norm=5.0)
    loader = DataLoader(train, batch_size=32, shuffle=True, seed=0)
    history = trainer.fit(loader, epochs=3, eval_loader=DataLoader(test, batch_size=100))
    assert [s.epoch for s in history] == [0, 1, 2] and isinstance(history[0], EpochStats)
    assert [s.lr for s in history] == [0.05, 0.05, 0.025]
    assert trainer.global_step == 3 * len(loader) and loader.epoch == 3
    assert history[-1].test_accuracy > 0.85 and history[-1].train_loss < history[0].train_loss
    assert sum(isinstance(s, float) for s in seen) == 3 * len(loader) and seen[-1] is history[-1]
    assert model.training
    assert trainer.fit(loader, epochs=3) == []


def test_trainer_bad_interval():
    model = models.mlp()
    with pytest.raises(ValueError, match="scheduler_interval"):
        Trainer(model, optim.SGD(model.parameters(), lr=0.1), scheduler_interval="batch")


class Interrupt(Exception):
    pass


def run(interrupt_at=None, resume_from=None):
    """Train 2 epochs of Adam on a digits subset; optionally crash after ``interrupt_at`` steps
    (returning the saved states) or start from ``resume_from``."""
    pn.manual_seed(1)
    train, _ = small_digits(200)
    model = models.mlp()
    opt = optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(train, batch_size=16, shuffle=True, seed=3)
    sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=2 * len(loader))
    saved = {}

    class Crash:
        def on_step_end(self, trainer, loss):
            if trainer.global_step == interrupt_at:
                saved.update(model=model.state_dict(), opt=opt.state_dict(), loader=loader.state_dict(),
                             sched=sched.state_dict(), step=trainer.global_step)
                raise Interrupt

    trainer = Trainer(model, opt, scheduler=sched, scheduler_interval="step", callbacks=[Crash()])
    if resume_from is not None:
        model.load_state_dict(resume_from["model"])
        opt.load_state_dict(resume_from["opt"])
        loader.load_state_dict(resume_from["loader"])
        sched.load_state_dict(resume_from["sched"])
        trainer.global_step = resume_from["step"]
    try:
        trainer.fit(loader, epochs=2)
    except Interrupt:
        return saved
    return model.state_dict()


def test_interrupted_run_resumes_exactly():
    uninterrupted = run()
    saved = run(interrupt_at=17)  # 13 batches per epoch: mid-way through the second epoch
    assert saved["loader"]["epoch"] == 1 and saved["loader"]["batches_done"] == 4
    resumed = run(resume_from=saved)
    for key in uninterrupted:
        np.testing.assert_array_equal(resumed[key], uninterrupted[key], err_msg=key)
