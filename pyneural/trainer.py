"""The supervised training loop behind ``pyneural train``, usable from Python as well.

``Trainer`` owns one model, its optimizer and (optionally) a learning-rate schedule and gradient
clipping. ``fit`` runs passes over a ``DataLoader`` until the loader reaches the requested epoch:
the loader's ``(epoch, batches_done)`` is the position of the run, so restoring a loader's
``state_dict`` (with the model's and optimizer's) resumes a run mid-epoch and ``fit`` simply goes on.

Extension points, so that distributed training, checkpointing or reporting can wrap the loop
instead of copying it:
  * subclass and override ``train_step`` (e.g. all-reduce gradients between backward and step);
  * pass ``callbacks``: objects with any of ``on_step_end(trainer, loss)`` and
    ``on_epoch_end(trainer, stats)`` (the CLI's per-epoch printout is one).
"""
import time
from dataclasses import asdict, dataclass

import numpy as np

from . import functional as F
from .optim import clip_grad_norm_
from .tensor import no_grad


@dataclass
class EpochStats:
    epoch: int
    train_loss: float
    test_loss: float
    test_accuracy: float
    images_per_s: float
    seconds: float
    data_wait_s: float
    lr: float

    def as_dict(self):
        return asdict(self)


class Trainer:
    """``scheduler`` steps once per epoch (``scheduler_interval="epoch"``) or once per
    optimizer step (``"step"``); ``max_grad_norm`` clips the global gradient norm before each step."""

    def __init__(self, model, optimizer, loss_fn=F.cross_entropy, scheduler=None, scheduler_interval="epoch",
                 max_grad_norm=None, callbacks=()):
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"Trainer: scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.scheduler = scheduler
        self.scheduler_interval = scheduler_interval
        self.max_grad_norm = max_grad_norm
        self.callbacks = list(callbacks)
        self.global_step = 0
        self.history = []

    def train_step(self, inputs, targets):
        """Forward, backward and one optimizer step on a batch; returns the loss as a float."""
        loss = self.loss_fn(self.model(inputs), targets)
        self.optimizer.zero_grad()
        loss.backward()
        if self.max_grad_norm is not None:
            clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.optimizer.step()
        if self.scheduler is not None and self.scheduler_interval == "step":
            self.scheduler.step()
        self.global_step += 1
        return loss.item()

    def train_epoch(self, loader, progress=None):
        """One pass over ``loader`` (from wherever it stands). Returns (mean loss, images,
        seconds). ``progress`` wraps the loader's iterator, e.g. a tqdm factory."""
        self.model.train()
        total_loss, images, batches = 0.0, 0, 0
        start = time.perf_counter()
        batches_iter = iter(loader)
        bar = progress(batches_iter, total=len(batches_iter)) if progress is not None else batches_iter
        for inputs, targets in bar:
            loss = self.train_step(inputs, targets)
            total_loss += loss
            images += len(targets)
            batches += 1
            if progress is not None:
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            for cb in self.callbacks:
                if hasattr(cb, "on_step_end"):
                    cb.on_step_end(self, loss)
        seconds = time.perf_counter() - start
        return total_loss / max(batches, 1), images, seconds

    def evaluate(self, loader):
        """(mean loss, accuracy) of the model in eval mode over ``loader``."""
        was_training = self.model.training
        self.model.eval()
        total_loss, correct, count = 0.0, 0, 0
        with no_grad():
            for inputs, targets in loader:
                logits = self.model(inputs)
                n = len(targets)
                total_loss += self.loss_fn(logits, targets).item() * n
                correct += int(np.count_nonzero(logits.data.argmax(axis=1) == targets.data))
                count += n
        self.model.train(was_training)
        return total_loss / count, correct / count

    def fit(self, train_loader, epochs, eval_loader=None, progress=None):
        """Train until ``train_loader.epoch == epochs``; evaluate after each epoch. Returns the
        list of ``EpochStats`` of the epochs run by this call (also appended to ``history``)."""
        run = []
        while train_loader.epoch < epochs:
            epoch = train_loader.epoch
            lr = self.optimizer.param_groups[0]["lr"]
            train_loss, images, seconds = self.train_epoch(train_loader, progress)
            if self.scheduler is not None and self.scheduler_interval == "epoch":
                self.scheduler.step()
            test_loss, test_acc = self.evaluate(eval_loader) if eval_loader is not None else (float("nan"),) * 2
            stats = EpochStats(epoch=epoch, train_loss=train_loss, test_loss=test_loss, test_accuracy=test_acc,
                               images_per_s=images / seconds if seconds > 0 else float("inf"),
                               seconds=seconds, data_wait_s=train_loader.wait_time, lr=lr)
            run.append(stats)
            self.history.append(stats)
            for cb in self.callbacks:
                if hasattr(cb, "on_epoch_end"):
                    cb.on_epoch_end(self, stats)
        return run
