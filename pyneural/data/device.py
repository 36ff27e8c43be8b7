"""Batches onto the GPU ahead of the step, on a side stream.

``CudaPrefetcher(batches)`` wraps any iterable of batches (tuples of host Tensors, e.g. a
DataLoader pass) and yields the same batches as CuPy-backed Tensors. Before handing out batch k it
has already enqueued the host-to-device copy of batch k+1 on its own non-blocking stream, from
pinned (page-locked) host memory, so that copy runs while the step of batch k computes. The
consumer's stream waits on an event recorded after each copy (a GPU-side wait: the host never
blocks), so a batch is never read before it has arrived.

CuPy is imported when a prefetcher is built, not when this module is: ``pyneural.data`` imports
cleanly on machines without a GPU, and building one there raises ImportError naming the package.
"""


class CudaPrefetcher:
    """Iterate over ``batches``, yielding each batch copied to the current CUDA device."""

    def __init__(self, batches):
        try:
            import cupy
            import cupyx
        except ImportError as e:
            raise ImportError("CudaPrefetcher: copying batches to the GPU needs CuPy (pip install cupy-cuda12x); "
                              "on the CPU iterate over the DataLoader directly") from e
        self._cupy, self._cupyx = cupy, cupyx
        self._batches = batches
        self._stream = cupy.cuda.Stream(non_blocking=True)

    def __len__(self):
        return len(self._batches)

    def _enqueue(self, batch):
        """Start copying ``batch`` on the side stream; returns (device batch, event, pinned buffers)."""
        from ..tensor import Tensor
        cupy, cupyx = self._cupy, self._cupyx
        moved, pinned = [], []
        with self._stream:
            for t in batch:
                host = t.data if isinstance(t, Tensor) else t
                buffer = cupyx.empty_pinned(host.shape, host.dtype)
                buffer[...] = host
                device = cupy.empty(host.shape, host.dtype)
                device.set(buffer, stream=self._stream)
                moved.append(Tensor(device))
                pinned.append(buffer)  # must outlive the asynchronous copy
            event = self._stream.record()
        return tuple(moved), event, pinned

    def __iter__(self):
        current_stream = self._cupy.cuda.get_current_stream
        it = iter(self._batches)
        first = next(it, None)
        pending = self._enqueue(first) if first is not None else None
        while pending is not None:
            batch, event, _ = pending
            following = next(it, None)
            pending = self._enqueue(following) if following is not None else None
            current_stream().wait_event(event)
            yield batch
