"""Gradient buckets: pack gradients into a few flat arrays and reduce each as soon as it is full.

Planning. Parameters are taken in *reverse* registration order, because backward produces the
gradients of the last layers first, and packed greedily into buckets of at most ``cap_bytes``
(one bucket per dtype at a time; a parameter bigger than the cap gets a bucket to itself). A few
large messages use the network far better than one message per tensor, and the cap keeps the
first buckets small enough to leave backward early.

Launching. When a gradient is final (the post-accumulate hook), it is copied into its slot. When
a bucket's last slot is filled, the bucket's collective starts, non-blocking, while backward goes
on computing earlier layers. Collectives on a communicator must start in the same order on
every rank, but hooks may fire in a slightly different order on different ranks (a tie in the
graph walk), so bucket i is launched only after buckets 0..i-1: launches always follow bucket
order.

The last bucket. Nothing is left to overlap once the last gradient is ready: the step waits for
every bucket right away. So the last bucket is not launched by its hook but by ``finish``, as a
*blocking* collective (``MPI_Allreduce``), once the earlier buckets have completed. MPI's
blocking collectives are its fastest (Open MPI's non-blocking ones go through a generic
schedule engine that costs tens of microseconds per call), which makes a one-bucket model
reduce as fast as a raw ``MPI_Allreduce``. It is bounded like every other wait: the watchdog
thread times it (when MPI grants ``MPI_THREAD_MULTIPLE``; without it the last bucket stays
non-blocking, polled against the deadline). Completing the earlier buckets first keeps the
timeout report naming the first bucket that did not complete, and costs little: they share
the same link, and most of them completed during backward.

Progress. Open MPI and MPICH move a non-blocking collective forward only while the process is
inside an MPI call. With ``MPI_THREAD_MULTIPLE`` a background thread tests the buckets in flight
every 0.1 ms (progress.py); without it every hook tests them. Either way a multi-round
allreduce advances during backward rather than all at the end.

Reduction modes:
* default: ``Iallreduce`` with SUM in place on the bucket (or its bf16 packing, see compress.py);
* deterministic: ``Iallgather`` of every rank's bucket, then a sum in rank order
  ``((g0 + g1) + g2) + ...``: exactly what one process computes when it accumulates the N
  micro-batches one after the other, whatever algorithm or topology MPI picks.
Either way the bucket then holds the *sum*; ``average_into`` divides by N while copying out.
"""
import time

import numpy as np

from ._mpi import import_mpi
from .compress import bf16_sum_op, decode_bf16, encode_bf16
from .progress import ProgressThread
from .transport import HostWire, array_module, make_wire

# Receiving the watchdog's arrival notes every few steps keeps their backlog at a few hundred
# 8-byte messages while costing the latency-bound small-bucket case almost nothing.
DRAIN_EVERY = 16


def size_text(nbytes):
    """1536 -> '1.5 KiB': bucket sizes span bytes to hundreds of MiB."""
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} B"


class Slot:
    """Where one parameter's gradient sits inside its bucket."""
    __slots__ = ("index", "name", "shape", "offset", "size")

    def __init__(self, index, name, shape, offset):
        self.index, self.name, self.shape, self.offset = index, name, tuple(shape), offset
        self.size = int(np.prod(shape, dtype=np.int64))


