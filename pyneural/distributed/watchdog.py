"""Timeouts for collectives: abort the job, naming what hung and who never came, instead of hanging.

MPI has no timed wait, and a collective that one rank never joins blocks the others forever.
The watchdog bounds every wait pyneural.distributed makes, and it can say *who* is missing:

Arrival notes. Collectives on a communicator are matched by call order, so numbering them
(``seq`` 1, 2, 3, ... identically on every rank) names each one. Right before it starts
collective ``seq``, a rank sends a tiny note carrying ``seq`` to every peer, on a duplicate of the
communicator (its own context: a note can never match a training message). A rank that times
out on ``seq`` reads the notes that reached it: a peer whose latest note is below ``seq`` had not
arrived. Notes are eager 8-byte messages, N-1 per collective; ``drain()`` receives the backlog once
per training step so it never grows.

Timed waits. With ``MPI_THREAD_MULTIPLE`` (mpi4py's default request; Open MPI and MPICH grant
it) the caller blocks in ``MPI_Waitany`` at full speed, progressing the transfer inside MPI,
and only posts the wait (an attribute store: no lock, no wake-up, so a short wait costs nothing
extra). A daemon thread looks at the posted wait every ``timeout/20`` seconds (0.05 to 1 s);
if it is past its deadline, the thread writes the report and calls ``MPI.COMM_WORLD.Abort``.
Without thread support the caller polls ``Testany`` and checks the clock itself.

The timeout counts from the moment a rank starts waiting, not from the launch: a bucket launched
early in backward may legitimately stay in flight for the rest of it.
"""
import threading
import time

import numpy as np

from ._mpi import abort_job, import_mpi

ARRIVAL_TAG = 0x5057  # any tag works: the notes travel on their own duplicated communicator


def _ranks_text(ranks):
    """[1, 2, 3, 7] -> '1-3, 7': readable even when hundreds of ranks are missing."""
    parts, start = [], None
    for i, r in enumerate(ranks):
        if start is None:
            start = r
        if i + 1 == len(ranks) or ranks[i + 1] != r + 1:
            parts.append(str(start) if start == r else f"{start}-{r}")
            start = None
    return ", ".join(parts)


class _Watch:
    """One timed wait: what is pending, when each finished, and the deadline."""

    def __init__(self, pending, deadline):
        self.pending = pending
        self.done_at = [None] * len(pending)
        self.deadline = deadline


class Watchdog:
    """Numbers the collectives of ``comm``, announces arrivals, and bounds waits by ``timeout``
    seconds (None: wait forever, but still number and announce)."""

    def __init__(self, comm, timeout):
        self.MPI = import_mpi()
        self.timeout = timeout
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.seq = 0
        self.last_seen = [0] * self.size
        self._notes = comm.Dup() if self.size > 1 else None
        self._send_requests, self._send_notes = [], []
        self._lock = threading.Lock()
        self._threaded = self.MPI.Query_thread() >= self.MPI.THREAD_MULTIPLE
        self._watch = None
        self._thread = None

    def arrive(self):
        """Call right before starting a collective; returns its sequence number."""
        self.seq += 1
        self.last_seen[self.rank] = self.seq
        if self._notes is not None:
            note = np.array([self.seq], dtype=np.int64)
            with self._lock:
                for peer in range(self.size):
                    if peer != self.rank:
                        self._send_requests.append(self._notes.Isend(note, dest=peer, tag=ARRIVAL_TAG))
                self._send_notes.append(note)  # a send buffer must outlive its request
        return self.seq

    def drain(self):
        """Receive the arrival notes that have come in and retire our completed note sends."""
        if self._notes is None:
            return
        MPI = self.MPI
        with self._lock:
            status, note = MPI.Status(), np.empty(1, dtype=np.int64)
            while self._notes.Iprobe(source=MPI.ANY_SOURCE, tag=ARRIVAL_TAG, status=status):
                src = status.Get_source()
                self._notes.Recv(note, source=src, tag=ARRIVAL_TAG)
                self.last_seen[src] = max(self.last_seen[src], int(note[0]))
            if MPI.Request.Testall(self._send_requests):
                self._send_requests.clear()
                self._send_notes.clear()

    def wait(self, pending):
        """Block until every request in ``pending`` (a list of ``(request, seq, what)``, ``what``
        naming the operation for the report, or a callable returning that name; ``seq`` None for a
        point-to-point transfer, whose report names only ``what``) has completed.
        Returns the ``time.perf_counter()`` at which each completed, in the same order."""
        if not pending:
            return []
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        watch = _Watch(pending, deadline)
        requests = [p[0] for p in pending]
        if watch.deadline is None or self._threaded:
            self._watch_start(watch)
            try:
                for _ in pending:
                    i = self.MPI.Request.Waitany(requests)
                    watch.done_at[i] = time.perf_counter()
            finally:
                self._watch_stop()
        else:
            left = len(pending)
            while left:
                i, done = self.MPI.Request.Testany(requests)
                if done and i != self.MPI.UNDEFINED:
                    watch.done_at[i] = time.perf_counter()
                    left -= 1
                elif time.monotonic() > watch.deadline:
                    self._expire(watch)
        return watch.done_at

    @property
    def bounds_blocking_calls(self):
        """Whether ``run_blocking`` can enforce the timeout (it needs the watchdog thread)."""
        return self.timeout is None or self._threaded

    def run_blocking(self, call, seq, what):
        """Run ``call()``, a blocking collective, under the deadline (the watchdog thread
        aborts the job if it has not returned in time); returns the ``perf_counter`` at its end.
        Requires ``bounds_blocking_calls``."""
        if not self.bounds_blocking_calls:
            raise RuntimeError("Watchdog.run_blocking: a timeout on a blocking call needs MPI_THREAD_MULTIPLE")
        watch = _Watch([(None, seq, what)], None if self.timeout is None else time.monotonic() + self.timeout)
        self._watch_start(watch)
        try:
            call()
        finally:
            self._watch_stop()
        return time.perf_counter()

    def _watch_start(self, watch):
        if watch.deadline is None:
            return
        self._watch = watch
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pyneural-watchdog", daemon=True)
            self._thread.start()

    def _watch_stop(self):
        self._watch = None

    def _run(self):
        while True:
            period = min(max((self.timeout or 1.0) / 20, 0.05), 1.0)
            time.sleep(period)
            watch = self._watch
            if watch is not None and time.monotonic() > watch.deadline:
                self._expire(watch)

    def _expire(self, watch):
        """The deadline passed: name the first unfinished operation and the absent ranks, then
        abort the job. Never returns."""
        first = next(i for i, t in enumerate(watch.done_at) if t is None)
        _, seq, what = watch.pending[first]
        what = what() if callable(what) else what
        if seq is None:  # a point-to-point transfer: ``what`` names the peer it waits for
            abort_job(f"pyneural.distributed: timeout: {what} did not complete within {self.timeout:g} s on rank "
                      f"{self.rank}; aborting the job.", rank=self.rank)
        self.drain()
        missing = [r for r in range(self.size) if self.last_seen[r] < seq]
        lines = [f"pyneural.distributed: timeout: {what} (collective #{seq}) did not complete within "
                 f"{self.timeout:g} s on rank {self.rank}; aborting the job."]
        if missing:
            lines.append(f"ranks that had not arrived: {_ranks_text(missing)}")
        else:
            lines.append("every rank had arrived: the transfer itself stalled (check the network "
                         "interfaces, see btl_tcp_if_include / UCX_NET_DEVICES)")
        abort_job("\n".join(lines), rank=self.rank)
