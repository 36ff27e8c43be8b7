"""DataLoader: seeded shuffling, batching, and a background thread that prepares batches ahead.

Order. Epoch ``e`` visits the samples in ``order(e)``: a permutation drawn from a generator seeded
with ``(seed, e)`` when shuffling, ``arange(n)`` otherwise. The order depends only on the seed and
the epoch number, never on how many passes ran before, so a run is reproducible and can be resumed
anywhere: the loader's whole state is ``(epoch, batches_done)``.

Passes. Each ``iter(loader)`` starts at that state. Delivering the last batch of an epoch moves
the state to ``(epoch + 1, 0)``; a pass abandoned early (``break``) is dropped, and the next pass
starts the next epoch, as in PyTorch. ``load_state_dict`` is the exception: the next pass then
resumes mid-epoch and yields exactly the batches that were not yet delivered. Only batches handed
to the caller count; batches the worker prepared ahead are not.

Prefetching. With ``prefetch > 0`` a daemon thread builds the next ``prefetch`` batches into a
bounded queue while the caller computes. Batch building is a numpy gather per array (it releases
the GIL only briefly, but is cheap next to a training step); the point is that it overlaps the
step instead of adding to it. The thread holds no reference to the iterator, so dropping the
iterator (a ``break``) finalises it: ``close()`` sets a stop flag, drains the queue so a blocked
``put`` returns, and joins the thread. An exception raised while building a batch travels through
the queue and is re-raised in the caller's thread, with its original traceback.

``wait_time`` is the time the caller spent blocked waiting for data during the current (or
last) pass: near zero when prefetching keeps up, the whole batch-building time when it does not.
"""
import queue
import threading
import time
import weakref

import numpy as np

_END = object()


class _Failure:
    """An exception raised in the worker, on its way to the caller."""

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
        _put(q, _END, stop)
    except BaseException as exc:  # noqa: B902 - every failure must reach the caller, not die here
        _put(q, _Failure(exc), stop)


