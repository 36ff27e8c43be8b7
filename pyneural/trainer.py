"""The supervised training loop behind ``pyneural train``, usable from Python as well.

``Trainer`` owns one model, its optimizer and (optionally) a learning-rate schedule and gradient
clipping. ``fit`` runs passes over a ``DataLoader`` until the loader reaches the requested epoch:
the loader's ``(epoch, position)`` is the position of the run, so restoring a loader's
``state_dict`` (with the model's, the optimizer's and the trainer's own) resumes a run mid-epoch
and ``fit`` simply goes on. The trainer's ``state_dict`` holds its step counter, the history and
the running sums of the epoch in progress, so the resumed epoch reports the same mean loss.

On a CUDA ``device`` the batches come through a ``pyneural.data.DevicePrefetcher``: batch i+1 is
copied to the device on a side stream while step i runs (from page-locked memory when the loader
has ``pin_memory=True``); on the CPU the loader is iterated as it is and ``train_step`` moves
nothing.

Timing, for the utilization report: ``compute_time`` (inside ``train_step``), ``data_wait_time``
(blocked on the loader, or on the prefetcher) and ``eval_time``, summed over this object's life;
they describe this process and are not part of the saved state.

Extension points, so that distributed training, checkpointing or reporting can wrap the loop
instead of copying it:
  * subclass and override ``train_step`` (e.g. all-reduce gradients between backward and step);
  * pass ``callbacks``: objects with any of ``on_step_end(trainer, loss)``,
    ``on_epoch_end(trainer, stats)`` and ``on_train_end(trainer)`` (the CLI's per-epoch printout
    and ``pyneural.checkpoint.SaveEvery`` are such callbacks).
"""
import contextlib
import time
from dataclasses import asdict, dataclass

import numpy as np

from . import amp as _amp
from . import functional as F
from .optim import clip_grad_norm_
from .tensor import no_grad

_AMP_DTYPES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16"}


