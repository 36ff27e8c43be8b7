"""DataLoader: PyTorch's arguments and batches, over a seeded order that resumes exactly.

Arguments. ``DataLoader(dataset, batch_size=1, shuffle=False, sampler=None, batch_sampler=None,
num_workers=0, collate_fn=None, pin_memory=False, drop_last=False, timeout=0,
worker_init_fn=None, multiprocessing_context=None, generator=None, *, prefetch_factor=None,
persistent_workers=False, pin_memory_device="", in_order=True)`` as in ``torch.utils.data``,
checked as PyTorch checks them, plus pyneural's ``seed``, ``transform`` and the older
``prefetch`` / ``workers`` (see below). Workers are threads, not processes: batch building is
numpy gathers and copies that release the GIL, and threads need no pickling, so
``multiprocessing_context`` is accepted and unused. Batches always arrive in order, which
``in_order=False`` permits; ``pin_memory_device`` may only name a CUDA device (pinned memory
serves every device).

Batches. With a ``collate_fn`` it builds each batch from ``dataset[i]`` samples and is returned
as it is. Without one: a dataset with its own ``get_batch(indices)`` (``TensorDataset``) is
gathered a whole batch at a time (one fancy-index per array; the batch is a tuple of Tensors); any
other dataset is read sample by sample and collated by ``default_collate``, so a dataset
returning ``(Tensor, int)`` gives ``[images, labels int64]``, as in PyTorch. ``batch_size=None``
turns batching off: each sample is passed through ``default_convert``.

Order. Epoch ``e`` visits the samples in ``order(e)``. Without a sampler that is
``RandomSampler``'s ``default_rng([seed, e]).permutation(n)`` with ``shuffle=True`` and
``arange(n)`` otherwise: a function of the seed and the epoch number only, never of how many passes
ran before. The seed is ``seed=``, else one taken from ``generator=`` (an int, a
``numpy.random.Generator``, or a ``torch.Generator``'s initial seed), else a sampler's own
``seed``, else (with shuffling) a draw from pyneural's global generator.

Position. The loader's state is ``(epoch, position)``: how many units of the epoch's order were
consumed, a unit being a sample (or, with a user ``batch_sampler``, a batch). A position in
samples is what lets a run resume with another batch size or, with a ``DistributedSampler``, on
another number of ranks (the sampler translates between its ranks' batches and the global
position, see ``pyneural.distributed.sampler``).

What resumes exactly. ``load_state_dict`` makes the next pass yield exactly the units of the saved
epoch after the saved position, recomputing the epoch's order. That is exact for the built-in
order and for any sampler with ``order(epoch)``: pyneural's ``SequentialSampler``,
``RandomSampler``, ``SubsetRandomSampler``, ``DistributedSampler``, and a ``BatchSampler`` over one
of them. Any other sampler or batch sampler (a plain iterable, a ``torch.utils.data`` sampler) is
iterated anew for every pass, after ``set_epoch(epoch)`` where it has one, and a resumed pass skips
the first ``position`` units of that iteration: exact only if iterating it again reproduces the
interrupted epoch's order.

Passes. Each ``iter(loader)`` starts where the state points. Delivering the last batch of an epoch
moves the state to ``(epoch + 1, 0)``; a pass abandoned early (``break``) is dropped, and the next
pass starts the next epoch, as in PyTorch. Only batches handed to the caller count; batches the
workers prepared ahead, or a ``DevicePrefetcher`` fetched ahead (``peek``), do not.

Augmentation. ``transform(inputs, rng)`` (see ``pyneural.data.augment``) is applied to the first
array of each batch, on the worker, with a generator seeded by ``(seed, epoch, position of the
batch, rank)``. While a sample is read, ``pyneural.data.transforms.sample_generator()`` is seeded by
``(seed, epoch, rank, position of the batch, index in the batch)`` for the per-sample transforms
of the dataset. Either way a batch is augmented the same way by whichever worker builds it and
whether or not the run was interrupted: resuming needs no augmentation state.

Workers. ``num_workers=0`` builds batches in the calling thread. With ``num_workers=k > 0``, k
daemon threads build batches ahead: worker w builds batches w, w+k, ... into its own queue of
``prefetch_factor`` (default 2) batches and the caller takes them round-robin, so they arrive in
order. ``worker_init_fn(w)`` runs first in each worker thread (once per pass; once per loader with
``persistent_workers``). ``timeout > 0`` raises RuntimeError when a worker's batch takes longer
than that many seconds. The older spelling ``prefetch=p`` (p batches ahead in all, 0: no thread)
with ``workers=`` (an alias of ``num_workers``) still works. The threads hold no reference to the
iterator, so dropping it (a ``break``) finalises it: ``close()`` sets a stop flag, drains the
queues so a blocked ``put`` returns, and joins the threads. An exception raised while building a
batch is re-raised in the caller's thread, with its traceback.

``pin_memory=True`` returns batches in page-locked host memory (copied on the workers) when a CUDA
device can be used (a GPU, or the emulated device), which ``DevicePrefetcher`` copies from
asynchronously; without one it warns and does nothing, as PyTorch does.

``wait_time`` is the time the caller spent blocked waiting for data during the current (or last)
pass, ``total_wait_time`` the same over the loader's life: near zero when prefetching keeps up.
"""
import numbers
import queue
import threading
import time
import warnings
import weakref
from collections import namedtuple

