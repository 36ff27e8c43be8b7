"""DataLoader: seeded shuffling, batching, batch augmentation, and background workers that
prepare batches ahead into a bounded queue.

Order. Epoch ``e`` visits the samples in ``order(e)``: a permutation drawn from a generator seeded
with ``(seed, e)`` when shuffling, ``arange(n)`` otherwise. The order depends only on the seed and
the epoch number, never on how many passes ran before, so a run is reproducible and can be resumed
anywhere.

Position. The loader's state is ``(epoch, position)``: how many samples of the epoch's order were
consumed. A position in samples, not batches, is what lets a run resume with another batch size
or, with a ``DistributedSampler``, on another number of ranks (the sampler translates between
its ranks' batches and the global position, see ``pyneural.distributed.sampler``).

Passes. Each ``iter(loader)`` starts where the state points. Delivering the last batch of an epoch
moves the state to ``(epoch + 1, 0)``; a pass abandoned early (``break``) is dropped, and the next
pass starts the next epoch, as in PyTorch. ``load_state_dict`` is the exception: the next pass then
resumes mid-epoch and yields exactly the samples that were not yet delivered. Only batches handed
to the caller count; batches the workers prepared ahead do not.

Augmentation. ``transform(inputs, rng)`` (see ``pyneural.data.augment``) is applied to the first
array of each batch, on the worker. Its generator is seeded with ``(seed, epoch, position of the
batch, rank)``, so a batch is augmented the same way by whichever worker builds it and whether or
not the run was interrupted: resuming needs no augmentation state.

Prefetching. With ``prefetch > 0``, ``workers`` daemon threads build batches ahead: worker w
builds batches w, w+k, w+2k, ... into its own bounded queue and the caller takes them round-robin,
so they arrive in order and at most ``prefetch`` batches wait in memory. Batch building is numpy
gathers and vectorised augmentation (which release the GIL for their copies); the point is that
it overlaps the training step instead of adding to it. The threads hold no reference to the
iterator, so dropping the iterator (a ``break``) finalises it: ``close()`` sets a stop flag, drains
the queues so a blocked ``put`` returns, and joins the threads. An exception raised while building
a batch travels through the queue and is re-raised in the caller's thread, with its traceback.

``wait_time`` is the time the caller spent blocked waiting for data during the current (or last)
pass, ``total_wait_time`` the same over the loader's life: near zero when prefetching keeps up.
"""
import queue
import threading
import time
import weakref
from collections import namedtuple

import numpy as np



class BatchInfo(namedtuple("BatchInfo", "epoch start index")):
    """Where the batch just delivered came from: ``index`` counts batches of this rank from the
    global position ``start`` of ``epoch`` where the pass began."""


class _Failure:
    """An exception raised in a worker, on its way to the caller."""

    def __init__(self, exc):
        self.exc = exc


def _default_seed():
    """A seed for shuffling when none is given: drawn from pyneural's global generator, so
    ``pn.manual_seed`` makes the order reproducible."""
    from .. import random as pn_random
    return int(pn_random.get_generator().integers(0, 2**63 - 1))


