"""Batches onto a CUDA device ahead of the step: page-locked host batches and a side-stream copy.

``pin_batch(batch, backend)`` copies every host Tensor (and numpy array) of a batch into
page-locked memory (``backend.pinned_empty``), the only memory a host-to-device copy can read
asynchronously; ``DataLoader(pin_memory=True)`` does it on its worker threads, so pinning
overlaps the step too.

``DevicePrefetcher(loader, device)`` iterates over ``loader`` (any iterable of batches; a
DataLoader gets exact bookkeeping, see below) and yields each batch with its Tensors on
``device``. Before handing out batch i it has enqueued the copy of batch i+1 on its own
non-blocking stream, so that copy runs while step i computes. Three orderings make it safe:

* the side stream first waits on an event recorded on the consumer's (current) stream: device
  memory just freed by the host may still be read by kernels already enqueued there, and the copy
  into a new buffer must not overtake them (what ``record_stream`` does for PyTorch);
* the consumer's stream waits on an event recorded after each batch's copies (a device-side wait:
  the host does not block), so a batch is never read before it has arrived;
* the host buffers a copy reads (the pinned staging buffers, or the loader's pinned batch) are
  kept until that copy's event has completed: two batches later, or when the pass ends or is
  closed (then the host waits for the last copies).

Host batches that are not pinned already are staged through a pinned buffer first.
``wait_time`` is the time the caller spent blocked in ``next()`` during the current (or last)
pass: waiting for the loader, and staging and enqueueing the copies; ``total_wait_time`` the same
over the prefetcher's life. The same calls run on the emulated device (where every copy is
finished when it returns) and on a GPU.

With a DataLoader, the batch fetched ahead is not counted as delivered (the loader's iterator
``peek``s it), so the loader's ``state_dict`` and ``last_delivered`` describe the batch the step is
working on, and a checkpoint taken during step i resumes at batch i+1, as without a prefetcher.
"""
import collections
import collections.abc
import time

import numpy as np

from ..tensor import Tensor

_END = object()  # the end of the batches, distinct from any batch a collate_fn may return


def map_arrays(fn, batch):
    """``batch`` with ``fn`` applied to the array of every Tensor (re-wrapped as a Tensor) and to
    every numpy array, through tuples, lists, dicts and namedtuples; other leaves unchanged."""
    if isinstance(batch, Tensor):
        return Tensor(fn(batch.data))
    if isinstance(batch, np.ndarray):
        return fn(batch)
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(map_arrays(fn, b) for b in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(map_arrays(fn, b) for b in batch)
    if isinstance(batch, collections.abc.Mapping):
        mapped = {key: map_arrays(fn, value) for key, value in batch.items()}
        try:
            return type(batch)(mapped)
        except TypeError:
            return mapped
    return batch


def pinning_backend():
    """The CUDA backend module when a CUDA device (or the emulated one) can be used, else None."""
    from .. import backend
    try:
        return backend.for_device("cuda")
    except (RuntimeError, ImportError):
        return None


def pin_batch(batch, be):
    """``batch`` with its host arrays copied into page-locked memory from backend ``be``."""
    def pin(a):
        if type(a) is not np.ndarray or be.is_pinned(a):
            return a
        pinned = be.pinned_empty(a.shape, a.dtype)
        pinned[...] = a
        return pinned
    return map_arrays(pin, batch)


class DevicePrefetcher:
    """Iterate over ``loader``, yielding each batch copied to CUDA ``device`` (see the module
    docstring). ``len()`` is the loader's."""

    def __init__(self, loader, device="cuda"):
        from .. import backend
        dev = backend.device(device)
        if dev.type != "cuda":
            raise ValueError(f"DevicePrefetcher: copies batches to a CUDA device, got {dev}; on the CPU "
                             f"iterate over the loader directly")
        self._backend = backend.for_device(dev)  # RuntimeError naming why when the device is unavailable
        from ..cuda import _backend
        self._xp = _backend.cupy()
        self.loader = loader
        self.device = dev
        with self._xp.cuda.Device(dev.index):
            self._stream = self._xp.cuda.Stream(non_blocking=True)
        self.wait_time = 0.0
        self.total_wait_time = 0.0

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        self.wait_time = 0.0
        return _PrefetchIter(self, iter(self.loader))

    def _copy(self, host, keep):
        """Enqueue the copy of one host array on the side stream; returns the device array."""
        if type(host) is not np.ndarray:  # already on a device: a no-op as Tensor.to would be
            return host
        source = host
        if not (host.flags.c_contiguous and self._backend.is_pinned(host)):
            source = self._backend.pinned_empty(host.shape, host.dtype)
            source[...] = host
        keep.append(source)
        out = self._xp.empty(source.shape, source.dtype)
        out.set(source, stream=self._stream)
        return out

    def stage(self, batch):
        """Start copying ``batch`` to the device; returns ``(device batch, copies-done event,
        host buffers the copies read)``."""
        xp = self._xp
        with xp.cuda.Device(self.device.index):
            self._stream.wait_event(xp.cuda.get_current_stream().record())
            keep = []
            with self._stream:
                moved = map_arrays(lambda a: self._copy(a, keep), batch)
                done = self._stream.record()
        return moved, done, keep

    def consume(self, done):
        """Make the consumer's stream wait for a staged batch's copies."""
        with self._xp.cuda.Device(self.device.index):
            self._xp.cuda.get_current_stream().wait_event(done)


class _PrefetchIter:
    def __init__(self, prefetcher, batches):
        self._prefetcher = prefetcher
        self._batches = batches
        self._peek = getattr(batches, "peek", None)  # a DataLoader pass: fetch ahead without delivering
        self._ahead = None       # (device batch, event, host buffers) of the next batch
        self._started = False
        self._in_flight = collections.deque()

    def __iter__(self):
        return self

    def __len__(self):
        return len(self._batches)

    def _fetch_ahead(self):
        """The next host batch, or _END; with a DataLoader it stays undelivered until next()."""
        try:
            return self._peek() if self._peek is not None else next(self._batches)
        except StopIteration:
            return _END

    def __next__(self):
        p = self._prefetcher
        start = time.perf_counter()
        if not self._started:
            self._started = True
            self._ahead = self._stage_or_none(self._fetch_ahead())
        if self._ahead is None:
            self._release_all()
            raise StopIteration
        batch, done, keep = self._ahead
        if self._peek is not None:
            next(self._batches)  # the batch fetched ahead is now delivered: the loader's state moves on
        self._in_flight.append((done, keep))
        self._ahead = self._stage_or_none(self._fetch_ahead())
        while len(self._in_flight) > 2:  # copies two batches old: long finished, release their buffers
            old_done, _ = self._in_flight.popleft()
            old_done.synchronize()
        p.consume(done)
        waited = time.perf_counter() - start
        p.wait_time += waited
        p.total_wait_time += waited
        return batch

    def _stage_or_none(self, host_batch):
        return None if host_batch is _END else self._prefetcher.stage(host_batch)

    def _release_all(self):
        """Drop the host buffers of every copy still in flight, once each has completed: a pinned
        buffer returned to the pool too early could be refilled while the copy still reads it."""
        if self._ahead is not None:
            self._in_flight.append(self._ahead[1:])
            self._ahead = None
        while self._in_flight:
            done, _ = self._in_flight.popleft()
            done.synchronize()

    def close(self):
        """End the pass early (the DataLoader's workers stop); waits for the copies in flight."""
        close = getattr(self._batches, "close", None)
        if close is not None:
            close()
        self._release_all()

    def __del__(self):
        self._release_all()
