"""DistributedDataParallel: one model replica per rank, gradients averaged during backward.

Construction checks that every rank holds the same parameters (names, shapes, dtypes), copies
rank 0's values everywhere, plans the gradient buckets (bucket.py) and registers a
post-accumulate-grad hook on every parameter.

One training step, on each rank:

    out = ddp(x)              forward; starts a reduction round (and syncs buffers from rank 0)
    loss.backward()           each finished gradient is packed; each full bucket starts its
                              non-blocking collective at once, overlapping the rest of backward;
                              the last hook waits for what is still in flight and writes the
                              averaged gradients back into every ``p.grad``
    ddp.finish_gradient_sync()  no-op normally; completes the round when some parameter got no
                              gradient (its slot is then filled from ``p.grad`` or zeros)
    optimizer.step()          sees identical averaged gradients on every rank

So when ``backward()`` returns, ``.grad`` holds the average over ranks, as in PyTorch: clipping,
logging or any optimizer work unchanged. The only wait left for the optimizer step is the
communication still in flight when the last gradient appeared: the part of communication that
was not hidden behind backward, measured per step (``comm_summary``).

``no_sync()``: forwards run inside it start no round, so their backwards only accumulate into
``.grad`` locally; the first forward/backward after it reduces the accumulated sum.

The wrapper forwards attribute access to the module, so ``ddp.parameters()``,
``ddp.state_dict()``, ``ddp.train()`` are the module's own (no ``module.`` prefix in checkpoints).
"""
import contextlib
import functools
import os
import time

import numpy as np

from ..tensor import is_grad_enabled, wrap
from .bucket import GradReducer
from .collectives import allreduce_
from .comm import get_world, init, is_initialized
from .sync import broadcast_parameters, check_model_consistency, named_state
from .sync import broadcast_buffers as sync_buffers
from .timeline import COMMUNICATION, COMPUTE, Timeline
from .transport import array_module, cuda_aware


def _interval_union(intervals):
    """Total length covered by a set of (start, end) intervals."""
    total, reach = 0.0, None
    for start, end in sorted(intervals):
        if reach is None or start > reach:
            total += end - start
            reach = end
        elif end > reach:
            total += end - reach
            reach = end
    return total


def _device_direct_default(params):
    """CUDA-aware MPI for device gradients unless the library says no, or
    ``PYNEURAL_MPI_CUDA_AWARE=0`` (set it when ``pyneural doctor`` reports the direct transfer
    failing)."""
    if all(array_module(p.data) is np for p in params):
        return False
    if os.environ.get("PYNEURAL_MPI_CUDA_AWARE") == "0":
        return False
    if any(type(p.data).__module__ == "pyneural.cuda.emulator.xp" for p in params):
        return False  # the emulated device's arrays are no MPI buffers: stage them
    return cuda_aware()[0] is True