class Bucket:
    """One flat array of gradients and the collective that reduces it."""

    def __init__(self, index, dtype, slots, xp, world, compress, deterministic, device_direct):
        self.index, self.dtype, self.slots = index, np.dtype(dtype), slots
        self.size = sum(s.size for s in slots)
        self.world, self.compress, self.deterministic = world, compress, deterministic
        self.data = xp.empty(self.size, dtype=self.dtype)
        # A user-defined MPI op (the bf16 sum) can only run on host memory: compressed device
        # buckets are staged even when MPI is CUDA-aware.
        self.packed = xp.empty(self.size, dtype=np.uint16) if compress else None
        send = self.data if self.packed is None else self.packed
        self.wire = make_wire(send, device_direct and (deterministic or not compress))
        self.gathered = None
        self._collective = None  # (args, start, run), built at the first launch: the wire buffer is fixed
        # A device bucket's wire is synchronised or staged before every launch, and the result of
        # a device, compressed or deterministic bucket needs work after the collective; a host
        # fp32 allreduce needs neither (its wire is the bucket, and MPI leaves the sum in place).
        self.on_device = type(self.wire) is not HostWire
        self.needs_complete = deterministic or compress is not None or self.on_device
        self.step = None
        self.reset()

    def reset(self):
        self.ready = 0
        self.filled = [False] * len(self.slots)
        self.pending = None
        self.launched_at = self.done_at = None

    @property
    def nbytes(self):
        return self.size * self.dtype.itemsize

    def wire_nbytes(self):
        return self.size * (2 if self.compress else self.dtype.itemsize)

    def describe(self, step):
        names = [s.name for s in self.slots]
        shown = ", ".join(names[:3]) + (f", ... (+{len(names) - 3})" if len(names) > 3 else "")
        op = "allgather" if self.deterministic else "allreduce"
        wire = " as bf16" if self.compress else ""
        return (f"{op} of gradient bucket {self.index} (step {step}; {len(names)} tensors: {shown}; "
                f"{size_text(self.nbytes)} {self.dtype}{wire})")

    def slot_view(self, slot):
        return self.data[slot.offset:slot.offset + slot.size].reshape(slot.shape)

    def launch(self, step, blocking=False):
        """Start this bucket's collective; its buffers must not be touched until it completes.
        ``blocking``: run it to completion now (under the watchdog) instead."""
        if self.packed is not None:
            encode_bf16(self.data, self.packed)
        if self._collective is None:
            self._collective = self._plan_collective(self.wire.to_wire())
        elif self.on_device:
            self.wire.to_wire()
        args, start, run = self._collective
        self.step = step
        seq = self.world.watchdog.arrive()
        self.launched_at = time.perf_counter()
        if blocking:
            self.done_at = self.world.watchdog.run_blocking(run, args, seq, self.describe_now)
        else:
            self.pending = (start(*args), seq, self.describe_now)

    def _plan_collective(self, buf):
        """``(args, start, run)``: the arguments, the non-blocking and the blocking call. Built
        once: every wire hands MPI the same buffer on every launch."""
        MPI, comm = import_mpi(), self.world.comm
        if self.deterministic:
            if self.gathered is None:
                self.gathered = array_module(buf).empty((self.world.size, buf.size), dtype=buf.dtype)
            return (buf, self.gathered), comm.Iallgather, comm.Allgather
        if self.packed is not None:
            return (MPI.IN_PLACE, [buf, MPI.UINT16_T], bf16_sum_op()), comm.Iallreduce, comm.Allreduce
        return (MPI.IN_PLACE, buf, MPI.SUM), comm.Iallreduce, comm.Allreduce

    def describe_now(self):
        """``describe`` for the step of the latest launch (the timeout report's wording)."""
        return self.describe(self.step)

    def complete(self):
        """After the collective: leave the sum over ranks, in the bucket's dtype, in ``data``."""
        if self.deterministic:
            self._sum_rows_in_rank_order()
            return
        self.wire.from_wire()
        if self.packed is not None:
            decode_bf16(self.packed, self.data)


    def _sum_rows_in_rank_order(self):
        """``((row0 + row1) + row2) + ...`` into ``data``; when the gathered rows sit on the host
        and the bucket on a device, summed on the host and copied over once."""
        rows = self.gathered
        xp = array_module(rows)
        same_side = xp is array_module(self.data)
        total = self.data if same_side else xp.empty(self.size, dtype=self.dtype)
        if self.packed is not None:
            decode_bf16(rows[0], total)
            row = xp.empty_like(total)
            for r in range(1, rows.shape[0]):
                total += decode_bf16(rows[r], row)
        elif rows.shape[0] == 1:
            total[...] = rows[0]
        else:
            xp.add(rows[0], rows[1], out=total)
            for r in range(2, rows.shape[0]):
                total += rows[r]
        if not same_side:
            self.data.set(total)