def _device_type(device):
    return "cpu" if device is None else str(device).partition(":")[0]


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
                 max_grad_norm=None, callbacks=(), device=None, amp=None):
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"Trainer: scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
        if hasattr(scheduler, "num_bad_epochs") and scheduler_interval != "epoch":
            raise ValueError("Trainer: ReduceLROnPlateau steps once per epoch on the evaluation loss; use "
                             "scheduler_interval='epoch'")
        self.amp_dtype = _amp.as_dtype(_AMP_DTYPES[amp]) if isinstance(amp, str) and amp in _AMP_DTYPES else amp
        if self.amp_dtype is not None and not _amp.is_low_precision(np.dtype(self.amp_dtype)):
            raise ValueError(f"Trainer: amp must be None, 'bf16', 'fp16' or a 16-bit float dtype, got {amp!r}")
        # float16 needs dynamic loss scaling; bfloat16 has float32's exponent range and does not
        self.scaler = _amp.GradScaler(_device_type(device)) if self.amp_dtype == _amp.float16 else None
        self.model = model
        self.device = device  # batches are moved there (the model must already be)
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.scheduler = scheduler
        self.scheduler_interval = scheduler_interval
        self.max_grad_norm = max_grad_norm
        self.callbacks = list(callbacks)
        self.global_step = 0
        self.history = []
        self.compute_time = self.data_wait_time = self.eval_time = 0.0
        self.last_data_wait = 0.0  # of the last training pass
        self.samples_trained = self.steps_run = 0
        self._epoch_sums = [0.0, 0]  # loss sum and batches of the epoch in progress
        self._epoch_lr = None        # the learning rate when it began

    def state_dict(self):
        """The step counter, the finished epochs' stats, the epoch in progress's running sums and,
        with fp16 autocast, the loss scaler."""
        state = {"global_step": self.global_step, "history": [s.as_dict() for s in self.history],
                 "epoch_sums": list(self._epoch_sums), "epoch_lr": self._epoch_lr}
        if self.scaler is not None:
            state["grad_scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state):
        if self.scaler is not None and "grad_scaler" in state:
            self.scaler.load_state_dict(state["grad_scaler"])
        self.global_step = int(state["global_step"])
        self.history = [EpochStats(**s) for s in state["history"]]
        loss, batches = state["epoch_sums"]
        self._epoch_sums = [float(loss), int(batches)]
        self._epoch_lr = state["epoch_lr"]

    def train_step(self, inputs, targets):
        """Forward, backward and one optimizer step on a batch; returns the loss as a float."""
        if self.device is not None:
            inputs, targets = inputs.to(self.device), targets.to(self.device)
        with self.autocast():
            loss = self.loss_fn(self.model(inputs), targets)
        self.optimizer.zero_grad()
        self.backward(loss)
        self.clip_and_step()
        if self.scheduler is not None and self.scheduler_interval == "step":
            self.scheduler.step()
        self.global_step += 1
        return loss.item()

    # -- mixed precision: the pieces of a step that autocast and loss scaling change -------
    def autocast(self):
        """The autocast region of the forward pass (a no-op context without ``amp``)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return _amp.autocast(_device_type(self.device), dtype=self.amp_dtype)

    def backward(self, loss):
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def clip_and_step(self):
        """Clip (on the true, unscaled gradients) and step; with fp16 the scaler skips a step whose
        gradients overflowed and adjusts its scale."""
        if self.scaler is not None and self.max_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)
        if self.max_grad_norm is not None:
            clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        if self.scaler is None:
            self.optimizer.step()
        else:
            self.scaler.step(self.optimizer)
            self.scaler.update()

    def _batches(self, loader):
        """What to iterate for ``loader``'s batches: a DevicePrefetcher on a CUDA device, else the
        loader itself. Either has the ``wait_time`` of its pass."""
        if _device_type(self.device) != "cuda":
            return loader
        from .data import DevicePrefetcher
        return DevicePrefetcher(loader, self.device)

    def train_epoch(self, loader, progress=None):
        """One pass over ``loader`` (from wherever it stands). Returns (mean loss over the epoch,
        resumed part included; images and seconds of this pass). ``progress`` wraps the
        loader's iterator, e.g. a tqdm factory."""
        self.model.train()
        source = self._batches(loader)
        batches_iter = iter(source)
        if loader.state_dict()["position"] == 0:
            self._epoch_sums = [0.0, 0]  # a fresh epoch (not the rest of a resumed one)
            self._epoch_lr = self.optimizer.param_groups[0]["lr"]
        sums = self._epoch_sums
        images = 0
        start = time.perf_counter()
        bar = progress(batches_iter, total=len(batches_iter)) if progress is not None else batches_iter
        for inputs, targets in bar:
            step_start = time.perf_counter()
            loss = self.train_step(inputs, targets)
            self.compute_time += time.perf_counter() - step_start
            images += len(targets)
            self.steps_run += 1
            sums[0] += loss
            sums[1] += 1
            if progress is not None:
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            for cb in self.callbacks:
                if hasattr(cb, "on_step_end"):
                    cb.on_step_end(self, loss)
        seconds = time.perf_counter() - start
        self.last_data_wait = source.wait_time
        self.data_wait_time += source.wait_time
        self.samples_trained += images
        total_loss, batches = sums
        self._epoch_sums = [0.0, 0]
        return total_loss / max(batches, 1), images, seconds

    def evaluate(self, loader):
        """(mean loss, accuracy) of the model in eval mode over ``loader``."""
        was_training = self.model.training
        self.model.eval()
        total_loss, correct, count = 0.0, 0, 0
        with no_grad():
            for inputs, targets in self._batches(loader):
                if self.device is not None:
                    inputs, targets = inputs.to(self.device), targets.to(self.device)
                with self.autocast():
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
            train_loss, images, seconds = self.train_epoch(train_loader, progress)
            lr = self._epoch_lr
            plateau = hasattr(self.scheduler, "num_bad_epochs")  # ReduceLROnPlateau steps on a metric
            if self.scheduler is not None and self.scheduler_interval == "epoch" and not plateau:
                self.scheduler.step()
            eval_start = time.perf_counter()
            test_loss, test_acc = self.evaluate(eval_loader) if eval_loader is not None else (float("nan"),) * 2
            self.eval_time += time.perf_counter() - eval_start
            if plateau:  # on the evaluation loss when there is one, else the training loss
                self.scheduler.step(test_loss if eval_loader is not None else train_loss)
            stats = EpochStats(epoch=epoch, train_loss=train_loss, test_loss=test_loss, test_accuracy=test_acc,
                               images_per_s=images / seconds if seconds > 0 else float("inf"),
                               seconds=seconds, data_wait_s=self.last_data_wait, lr=lr)
            run.append(stats)
            self.history.append(stats)
            for cb in self.callbacks:
                if hasattr(cb, "on_epoch_end"):
                    cb.on_epoch_end(self, stats)
        for cb in self.callbacks:
            if hasattr(cb, "on_train_end"):
                cb.on_train_end(self)
        return run