class DistributedDataParallel:
    """Data-parallel wrapper. ``bucket_cap_mb``: bucket size (MiB); ``compress``: None or
    ``'bf16'`` (float32 gradients travel as bfloat16); ``deterministic``: reduce by allgather and
    a rank-order sum (bitwise equal to one process accumulating the N micro-batches);
    ``broadcast_buffers``: copy rank 0's buffers before each synchronising training forward;
    ``timeline``: a Timeline that receives the bucket and wait spans."""

    def __init__(self, module, bucket_cap_mb=25, compress=None, deterministic=False, broadcast_buffers=True,
                 timeline=None, world=None, device_direct=None):
        if isinstance(bucket_cap_mb, bool) or not isinstance(bucket_cap_mb, (int, float)) or not bucket_cap_mb > 0:
            raise ValueError(f"DistributedDataParallel: bucket_cap_mb must be a number > 0, "
                             f"got {bucket_cap_mb!r}")
        if compress not in (None, "bf16"):
            raise ValueError(f"DistributedDataParallel: compress must be None or 'bf16', got {compress!r}")
        if not hasattr(module, "named_parameters"):
            raise TypeError(f"DistributedDataParallel: module must have named_parameters(), "
                            f"got {type(module).__name__}")
        self.__dict__["module"] = module
        self.world = world if world is not None else (get_world() if is_initialized() else init())
        named = [(name, p) for name, p in module.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("DistributedDataParallel: the module has no parameter that requires grad")
        check_model_consistency(self.world, module)
        broadcast_parameters(self.world, module)
        self._params = [p for _, p in named]
        if device_direct is None:
            device_direct = _device_direct_default(self._params)
        self.reducer = GradReducer(self.world, [(n, p.data) for n, p in named], cap_bytes=bucket_cap_mb * 2**20,
                                   compress=compress, deterministic=deterministic, device_direct=device_direct)
        self.bucket_cap_mb, self.compress, self.deterministic = bucket_cap_mb, compress, deterministic
        self.broadcast_buffers = broadcast_buffers and any(k == "buffer" for k, _, _ in named_state(module))
        self.timeline = timeline if timeline is not None else Timeline(self.world, enabled=False)
        self.require_sync = True
        self._round_syncs = False
        self._stats = np.zeros(4)  # rounds, communication busy s, exposed wait s, unpack s
        self._handles = [p.register_post_accumulate_grad_hook(functools.partial(self._grad_ready, i))
                         for i, p in enumerate(self._params)]

    def __getattr__(self, name):
        module = self.__dict__.get("module")
        if module is None:
            raise AttributeError(name)
        return getattr(module, name)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        if is_grad_enabled():
            self._round_syncs = self.require_sync
            if self._round_syncs:
                self.reducer.begin()
                if self.broadcast_buffers and getattr(self.module, "training", True):
                    sync_buffers(self.world, self.module)
        with self.timeline.span("forward"):
            return self.module(*args, **kwargs)

    @contextlib.contextmanager
    def no_sync(self):
        """Accumulate gradients locally: forwards inside start no reduction round."""
        previous, self.require_sync = self.require_sync, False
        try:
            yield
        finally:
            self.require_sync = previous

    def _grad_ready(self, index, param):
        if not self._round_syncs:
            return
        self.reducer.grad_ready(index, param.grad.data)
        if self.reducer.all_ready:
            self._finish()

    def _grad_or_none(self, index):
        grad = self._params[index].grad
        return None if grad is None else grad.data

    def finish_gradient_sync(self):
        """Complete the current round if backward left it unfinished (a parameter got no
        gradient on this rank). Every rank must call it; a no-op when the round is complete."""
        if self._round_syncs and not self.reducer.finished:
            self._finish()

    def _finish(self):
        reducer = self.reducer
        reducer.finish(fill=self._grad_or_none)
        for i, p in enumerate(self._params):
            if p.grad is None:
                p.grad = wrap(array_module(p.data).empty_like(p.data))
            reducer.average_into(i, p.grad.data)
        unpacked_at = time.perf_counter()
        intervals = [(b.launched_at, b.done_at) for b in reducer.buckets]
        self._stats += (1, _interval_union(intervals), reducer.finished_at - reducer.finish_started_at,
                        unpacked_at - reducer.finished_at)
        tl = self.timeline
        if tl.enabled:
            for b in reducer.buckets:
                op = "allgather" if b.deterministic else "allreduce"
                tl.record(f"{op} bucket {b.index}", b.launched_at, b.done_at, COMMUNICATION,
                          {"tensors": len(b.slots), "wire_bytes": b.wire_nbytes(), "step": reducer.step})
            tl.record("grad sync wait", reducer.finish_started_at, reducer.finished_at, COMPUTE)
            tl.record("grad average", reducer.finished_at, unpacked_at, COMPUTE)

    def comm_summary(self):
        """Communication per synchronised step, averaged over steps and ranks (collective):
        ``busy_ms`` (bucket collectives in flight), ``exposed_ms`` (waited for after the last
        gradient), ``hidden_fraction`` = 1 - exposed/busy, ``average_ms`` (copy-out), and the
        bytes each rank puts on the wire per step."""
        totals = self._stats.copy()
        if self.world.size > 1:
            allreduce_(self.world, totals, what="allreduce of communication statistics")
        rounds = max(totals[0], 1.0)
        busy, exposed, unpack = (totals[1:] / rounds * 1e3).tolist()
        hidden = min(max(1.0 - exposed / busy, 0.0), 1.0) if busy > 0 else 0.0
        return {"steps": int(totals[0] / self.world.size), "busy_ms": busy, "exposed_ms": exposed,
                "hidden_fraction": hidden, "average_ms": unpack,
                "buckets": len(self.reducer.buckets), "wire_bytes_per_step": self.reducer.wire_nbytes()}

    def remove_hooks(self):
        """Unregister the gradient hooks (the module trains locally again)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


def format_comm_summary(summary):
    """One line for the run summary."""
    return (f"communication: {summary['busy_ms']:.2f} ms/step in {summary['buckets']} bucket(s) "
            f"({summary['wire_bytes_per_step'] / 2**20:.2f} MiB/step/rank); not hidden behind backward: "
            f"{summary['exposed_ms']:.2f} ms/step ({100 * (1 - summary['hidden_fraction']):.0f}%)")