class DataLoader:
    """Iterate over ``dataset`` in batches of tuples of ``pyneural.Tensor``.

    ``sampler``, if given, replaces the built-in order: an object with ``__len__`` and
    ``order(epoch)`` returning the sample indices of that epoch (a distributed sampler shards here).
    ``collate_fn(list_of_samples)``, if given, builds each batch from ``dataset[i]`` samples and its
    result is returned unchanged; without it the dataset's ``get_batch`` is used and each array
    becomes a Tensor.
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, seed=None, prefetch=2,
                 collate_fn=None, sampler=None):
        if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be an int >= 1, got {batch_size!r}")
        if not isinstance(prefetch, (int, np.integer)) or prefetch < 0:
            raise ValueError(f"DataLoader: prefetch must be an int >= 0 (0: no thread), got {prefetch!r}")
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: give either sampler or shuffle=True, not both")
        if len(dataset) == 0:
            raise ValueError("DataLoader: the dataset is empty")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.prefetch = int(prefetch)
        self.collate_fn = collate_fn
        self.sampler = sampler
        self.seed = (_default_seed() if shuffle else 0) if seed is None else int(seed)
        self.epoch = 0
        self.wait_time = 0.0
        self._batches_done = 0
        self._resume = False
        self._active = None
        self._order_cache = (None, None)

    def num_samples(self):
        return len(self.sampler) if self.sampler is not None else len(self.dataset)

    def __len__(self):
        n = self.num_samples()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch):
        """The sample indices of ``epoch``, in visiting order (int64)."""
        if self.sampler is not None:
            return np.asarray(self.sampler.order(epoch), dtype=np.int64)
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n, dtype=np.int64)
        return np.random.default_rng([self.seed, epoch]).permutation(n)

    def set_epoch(self, epoch):
        """Start the next pass at the beginning of ``epoch``."""
        self._close_active()
        self.epoch, self._batches_done, self._resume = int(epoch), 0, False

    def state_dict(self):
        """Where the caller stands: the epoch and how many of its batches were delivered, plus
        what must match on resume. Plain ints and bools."""
        return {"epoch": self.epoch, "batches_done": self._batches_done, "seed": self.seed,
                "shuffle": self.shuffle, "batch_size": self.batch_size, "drop_last": self.drop_last,
                "num_samples": self.num_samples()}

    def load_state_dict(self, state):
        """Resume: the next pass yields the batches of ``state['epoch']`` not yet delivered."""
        for key in ("shuffle", "batch_size", "drop_last", "num_samples"):
            here = self.num_samples() if key == "num_samples" else getattr(self, key)
            if state[key] != here:
                raise ValueError(f"DataLoader.load_state_dict: saved {key}={state[key]!r} but this loader "
                                 f"has {key}={here!r}; the batches would not line up")
        if not 0 <= state["batches_done"] <= len(self):
            raise ValueError(f"DataLoader.load_state_dict: batches_done={state['batches_done']} outside "
                             f"[0, {len(self)}]")
        self._close_active()
        self.seed = int(state["seed"])
        self.epoch, self._batches_done = int(state["epoch"]), int(state["batches_done"])
        if self._batches_done == len(self):
            self.epoch, self._batches_done = self.epoch + 1, 0
        self._resume = True

    def __iter__(self):
        self._close_active()
        if self._batches_done and not self._resume:
            self.epoch, self._batches_done = self.epoch + 1, 0
        self._resume = False
        self.wait_time = 0.0
        it = _LoaderIter(self, self.epoch, self._batches_done)
        self._active = weakref.ref(it)
        return it

    def _close_active(self):
        it = self._active() if self._active is not None else None
        if it is not None:
            it.close(superseded=True)
        self._active = None

    def _batch_indices(self, epoch, b):
        cached_epoch, order = self._order_cache
        if cached_epoch != epoch:
            order = self.order(epoch)
            self._order_cache = (epoch, order)
        return order[b * self.batch_size:(b + 1) * self.batch_size]

    def _make_batch(self, epoch, b):
        indices = self._batch_indices(epoch, b)
        if self.collate_fn is not None:
            return self.collate_fn([self.dataset[int(i)] for i in indices])
        from ..tensor import Tensor
        return tuple(Tensor(a) for a in self.dataset.get_batch(indices))


class _LoaderIter:
    """One pass over a DataLoader from batch ``start`` of ``epoch``."""

    def __init__(self, loader, epoch, start):
        self._loader = loader
        self._epoch = epoch
        self._next = start
        self._end = len(loader)
        self._closed = False
        self._superseded = False
        self._thread = None
        if loader.prefetch > 0 and start < self._end:
            self._queue = queue.Queue(maxsize=loader.prefetch)
            self._stop = threading.Event()
            make_batch = loader._make_batch
            self._thread = threading.Thread(
                target=_produce, name="pyneural-dataloader", daemon=True,
                args=(lambda b: make_batch(epoch, b), range(start, self._end), self._queue, self._stop))
            self._thread.start()

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
        self._loader.wait_time += time.perf_counter() - start
        self._next += 1
        self._record_delivery()
        return batch

    def _take(self):
        if self._thread is None:
            return self._loader._make_batch(self._epoch, self._next)
        while True:
            try:
                item = self._queue.get(timeout=0.1)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    self.close()
                    raise RuntimeError("DataLoader: the prefetch thread ended without delivering a batch")
        if isinstance(item, _Failure):
            self.close()
            raise item.exc
        return item

    def _record_delivery(self):
        loader = self._loader
        if self._next == self._end:
            loader.epoch, loader._batches_done = self._epoch + 1, 0
            self.close()
        else:
            loader._batches_done = self._next

    def close(self, superseded=False):
        """Stop the prefetch thread and release its queue; safe to call more than once."""
        if self._closed:
            return
        self._closed, self._superseded = True, superseded
        if self._thread is not None:
            self._stop.set()
            while True:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
            self._thread.join()
            self._thread = None

    def __del__(self):
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