def _put(q, item, stop):
    """Put ``item`` on ``q``, giving up once ``stop`` is set. Returns whether it was put."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _produce(make_batch, batch_numbers, q, stop):
    try:
        for b in batch_numbers:
            if stop.is_set() or not _put(q, make_batch(b), stop):
                return
    except BaseException as exc:  # noqa: B902 - every failure must reach the caller, not die here
        _put(q, _Failure(exc), stop)


def _check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"DataLoader: {name} must be an int >= {low}, got {value!r}")


class DataLoader:
    """Iterate over ``dataset`` in batches of tuples of ``pyneural.Tensor``.

    ``sampler``, if given, replaces the built-in order: an object with ``__len__`` and
    ``order(epoch)`` returning the sample indices of that epoch. A sampler that shards an epoch
    over ranks (``DistributedSampler``) also has ``order(epoch, start)`` and
    ``global_position(start, batches, batch_size)``; any other sampler's order is taken as the
    epoch's global order. ``collate_fn(list_of_samples)``, if given, builds each batch from
    ``dataset[i]`` samples and its result is returned unchanged; without it the dataset's
    ``get_batch`` is used and each array becomes a Tensor. ``transform(inputs, rng)`` augments
    the first array of each batch (not with ``collate_fn``). ``workers`` threads prefetch up to
    ``prefetch`` batches (``prefetch=0``: batches are built in the caller's thread).
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, seed=None, prefetch=2,
                 collate_fn=None, sampler=None, transform=None, workers=1):
        _check_int("batch_size", batch_size, 1)
        if isinstance(prefetch, bool) or not isinstance(prefetch, (int, np.integer)) or prefetch < 0:
            raise ValueError(f"DataLoader: prefetch must be an int >= 0 (0: no thread), got {prefetch!r}")
        _check_int("workers", workers, 1)
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: give either sampler or shuffle=True, not both")
        if transform is not None and not callable(transform):
            raise TypeError(f"DataLoader: transform must be callable as transform(inputs, rng), got "
                            f"{type(transform).__name__}")
        if transform is not None and collate_fn is not None:
            raise ValueError("DataLoader: transform applies to batches from dataset.get_batch; with a "
                             "collate_fn, augment inside it")
        if len(dataset) == 0:
            raise ValueError("DataLoader: the dataset is empty")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.prefetch = int(prefetch)
        self.workers = int(workers)
        self.collate_fn = collate_fn
        self.sampler = sampler
        self.transform = transform
        if seed is None:  # with a seeded sampler (DistributedSampler), its seed is the loader's too
            seed = getattr(sampler, "seed", 0) if sampler is not None else _default_seed() if shuffle else 0
        self.seed = int(seed)
        self.epoch = 0
        self.wait_time = 0.0
        self.total_wait_time = 0.0
        self.last_delivered = None
        self._start = 0          # global position where the current/next pass begins
        self._batches_done = 0   # batches delivered since _start
        self._resume = False
        self._active = None

    # ---- the order of an epoch --------------------------------------------------------------

    def num_samples(self):
        return len(self.sampler) if self.sampler is not None else len(self.dataset)

    def _batches_in(self, samples):
        return samples // self.batch_size if self.drop_last else -(-samples // self.batch_size)

    def __len__(self):
        """Batches in a whole epoch (a resumed pass may have fewer)."""
        return self._batches_in(self.num_samples())

    def _sharded(self):
        return self.sampler is not None and hasattr(self.sampler, "global_position")

    def order(self, epoch, start=0):
        """The sample indices this loader visits in ``epoch`` from global position ``start``
        (int64)."""
        if self._sharded():
            return np.asarray(self.sampler.order(epoch, start), dtype=np.int64)
        if self.sampler is not None:
            full = np.asarray(self.sampler.order(epoch), dtype=np.int64)
        elif self.shuffle:
            full = np.random.default_rng([self.seed, epoch]).permutation(len(self.dataset))
        else:
            full = np.arange(len(self.dataset), dtype=np.int64)
        return full[start:]

    def _epoch_size(self):
        """Samples in the epoch's global order (what ``position`` counts)."""
        if self._sharded():
            return int(self.sampler.dataset_size)
        return self.num_samples()

    def _position(self, start, batches):
        if self._sharded():
            return self.sampler.global_position(start, batches, self.batch_size)
        return min(start + batches * self.batch_size, self._epoch_size())

    def _shuffles(self):
        if self._sharded():
            return bool(getattr(self.sampler, "shuffle", False))
        return self.shuffle

    def _rank(self):
        return int(getattr(self.sampler, "rank", 0)) if self._sharded() else 0

    # ---- state ------------------------------------------------------------------------------

    def set_epoch(self, epoch):
        """Start the next pass at the beginning of ``epoch``."""
        self._close_active()
        self.epoch, self._start, self._batches_done, self._resume = int(epoch), 0, 0, False

    def state_dict(self):
        """Where the caller stands: the epoch, the global position in it (samples of the epoch's
        order consumed) and the batches this loader delivered since its pass began, plus what
        must match on resume. ``seed`` is the order's (a DistributedSampler's, when there is
        one); restoring sets it on the loader and the sampler. Plain ints and bools."""
        seed = self.sampler.seed if self._sharded() and hasattr(self.sampler, "seed") else self.seed
        return {"epoch": self.epoch, "position": self._position(self._start, self._batches_done),
                "batches_done": self._batches_done, "seed": seed, "shuffle": self._shuffles(),
                "drop_last": self.drop_last, "batch_size": self.batch_size,
                "epoch_size": self._epoch_size(), "ranks": int(getattr(self.sampler, "num_replicas", 1))}

    def load_state_dict(self, state):
        """Resume: the next pass yields the samples of ``state['epoch']`` after its position.
        The batch size and, with a DistributedSampler, the number of ranks may differ from the
        run that saved the state; the data (its size, shuffling, drop_last) may not."""
        for key, here in (("shuffle", self._shuffles()), ("drop_last", self.drop_last),
                          ("epoch_size", self._epoch_size())):
            if state[key] != here:
                raise ValueError(f"DataLoader.load_state_dict: saved {key}={state[key]!r} but this loader "
                                 f"has {key}={here!r}; the saved position would not mean the same samples")
        position = state["position"]
        if isinstance(position, bool) or not isinstance(position, int) or not 0 <= position <= self._epoch_size():
            raise ValueError(f"DataLoader.load_state_dict: position={position!r} outside [0, {self._epoch_size()}]")
        self._close_active()
        self.seed = int(state["seed"])
        if self.sampler is not None and hasattr(self.sampler, "seed"):
            self.sampler.seed = self.seed
        self.epoch, self._start, self._batches_done = int(state["epoch"]), position, 0
        if self._batches_in(len(self.order(self.epoch, position))) == 0:
            self.epoch, self._start = self.epoch + 1, 0
        self._resume = True

    # ---- passes -----------------------------------------------------------------------------

    def __iter__(self):
        self._close_active()
        if (self._batches_done or self._start) and not self._resume:
            self.epoch, self._start, self._batches_done = self.epoch + 1, 0, 0
        self._resume = False
        self.wait_time = 0.0
        it = _LoaderIter(self, self.epoch, self._start, self._batches_done)
        self._active = weakref.ref(it)
        return it

    def _close_active(self):
        it = self._active() if self._active is not None else None
        if it is not None:
            it.close(superseded=True)
        self._active = None

    def _make_batch(self, epoch, start, order, b):
        indices = order[b * self.batch_size:(b + 1) * self.batch_size]
        if self.collate_fn is not None:
            return self.collate_fn([self.dataset[int(i)] for i in indices])
        from ..tensor import Tensor
        arrays = list(self.dataset.get_batch(indices))
        if self.transform is not None:
            rng = np.random.default_rng([self.seed, epoch, self._position(start, b), self._rank()])
            arrays[0] = self.transform(arrays[0], rng)
        return tuple(Tensor(a) for a in arrays)


