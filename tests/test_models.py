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

INPUTS = {"mlp": (5, 1, 8, 8), "cnn": (5, 1, 8, 8), "resnet_small": (4, 3, 16, 16)}


def torch_twins():
    pytest.importorskip("torch")
    path = os.path.join(os.path.dirname(__file__), os.pardir, "bench", "torch_models.py")
    spec = importlib.util.spec_from_file_location("torch_models", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet_small"])
def test_models_match_their_torch_twins(rng, name):
    torch = pytest.importorskip("torch")
    ours = models.MODELS[name]()
    theirs = torch_twins().MODELS[name]()
    state = {k: torch.from_numpy(v) for k, v in ours.state_dict().items()}
    theirs.load_state_dict(state)  # same names and shapes, or this raises
    x = rng.standard_normal(INPUTS[name]).astype(np.float32)
    y = rng.integers(0, 10, size=len(x))
    for training in (True, False):
        ours.train(training)
        theirs.train(training)
        xt = torch.tensor(x, requires_grad=True)
        loss_ref = torch.nn.functional.cross_entropy(theirs(xt), torch.tensor(y))
        loss_ref.backward()
        ours.zero_grad()
        loss = F.cross_entropy(ours(pn.Tensor(x)), pn.Tensor(y))
        loss.backward()
        assert abs(loss.item() - loss_ref.item()) < 1e-5 * max(1.0, abs(loss_ref.item()))
        for (key, p), (key_ref, p_ref) in zip(ours.named_parameters(), theirs.named_parameters()):
            assert key == key_ref
            assert rel_err(p.grad.data, p_ref.grad.numpy()) < 1e-4, key
        theirs.zero_grad()


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