class GradReducer:
    """Buckets for a list of ``(name, array)`` parameters and the per-backward protocol:
    ``grad_ready`` for each gradient as it is finished, then ``finish``, then ``average_into``."""

    def __init__(self, world, params, cap_bytes, compress=None, deterministic=False, device_direct=False):
        if compress not in (None, "bf16"):
            raise ValueError(f"GradReducer: compress must be None or 'bf16', got {compress!r}")
        if compress == "bf16":
            bad = [f"{n} ({a.dtype})" for n, a in params if a.dtype != np.float32]
            if bad:
                raise TypeError(f"GradReducer: bf16 compression needs float32 gradients, got {', '.join(bad)}")
        if not cap_bytes > 0:
            raise ValueError(f"GradReducer: cap_bytes must be > 0, got {cap_bytes!r}")
        self.world = world
        self.slot_of = {}
        plans, open_plan = [], {}  # open_plan: dtype -> [xp, slots, elements used]
        for index in reversed(range(len(params))):
            name, array = params[index]
            dtype = np.dtype(array.dtype)
            plan = open_plan.get(dtype)
            if plan is None or (plan[2] and (plan[2] + array.size) * dtype.itemsize > cap_bytes):
                plan = open_plan[dtype] = [array_module(array), [], 0]
                plans.append((dtype, plan))
            plan[1].append(Slot(index, name, array.shape, plan[2]))
            plan[2] += array.size
        self.buckets = [Bucket(i, dtype, slots, xp, world, compress, deterministic, device_direct)
                        for i, (dtype, (xp, slots, _)) in enumerate(plans)]
        self._completing = [b for b in self.buckets if b.needs_complete]
        for bucket in self.buckets:
            for k, slot in enumerate(bucket.slots):
                self.slot_of[slot.index] = (bucket, k)
        self.step = 0
        self._full = 0  # buckets whose every slot is filled, this round
        self._next_launch = 0
        self._in_flight = []
        self._progress = None  # the ProgressThread, created at the first launch when MPI allows
        self._progress_allowed = None  # MPI_THREAD_MULTIPLE granted (asked once, at the first launch)
        self.finished = False
        self.finish_started_at = self.finished_at = None

    # -- one backward ------------------------------------------------------------------------
    def begin(self):
        """Start a new round. Refuses while the previous one is half done: some parameter got
        no gradient, and reducing now would mismatch the other ranks' collectives."""
        if not self.finished and self.started:
            missing = [s.name for b in self.buckets for k, s in enumerate(b.slots) if not b.filled[k]]
            raise RuntimeError(
                "DistributedDataParallel: the previous backward produced no gradient for "
                f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}, so its reduction never "
                "finished. Call finish_gradient_sync() after backward (before optimizer.step()) when "
                "some parameters may go unused.")
        for bucket in self.buckets:
            bucket.reset()
        self._full = 0
        self._next_launch = 0
        self._in_flight = []
        self.finished = False
        self.finish_started_at = self.finished_at = None
        self.step += 1

    @property
    def started(self):
        return any(b.ready for b in self.buckets) or self._next_launch > 0

    @property
    def all_launched(self):
        return self._next_launch == len(self.buckets)

    @property
    def all_ready(self):
        """Every gradient of this round is packed: time for ``finish``."""
        return self._full == len(self.buckets)

    def grad_ready(self, index, grad):
        """Gradient of parameter ``index`` is final: pack it, launch what is ready, and give the
        collectives in flight a turn."""
        bucket, k = self.slot_of[index]
        if bucket.filled[k] or self.finished:
            raise RuntimeError(f"DistributedDataParallel: gradient of {bucket.slots[k].name} became ready "
                               f"twice in one step (a second backward without a forward in between?)")
        slot = bucket.slots[k]
        bucket.slot_view(slot)[...] = grad
        bucket.filled[k] = True
        bucket.ready += 1
        if bucket.ready == len(bucket.slots):
            self._full += 1
            self._launch_in_order(keep_last=True)
        self.progress()

    def _launch_in_order(self, keep_last=False):
        """Launch the full buckets that follow the launched ones; ``keep_last``: not the last
        bucket (``finish`` runs it blocking)."""
        end = len(self.buckets) - 1 if keep_last else len(self.buckets)
        if self._next_launch >= end:
            return
        if self._progress_allowed is None:
            MPI = import_mpi()
            self._progress_allowed = MPI.Query_thread() >= MPI.THREAD_MULTIPLE
        if self._progress is None and self._progress_allowed:
            self._progress = ProgressThread()
        while self._next_launch < end:
            bucket = self.buckets[self._next_launch]
            if bucket.ready < len(bucket.slots):
                return
            bucket.launch(self.step)
            if self._progress is not None:
                self._progress.add(bucket)
            else:
                self._in_flight.append(bucket)
            self._next_launch += 1

    def progress(self):
        """Test the collectives in flight (drives MPI progress); note which finished. Only
        needed without the progress thread."""
        if not self._in_flight:
            return
        MPI = import_mpi()
        done = MPI.Request.Testsome([b.pending[0] for b in self._in_flight])
        if done:
            now = time.perf_counter()
            for i in done:
                self._in_flight[i].done_at = now
            self._in_flight = [b for b in self._in_flight if b.done_at is None]

    def finish(self, fill=None):
        """Launch whatever has not been (unfilled slots take ``fill(index)``, an array or None
        for zeros), wait for every collective under the watchdog, and leave the sums in the
        buckets."""
        if self.finished:
            return
        self.finish_started_at = time.perf_counter()
        if not self.all_ready:  # some parameters got no gradient (a walk over every slot: not per step)
            for bucket in self.buckets[self._next_launch:]:
                for k, slot in enumerate(bucket.slots):
                    if not bucket.filled[k]:
                        value = fill(slot.index) if fill is not None else None
                        bucket.slot_view(slot)[...] = 0 if value is None else value
                        bucket.filled[k] = True
                        bucket.ready += 1
            self._full = len(self.buckets)
        watchdog = self.world.watchdog
        self._launch_in_order(keep_last=watchdog.bounds_blocking_calls)
        in_flight, self._in_flight = self._in_flight, []
        if self._progress is not None:
            in_flight += self._progress.take_all()
        if in_flight:
            for bucket, done_at in zip(in_flight, watchdog.wait([b.pending for b in in_flight])):
                bucket.done_at = done_at
        if not self.all_launched:
            self.buckets[-1].launch(self.step, blocking=True)
            self._next_launch += 1
        self.finished_at = time.perf_counter()
        for bucket in self._completing:
            bucket.complete()
        self.finished = True
        if self.step % DRAIN_EVERY == 0:
            self.world.watchdog.drain()

    def reduce_packed(self):
        """One round over whatever the buckets hold now, as if every gradient had just been
        packed: the collectives DDP issues, without the packing (benchmarks, self-tests)."""
        self.begin()
        for bucket in self.buckets:
            bucket.filled = [True] * len(bucket.slots)
            bucket.ready = len(bucket.slots)
        self._full = len(self.buckets)
        self._launch_in_order(keep_last=True)
        self.finish()

    def average_into(self, index, out):
        """Write the mean over ranks of parameter ``index``'s gradient into ``out``."""
        bucket, k = self.slot_of[index]
        xp = array_module(out)
        xp.divide(bucket.slot_view(bucket.slots[k]), self.world.size, out=out)

    def wire_nbytes(self):
        return sum(b.wire_nbytes() for b in self.buckets)