import numpy as np

from .collate import default_collate, default_convert
from .dataset import Dataset
from .device import pin_batch, pinning_backend
from .sampler import BatchSampler, RandomSampler, SequentialSampler, _draw_seed, seed_from
from .transforms import seeded_draws

DEFAULT_PREFETCH_FACTOR = 2


class BatchInfo(namedtuple("BatchInfo", "epoch start index")):
    """Where the batch just delivered came from: ``index`` counts batches of this rank from the
    global position ``start`` of ``epoch`` where the pass began."""


class _Failure:
    """An exception raised in a worker, on its way to the caller."""

    def __init__(self, exc):
        self.exc = exc


def _put(q, item, stop):
    """Put ``item`` on ``q``, giving up once ``stop`` is set. Returns whether it was put."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _produce(make_batch, batch_numbers, q, stop, init):
    try:
        if init is not None:
            init()
        for b in batch_numbers:
            if stop.is_set() or not _put(q, make_batch(b), stop):
                return
    except BaseException as exc:  # noqa: B902 - every failure must reach the caller, not die here
        _put(q, _Failure(exc), stop)


def _check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"DataLoader: {name} must be an int >= {low}, got {value!r}")


def _gathers_batches(dataset):
    """True when the dataset builds whole batches itself (overrides ``Dataset.get_batch``)."""
    get_batch = getattr(type(dataset), "get_batch", None)
    return get_batch is not None and get_batch is not Dataset.get_batch


def _tell_epoch(sampler, epoch):
    set_epoch = getattr(sampler, "set_epoch", None)
    if callable(set_epoch):
        set_epoch(epoch)


class DataLoader:
    """Iterate over ``dataset`` in batches (see the module docstring for every argument)."""

    def __init__(self, dataset, batch_size=1, shuffle=None, sampler=None, batch_sampler=None, num_workers=0,
                 collate_fn=None, pin_memory=False, drop_last=False, timeout=0, worker_init_fn=None,
                 multiprocessing_context=None, generator=None, *, prefetch_factor=None, persistent_workers=False,
                 pin_memory_device="", in_order=True, seed=None, transform=None, prefetch=None, workers=None):
        shuffle = bool(shuffle)
        if len(dataset) == 0:
            raise ValueError("DataLoader: the dataset is empty")
        self._check_batching(batch_size, shuffle, sampler, batch_sampler, drop_last)
        num_workers, queue_total = self._check_workers(num_workers, workers, prefetch, prefetch_factor, timeout,
                                                       persistent_workers, multiprocessing_context, worker_init_fn)
        if transform is not None and not callable(transform):
            raise TypeError(f"DataLoader: transform must be callable as transform(inputs, rng), got "
                            f"{type(transform).__name__}")
        if transform is not None and collate_fn is not None:
            raise ValueError("DataLoader: transform applies to batches from dataset.get_batch; with a "
                             "collate_fn, augment inside it")
        if transform is not None and batch_size is None:
            raise ValueError("DataLoader: transform augments batches; with batch_size=None there are none "
                             "(use a per-sample transform in the dataset)")
        if seed is not None and generator is not None:
            raise ValueError("DataLoader: give seed or generator, not both")
        if pin_memory_device and not str(pin_memory_device).startswith("cuda"):
            raise ValueError(f"DataLoader: pin_memory_device must be '' or a CUDA device, got {pin_memory_device!r}")

        self.dataset = dataset
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor if num_workers == 0 or prefetch_factor is not None \
            else DEFAULT_PREFETCH_FACTOR
        self.prefetch = queue_total if queue_total is not None else num_workers * (self.prefetch_factor or 0)
        self._queue_total = queue_total
        self.timeout = float(timeout)
        self.worker_init_fn = worker_init_fn
        self.persistent_workers = bool(persistent_workers)
        self.multiprocessing_context = multiprocessing_context
        self.in_order = bool(in_order)
        self.generator = generator
        self.collate_fn = collate_fn
        self.transform = transform
        self.pin_memory = bool(pin_memory)
        self.pin_memory_device = pin_memory_device
        self._pin = None
        if self.pin_memory:
            self._pin = pinning_backend()
            if self._pin is None:
                warnings.warn("'pin_memory' argument is set as true but no accelerator is found, then device "
                              "pinned memory won't be used.", UserWarning, stacklevel=2)
        self._initialised_workers = set()

        if seed is not None or generator is not None:
            self.seed = seed_from(seed if seed is not None else generator, "DataLoader")
        else:  # with a seeded sampler (DistributedSampler), its seed is the loader's too
            given = sampler if sampler is not None else getattr(batch_sampler, "sampler", None)
            self.seed = int(getattr(given, "seed", 0)) if given is not None else _draw_seed() if shuffle else 0
        self.shuffle = shuffle
        self._setup_order(batch_size, sampler, batch_sampler, bool(drop_last))

        self.epoch = 0
        self.wait_time = 0.0
        self.total_wait_time = 0.0
        self.last_delivered = None
        self._start = 0          # global position where the current/next pass begins
        self._batches_done = 0   # batches delivered since _start
        self._resume = False
        self._active = None

    # ---- arguments ----------------------------------------------------------------------------

    @staticmethod
    def _check_batching(batch_size, shuffle, sampler, batch_sampler, drop_last):
        if batch_sampler is not None and (batch_size != 1 or shuffle or sampler is not None or drop_last):
            raise ValueError("DataLoader: batch_sampler option is mutually exclusive with batch_size, shuffle, "
                             "sampler, and drop_last")
        if batch_size is None and drop_last:
            raise ValueError("DataLoader: batch_size=None option disables auto-batching and is mutually exclusive "
                             "with drop_last")
        if batch_size is not None:
            _check_int("batch_size", batch_size, 1)
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler option is mutually exclusive with shuffle (give either sampler "
                             "or shuffle=True, not both)")
        for name, given in (("sampler", sampler), ("batch_sampler", batch_sampler)):
            if given is not None and not hasattr(given, "order") and not (hasattr(given, "__iter__")
                                                                          and hasattr(given, "__len__")):
                raise TypeError(f"DataLoader: {name} must be iterable with a len() (or have order(epoch) and "
                                f"len()), got {type(given).__name__}")

    @staticmethod
    def _check_workers(num_workers, workers, prefetch, prefetch_factor, timeout, persistent_workers,
                       multiprocessing_context, worker_init_fn):
        """The number of worker threads, and the total queue depth of the older ``prefetch=``
        (None when not given)."""
        if workers is not None:
            _check_int("workers", workers, 1)
            if num_workers not in (0, workers):
                raise ValueError(f"DataLoader: workers is the older name of num_workers; got num_workers="
                                 f"{num_workers} and workers={workers}")
            num_workers = workers
        if isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)) or num_workers < 0:
            raise ValueError(f"DataLoader: num_workers option should be non-negative; use num_workers=0 to load "
                             f"in the calling thread, got {num_workers!r}")
        num_workers = int(num_workers)
        if prefetch is not None:
            if isinstance(prefetch, bool) or not isinstance(prefetch, (int, np.integer)) or prefetch < 0:
                raise ValueError(f"DataLoader: prefetch must be an int >= 0 (0: no thread), got {prefetch!r}")
            if prefetch_factor is not None:
                raise ValueError("DataLoader: give prefetch_factor (batches per worker) or the older prefetch "
                                 "(batches in all), not both")
            num_workers = 0 if prefetch == 0 else max(num_workers, 1)
        if num_workers == 0 and prefetch_factor is not None:
            raise ValueError("DataLoader: prefetch_factor option could only be specified with worker threads; "
                             "let num_workers > 0, otherwise set prefetch_factor to None")
        if prefetch_factor is not None:
            _check_int("prefetch_factor", prefetch_factor, 1)
        if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or timeout < 0:
            raise ValueError(f"DataLoader: timeout option should be non-negative, got {timeout!r}")
        if timeout > 0 and num_workers == 0:
            raise ValueError("DataLoader: timeout applies to batches built by worker threads; it needs "
                             "num_workers > 0")
        if persistent_workers and num_workers == 0:
            raise ValueError("DataLoader: persistent_workers option needs num_workers > 0")
        if multiprocessing_context is not None and num_workers == 0:
            raise ValueError(f"DataLoader: multiprocessing_context can only be used with worker loading "
                             f"(num_workers > 0), but got num_workers={num_workers}")
        if worker_init_fn is not None and not callable(worker_init_fn):
            raise TypeError(f"DataLoader: worker_init_fn must be callable, got {type(worker_init_fn).__name__}")
        return num_workers, (int(prefetch) if prefetch is not None else None)

    def _setup_order(self, batch_size, sampler, batch_sampler, drop_last):
        """Where the order comes from, and how many units of it make a batch."""
        self._batch_lists = False    # True: a user batch sampler, whose batches are the units
        if batch_sampler is not None:
            inner = getattr(batch_sampler, "sampler", None)
            if type(batch_sampler) is BatchSampler and hasattr(inner, "order"):
                sampler, self._per_batch, self._drop = inner, batch_sampler.batch_size, batch_sampler.drop_last
            else:
                sampler, self._per_batch, self._drop, self._batch_lists = None, 1, False, True
            self.batch_size, self.drop_last = None, False
        else:
            self._per_batch = 1 if batch_size is None else int(batch_size)
            self._drop = drop_last
            self.batch_size, self.drop_last = (None if batch_size is None else int(batch_size)), drop_last
        if sampler is None and not self._batch_lists:
            sampler = RandomSampler(self.dataset, seed=self.seed) if self.shuffle else SequentialSampler(self.dataset)
        self.sampler = sampler
        self.batch_sampler = batch_sampler if batch_sampler is not None else (
            BatchSampler(sampler, self.batch_size, drop_last) if self.batch_size is not None else None)
        self._auto_batch = batch_sampler is not None or batch_size is not None

    @property
    def workers(self):
        """The older name of ``num_workers``."""
        return self.num_workers

    # ---- the order of an epoch --------------------------------------------------------------

    def num_samples(self):
        """Units in this loader's share of an epoch (samples; batches with a user batch sampler)."""
        return len(self.batch_sampler) if self._batch_lists else len(self.sampler)

    def _batches_in(self, units):
        return units // self._per_batch if self._drop else -(-units // self._per_batch)

    def __len__(self):
        """Batches in a whole epoch (a resumed pass may have fewer)."""
        return self._batches_in(self.num_samples())

    def _sharded(self):
        return hasattr(self.sampler, "global_position")

    def order(self, epoch, start=0):
        """The sample indices this loader visits in ``epoch`` from global position ``start``
        (int64)."""
        if self._batch_lists:
            batches = self._plan(epoch, start)
            return np.concatenate(batches) if batches else np.zeros(0, np.int64)
        if self._sharded():
            return np.asarray(self.sampler.order(epoch, start), dtype=np.int64)
        if hasattr(self.sampler, "order"):
            full = np.asarray(self.sampler.order(epoch), dtype=np.int64)
        else:
            _tell_epoch(self.sampler, epoch)
            full = self._checked(np.asarray([int(i) for i in self.sampler], dtype=np.int64), "sampler")
        return full[start:]

    def _plan(self, epoch, start):
        """The units of ``epoch`` from ``start``: sample indices, or a user batch sampler's batches."""
        if not self._batch_lists:
            return self.order(epoch, start)
        _tell_epoch(self.batch_sampler, epoch)
        batches = self._checked([np.asarray(b, dtype=np.int64) for b in self.batch_sampler], "batch_sampler")
        return batches[start:]

    def _checked(self, units, name):
        """The positions of a resumable run count on ``len()``: an iteration must agree with it."""
        expected = self.num_samples()
        if len(units) != expected:
            raise RuntimeError(f"DataLoader: the {name} yielded {len(units)} items but its len() is {expected}")
        return units

    def _epoch_size(self):
        """Units in the epoch's global order (what ``position`` counts)."""
        if self._sharded():
            return int(self.sampler.dataset_size)
        return self.num_samples()

    def _units_left(self, epoch, start):
        if self._sharded():
            return len(self.sampler.order(epoch, start))
        return self._epoch_size() - start

    def _position(self, start, batches):
        if self._sharded():
            return self.sampler.global_position(start, batches, self._per_batch)
        return min(start + batches * self._per_batch, self._epoch_size())

    def _shuffles(self):
        return bool(getattr(self.sampler, "shuffle", False))

    def _rank(self):
        return int(getattr(self.sampler, "rank", 0)) if self._sharded() else 0

    # ---- state ------------------------------------------------------------------------------

    def set_epoch(self, epoch):
        """Start the next pass at the beginning of ``epoch``."""
        self._close_active()
        self.epoch, self._start, self._batches_done, self._resume = int(epoch), 0, 0, False

    def state_dict(self):
        """Where the caller stands: the epoch, the global position in it (units of the epoch's
        order consumed) and the batches this loader delivered since its pass began, plus what
        must match on resume. ``seed`` is the order's (a seeded sampler's, when there is one);
        restoring sets it on the loader and the sampler. Plain ints and bools."""
        seed = int(getattr(self.sampler, "seed", self.seed)) if self._sharded() else self.seed
        return {"epoch": self.epoch, "position": self._position(self._start, self._batches_done),
                "batches_done": self._batches_done, "seed": seed, "shuffle": self._shuffles(),
                "drop_last": self._drop, "batch_size": self.batch_size,
                "epoch_size": self._epoch_size(), "ranks": int(getattr(self.sampler, "num_replicas", 1))}

    def load_state_dict(self, state):
        """Resume: the next pass yields the units of ``state['epoch']`` after its position (see
        the module docstring for when that is exact). The batch size and, with a
        DistributedSampler, the number of ranks may differ from the run that saved the state;
        the data (its size, shuffling, drop_last) may not."""
        for key, here in (("shuffle", self._shuffles()), ("drop_last", self._drop),
                          ("epoch_size", self._epoch_size())):
            if state[key] != here:
                raise ValueError(f"DataLoader.load_state_dict: saved {key}={state[key]!r} but this loader "
                                 f"has {key}={here!r}; the saved position would not mean the same samples")
        position = state["position"]
        if isinstance(position, bool) or not isinstance(position, int) or not 0 <= position <= self._epoch_size():
            raise ValueError(f"DataLoader.load_state_dict: position={position!r} outside [0, {self._epoch_size()}]")
        self._close_active()
        self.seed = int(state["seed"])
        if hasattr(self.sampler, "seed"):
            self.sampler.seed = self.seed
        self.epoch, self._start, self._batches_done = int(state["epoch"]), position, 0
        if self._batches_in(self._units_left(self.epoch, position)) == 0:
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

    def _worker_init(self, w):
        """What a worker thread runs first: ``worker_init_fn(w)``, once per loader when persistent."""
        if self.worker_init_fn is None or (self.persistent_workers and w in self._initialised_workers):
            return None
        self._initialised_workers.add(w)
        return lambda: self.worker_init_fn(w)

    def _queue_depth(self, workers):
        if self._queue_total is not None:
            return max(1, -(-self._queue_total // workers))
        return self.prefetch_factor

    def _samples(self, indices, epoch, position):
        """``dataset[i]`` for each index, each read with its own seeded per-sample generator."""
        rank, samples = self._rank(), []
        for j, i in enumerate(indices):
            with seeded_draws([self.seed, int(epoch), rank, int(position), j]):
                samples.append(self.dataset[int(i)])
        return samples

    def _make_batch(self, epoch, start, plan, b):
        indices = plan[b] if self._batch_lists else plan[b * self._per_batch:(b + 1) * self._per_batch]
        position = self._position(start, b)
        if not self._auto_batch:
            batch = (self.collate_fn or default_convert)(self._samples(indices, epoch, position)[0])
        elif self.collate_fn is not None:
            batch = self.collate_fn(self._samples(indices, epoch, position))
        else:
            batch = self._collated(indices, epoch, position)
        return pin_batch(batch, self._pin) if self._pin is not None else batch

    def _collated(self, indices, epoch, position):
        """The batch without a collate_fn: gathered whole where the dataset can (a tuple of
        Tensors), else collated from samples; ``transform`` applied to its first field."""
        from ..tensor import Tensor
        if _gathers_batches(self.dataset):
            arrays = list(self.dataset.get_batch(np.asarray(indices, dtype=np.int64)))
            if self.transform is not None:
                arrays[0] = self._augment(arrays[0], epoch, position)
            return tuple(Tensor(a) for a in arrays)
        batch = default_collate(self._samples(indices, epoch, position))
        if self.transform is None:
            return batch
        if isinstance(batch, Tensor):
            return Tensor(self._augment(batch.data, epoch, position))
        if isinstance(batch, list) and batch and isinstance(batch[0], Tensor):
            batch[0] = Tensor(self._augment(batch[0].data, epoch, position))
            return batch
        raise TypeError(f"DataLoader: transform augments the first field of each batch, but this dataset's "
                        f"samples collate to a {type(batch).__name__}")

    def _augment(self, inputs, epoch, position):
        rng = np.random.default_rng([self.seed, int(epoch), int(position), self._rank()])
        return self.transform(inputs, rng)


class _LoaderIter:
    """One pass over a DataLoader: ``epoch`` from global position ``start``, skipping the first
    ``done`` batches (delivered by an earlier, superseded pass)."""

    def __init__(self, loader, epoch, start, done):
        self._closed, self._superseded, self._threads = True, False, []  # until the plan is known
        self._loader = loader
        self._epoch, self._start = epoch, start
        plan = loader._plan(epoch, start)
        self._next = done
        self._end = loader._batches_in(len(plan))
        self._closed = False
        self._held = None        # a batch fetched by peek(), not yet delivered
        if loader.num_workers > 0 and done < self._end:
            k = min(loader.num_workers, self._end - done)
            self._stop = threading.Event()
            self._queues = [queue.Queue(maxsize=loader._queue_depth(k)) for _ in range(k)]

            def make_batch(b):
                return loader._make_batch(epoch, start, plan, b)

            for w in range(k):
                thread = threading.Thread(target=_produce, name="pyneural-dataloader", daemon=True,
                                          args=(make_batch, range(done + w, self._end, k), self._queues[w],
                                                self._stop, loader._worker_init(w)))
                thread.start()
                self._threads.append(thread)
            self._first = done
        else:
            self._plan = plan

    def __iter__(self):
        return self

    def __len__(self):
        return self._end - self._next

    def _check_open(self):
        if self._closed and self._superseded:
            raise RuntimeError("DataLoader: this iterator was closed because a new pass over the same "
                               "loader started (a loader supports one pass at a time)")

    def peek(self):
        """The next batch without delivering it: it counts (the state, ``last_delivered``) only
        once ``next()`` returns it. Raises StopIteration at the end of the pass."""
        self._check_open()
        if self._held is None:
            if self._closed or self._next >= self._end:
                raise StopIteration
            self._held = self._timed_take()
        return self._held

    def __next__(self):
        self._check_open()
        if self._held is not None:
            batch, self._held = self._held, None
        elif self._closed:
            raise StopIteration
        elif self._next >= self._end:
            self.close()
            raise StopIteration
        else:
            batch = self._timed_take()
        loader = self._loader
        loader.last_delivered = BatchInfo(self._epoch, self._start, self._next)
        self._next += 1
        self._record_delivery()
        return batch

    def _timed_take(self):
        start = time.perf_counter()
        batch = self._take()
        waited = time.perf_counter() - start
        self._loader.wait_time += waited
        self._loader.total_wait_time += waited
        return batch

    def _take(self):
        if not self._threads:
            return self._loader._make_batch(self._epoch, self._start, self._plan, self._next)
        w = (self._next - self._first) % len(self._threads)
        q, thread = self._queues[w], self._threads[w]
        timeout = self._loader.timeout
        deadline = time.perf_counter() + timeout
        while True:
            try:
                item = q.get(timeout=0.1 if not timeout else max(0.0, min(0.1, deadline - time.perf_counter())))
                break
            except queue.Empty:
                if not thread.is_alive() and q.empty():
                    self.close()
                    raise RuntimeError("DataLoader: a prefetch worker ended without delivering its batch")
                if timeout and time.perf_counter() >= deadline:
                    self.close()
                    raise RuntimeError(f"DataLoader timed out after {timeout:g} seconds (worker {w} was building "
                                       f"batch {self._next} of the pass)") from None
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
        self._held = None
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
