"""DistributedTrainer: ``pyneural.trainer.Trainer`` for a DistributedDataParallel model.

What changes against one process, and why:

* The loss of the epoch's last step is weighted (``DistributedSampler.step_loss_weight``): the
  sampler pads the epoch to a multiple of N ranks, and the real samples of the last step are
  split unevenly, so each rank takes the mean over its real samples only and scales it by
  ``N * real_local / real_step``. Averaged over ranks, that is the single-process gradient of
  the step's real samples, so N ranks reproduce one process with the global batch.
* ``finish_gradient_sync()`` runs between backward and the optimizer step (a no-op unless a
  parameter got no gradient this step).
* The epoch's loss and image count are combined over ranks (one small allreduce per epoch), so
  the printed loss and images/s describe the whole job; the time is the slowest rank's.
* With a timeline, every step records its data wait, backward and optimizer step (forward and
  the bucket collectives are recorded by the DDP wrapper).
"""
import time

import numpy as np

from ..trainer import Trainer
from .collectives import allreduce_


class _TimedBatches:
    """Wraps a batch iterator (or a tqdm bar around one): each ``next`` is a 'data wait' span."""

    def __init__(self, inner, timeline):
        self._inner, self._timeline = inner, timeline

    def __iter__(self):
        it = iter(self._inner)
        while True:
            start = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            self._timeline.record("data wait", start, time.perf_counter())
            yield batch

    def set_postfix(self, **kwargs):
        """The Trainer reports the loss through its progress bar; a bare iterator has none."""
        if hasattr(self._inner, "set_postfix"):
            self._inner.set_postfix(**kwargs)


class DistributedTrainer(Trainer):
    """``model`` is a DistributedDataParallel; the training loader should use a
    ``DistributedSampler`` (any other sampler or shuffling trains without loss weighting)."""

    def __init__(self, model, optimizer, timeline=None, **kwargs):
        super().__init__(model, optimizer, **kwargs)
        self.timeline = timeline if timeline is not None else model.timeline
        self._loader = None

    def train_epoch(self, loader, progress=None):
        self._loader = loader
        timeline = self.timeline

        def timed_progress(batches, total):
            return _TimedBatches(progress(batches, total) if progress is not None else batches, timeline)

        mean_loss, images, seconds = super().train_epoch(loader, timed_progress if timeline.enabled else progress)
        world = self.model.world
        totals = np.array([mean_loss, images, seconds], dtype=np.float64)
        allreduce_(world, totals[:2], what="allreduce of epoch loss and images")
        slowest = totals[2:].copy()
        allreduce_(world, slowest, op=_mpi_max(), what="allreduce of epoch time")
        return totals[0] / world.size, int(totals[1]), float(slowest[0])

    def _step_weight(self, batch_len):
        """(real samples to use, loss weight) for the batch just delivered."""
        sampler = getattr(self._loader, "sampler", None) if self._loader is not None else None
        if sampler is None or not hasattr(sampler, "step_loss_weight"):
            return batch_len, 1.0
        # The pass may have begun mid-epoch (a resumed checkpoint, maybe of another rank count):
        # the batch index and the weights count from the global position where it began.
        _, start, index = self._loader.last_delivered
        return sampler.step_loss_weight(index, self._loader.batch_size, start=start)

    def train_step(self, inputs, targets):
        real, weight = self._step_weight(len(targets))
        if self.device is not None:
            inputs, targets = inputs.to(self.device), targets.to(self.device)
        with self.autocast():
            outputs = self.model(inputs)
            if real == len(targets) and weight == 1.0:
                loss = base = self.loss_fn(outputs, targets)
            elif real == 0:
                # Only padding on this rank: it must still take part in the step's collectives.
                base = self.loss_fn(outputs, targets)
                loss = base * 0.0
            else:
                base = self.loss_fn(outputs[:real], targets[:real])
                loss = base * weight
        self.optimizer.zero_grad()
        with self.timeline.span("backward"):
            self.backward(loss)
        self.model.finish_gradient_sync()
        with self.timeline.span("optimizer step"):
            self.clip_and_step()
        if self.scheduler is not None and self.scheduler_interval == "step":
            self.scheduler.step()
        self.global_step += 1
        return base.item()


def _mpi_max():
    from ._mpi import import_mpi
    return import_mpi().MAX


class PipelineTrainer(Trainer):
    """Trains a ``Pipeline`` (``model``): every rank of a replica runs the same steps on the same
    batches (the loader's sampler splits the data by replica). The optimizer may be built over the
    whole model's parameters: only this stage's get gradients, so only they move."""

    def __init__(self, pipeline, optimizer, **kwargs):
        if kwargs.get("max_grad_norm") is not None:
            raise ValueError("PipelineTrainer: max_grad_norm needs the norm over every stage; not supported")
        if kwargs.get("amp") is not None:
            raise ValueError("PipelineTrainer: mixed precision (amp) is not supported with pipeline stages yet")
        super().__init__(pipeline, optimizer, **kwargs)
        self.pipeline = pipeline

    def train_step(self, inputs, targets):
        pipe = self.pipeline
        if self.device is not None:
            inputs, targets = inputs.to(self.device), targets.to(self.device)
        self.optimizer.zero_grad()
        with self.timeline_span("pipeline schedule"):
            loss = pipe.train_step(inputs if pipe.is_first else None, targets)
        self.optimizer.step()
        if self.scheduler is not None and self.scheduler_interval == "step":
            self.scheduler.step()
        self.global_step += 1
        return loss

    def timeline_span(self, name):
        return self.pipeline.timeline.span(name)

    def train_epoch(self, loader, progress=None):
        mean_loss, images, seconds = super().train_epoch(loader, progress)
        world, pipe = self.pipeline.world, self.pipeline
        # every stage of a replica saw the same samples: count them once per replica
        totals = np.array([mean_loss, images / pipe.stages, seconds], dtype=np.float64)
        allreduce_(world, totals[:2], what="allreduce of epoch loss and images")
        slowest = totals[2:].copy()
        allreduce_(world, slowest, op=_mpi_max(), what="allreduce of epoch time")
        return totals[0] / world.size, int(round(totals[1])), float(slowest[0])

    def evaluate(self, loader):
        """(mean loss, accuracy) over ``loader``, computed on the last stage and shared."""
        from .collectives import bcast_
        pipe = self.pipeline
        was_training = self.model.training if hasattr(self.model, "training") else True
        pipe.eval()
        sums = np.zeros(3)  # loss * n, correct, n
        for inputs, targets in loader:
            if self.device is not None:
                inputs, targets = inputs.to(self.device), targets.to(self.device)
            out = pipe.predict(inputs if pipe.is_first else None, len(targets))
            if pipe.is_last:
                n = len(targets)
                sums += (self.loss_fn(out, targets).item() * n,
                         int(np.count_nonzero(out.data.argmax(axis=1) == targets.data)), n)
        bcast_(pipe.pipe, sums, root=pipe.stages - 1, what="broadcast of the evaluation")
        pipe.train(was_training)
        return sums[0] / sums[2], sums[1] / sums[2]