class _LoaderIter:
    """One pass over a DataLoader: ``epoch`` from global position ``start``, skipping the first
    ``done`` batches (delivered by an earlier, superseded pass)."""

    def __init__(self, loader, epoch, start, done):
        self._loader = loader
        self._epoch, self._start = epoch, start
        order = loader.order(epoch, start)
        self._next = done
        self._end = loader._batches_in(len(order))
        self._closed = False
        self._superseded = False
        self._threads = []
        if loader.prefetch > 0 and done < self._end:
            k = min(loader.workers, self._end - done)
            self._stop = threading.Event()
            self._queues = [queue.Queue(maxsize=max(1, -(-loader.prefetch // k))) for _ in range(k)]

            def make_batch(b):
                return loader._make_batch(epoch, start, order, b)

            for w in range(k):
                thread = threading.Thread(target=_produce, name="pyneural-dataloader", daemon=True,
                                          args=(make_batch, range(done + w, self._end, k), self._queues[w],
                                                self._stop))
                thread.start()
                self._threads.append(thread)
            self._first = done
        else:
            self._order = order

    def __iter__(self):
        return self

    def __len__(self):
        return self._end - self._next

    def __next__(self):
        if self._closed:
            if self._superseded:
                raise RuntimeError("DataLoader: this iterator was closed because a new pass over the same "
                                   "loader started (a loader supports one pass at a time)")
            raise StopIteration
        if self._next >= self._end:
            self.close()
            raise StopIteration
        start = time.perf_counter()
        batch = self._take()
        waited = time.perf_counter() - start
        loader = self._loader
        loader.wait_time += waited
        loader.total_wait_time += waited
        loader.last_delivered = BatchInfo(self._epoch, self._start, self._next)
        self._next += 1
        self._record_delivery()
        return batch

    def _take(self):
        if not self._threads:
            return self._loader._make_batch(self._epoch, self._start, self._order, self._next)
        w = (self._next - self._first) % len(self._threads)
        q, thread = self._queues[w], self._threads[w]
        while True:
            try:
                item = q.get(timeout=0.1)
                break
            except queue.Empty:
                if not thread.is_alive() and q.empty():
                    self.close()
                    raise RuntimeError("DataLoader: a prefetch worker ended without delivering its batch")
        if isinstance(item, _Failure):
            self.close()
            raise item.exc
        return item

    def _record_delivery(self):
        loader = self._loader
        if self._next == self._end:
            loader.epoch, loader._start, loader._batches_done = self._epoch + 1, 0, 0
            self.close()
        else:
            loader._batches_done = self._next

    def close(self, superseded=False):
        """Stop the prefetch workers and release their queues; safe to call more than once."""
        if self._closed:
            return
        self._closed, self._superseded = True, superseded
        if self._threads:
            self._stop.set()
            for q in self._queues:
                while True:
                    try:
                        q.get_nowait()
                    except queue.Empty:
                        break
            for thread in self._threads:
                thread.join()
            self._threads = []

    def __del__(self):
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
