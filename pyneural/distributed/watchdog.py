"""Timeouts for collectives: abort the job, naming what hung and who never came, instead of hanging.

MPI has no timed wait, and a collective that one rank never joins blocks the others forever.
The watchdog bounds every wait pyneural.distributed makes, and it can say *who* is missing:

Arrival. Collectives on a communicator are matched by call order, so numbering them (``seq``
1, 2, 3, ... identically on every rank) names each one. A rank that times out on ``seq`` needs each
peer's latest number: a peer below ``seq`` had not arrived. With the liveness probes below, the
replies carry it. Without them (no ``MPI_THREAD_MULTIPLE``), a rank sends, right before it starts
collective ``seq``, a tiny note carrying ``seq`` to every peer, on a duplicate of the communicator
(its own context: a note can never match a training message), and the rank that times out reads
the notes that reached it. Notes are eager 8-byte messages, N-1 per collective; ``drain()``
receives the backlog once per training step so it never grows. With the probes no note is sent:
over TCP a note costs about 25 us per collective, 7% of a 1 MiB allreduce on this machine.

Timed waits. With ``MPI_THREAD_MULTIPLE`` (mpi4py's default request; Open MPI and MPICH grant
it) the caller blocks in ``MPI_Waitany`` at full speed, progressing the transfer inside MPI,
and only posts the wait (an attribute store: no lock, no wake-up, so a short wait costs nothing
extra). A daemon thread looks at the posted wait every ``timeout/20`` seconds (0.05 to 1 s);
if it is past its deadline, the thread writes the report and calls ``MPI.COMM_WORLD.Abort``.
Without thread support the caller polls ``Testany`` and checks the clock itself.

The timeout counts from the moment a rank starts waiting, not from the launch: a bucket launched
early in backward may legitimately stay in flight for the rest of it.

Liveness. "Every rank had arrived" cannot tell a stalled transfer from a peer that stopped
(SIGSTOP, a debugger, a swapped-out or frozen host) after it arrived, and "had not arrived"
cannot tell a peer that is busy elsewhere from one that froze before arriving. So, with
``MPI_THREAD_MULTIPLE``, every rank runs the daemon thread from the start, and it answers
liveness probes on the notes communicator: a rank whose wait has lasted one period probes its
peers every period, each live peer's thread replies with its latest collective number (a
progress counter that refreshes the arrival notes). A stopped process stops all its threads, so
a peer that sent nothing during the second half of the wait is named, with its host and pid, as
not responding; a peer that replies is running, just not in this collective. (Whether a stopped
peer had arrived is not known without notes, so it is only named as not responding.) Nothing is sent
while waits stay shorter than one period (``timeout/20``, 0.05 to 1 s). Host names and pids are
gathered once, when the watchdog is built. A rank that dies outright is normally reported by the
launcher first (``mpirun`` notices the exit and ends the job); one it misses looks stopped. Time
a rank spends frozen itself (a gap between the thread's wake-ups) does not count against its own
deadline: a job suspended and resumed as a whole carries on, and a stopped rank that is resumed
does not blame its peers.
"""
import atexit
import os
import threading
import time

import numpy as np

from ._mpi import abort_job, import_mpi

# Any tags work: the notes and probes travel on their own duplicated communicator.
ARRIVAL_TAG, PROBE_TAG, REPLY_TAG = 0x5057, 0x5058, 0x5059
HOST_BYTES = 256  # MPI_MAX_PROCESSOR_NAME in Open MPI and MPICH
SHOWN_RANKS = 8  # ranks named one by one in a report; beyond that, ranges and host names
FROZEN_SLACK_S = 1.0  # a look at a watch this much later than due: this process was frozen


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


class Peer:
    """Who a rank of the communicator is: its rank in ``MPI.COMM_WORLD``, pid and host."""
    __slots__ = ("world_rank", "pid", "host")

    def __init__(self, world_rank, pid, host):
        self.world_rank, self.pid, self.host = world_rank, pid, host

    def __repr__(self):
        return f"Peer(world_rank={self.world_rank}, pid={self.pid}, host={self.host!r})"


def _gather_peers(comm, MPI):
    """Every rank's ``Peer``, indexed by its rank in ``comm`` (collective: two allgathers)."""
    ids = np.array([MPI.COMM_WORLD.Get_rank(), os.getpid()], dtype=np.int64)
    host = np.zeros(HOST_BYTES, dtype=np.uint8)
    name = MPI.Get_processor_name().encode()[:HOST_BYTES - 1]
    host[:len(name)] = np.frombuffer(name, dtype=np.uint8)
    all_ids = np.empty((comm.Get_size(), 2), dtype=np.int64)
    all_hosts = np.empty((comm.Get_size(), HOST_BYTES), dtype=np.uint8)
    comm.Allgather(ids, all_ids)
    comm.Allgather(host, all_hosts)
    return [Peer(int(i[0]), int(i[1]), h.tobytes().rstrip(b"\0").decode(errors="replace"))
            for i, h in zip(all_ids, all_hosts)]


class _Watch:
    """One timed wait: what is pending, when each finished, and the deadline."""
    __slots__ = ("pending", "done_at", "deadline", "started", "last_tick")

    def __init__(self, pending, deadline):
        self.pending = pending
        self.done_at = [None] * len(pending)
        self.deadline = deadline
        self.started = self.last_tick = time.monotonic()

    def tick(self, now, due):
        """Note that this process is running at ``now``, ``due`` seconds after the last tick was
        meant to be followed by this one. A gap longer than that plus any scheduling delay is
        time this process was frozen (SIGSTOP, a suspended job): it does not count against the
        deadline, so a job suspended and resumed as a whole carries on, and a rank that was
        stopped does not blame its peers for its own pause."""
        frozen = now - self.last_tick - due
        self.last_tick = now
        if frozen > FROZEN_SLACK_S and self.deadline is not None:
            self.deadline += frozen
            self.started += frozen


_RUNNING = []  # watchdogs whose thread runs: stopped at exit, before mpi4py finalizes MPI


@atexit.register
def _stop_threads():
    for watchdog in _RUNNING:
        watchdog._stopping.set()
    for watchdog in _RUNNING:
        watchdog._thread.join(timeout=5.0)


class Watchdog:
    """Numbers the collectives of ``comm``, announces arrivals, answers and sends liveness
    probes, and bounds waits by ``timeout`` seconds (None: wait forever, but still number and
    announce). Collective: every rank of ``comm`` builds its watchdog at the same time."""

    def __init__(self, comm, timeout):
        MPI = self.MPI = import_mpi()
        self.timeout = timeout
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.seq = 0
        self.last_seen = [0] * self.size
        self._notes = comm.Dup() if self.size > 1 else None
        self.peers = _gather_peers(self._notes if self._notes is not None else comm, MPI)
        self._send_requests, self._send_notes = [], []
        self._lock = threading.Lock()
        self._threaded = MPI.Query_thread() >= MPI.THREAD_MULTIPLE
        self._watch = None
        self._thread = None
        self._stopping = threading.Event()
        # Liveness (the daemon thread's alone): when each peer was last heard from, our probe
        # and reply sends in flight, and receive buffers.
        self.liveness = self._threaded and self._notes is not None
        self.last_heard = [None] * self.size
        self._probe_sends = []
        self._heard = np.empty(1, dtype=np.int64)
        self._liveness_error = None
        # Arrival notes only where no probe reply can tell a peer's collective number.
        self._send_arrivals = self._notes is not None and not self.liveness
        if self.liveness:
            self._start_thread()

    @property
    def period(self):
        """How often the daemon thread wakes: checks the deadline, answers and sends probes."""
        return min(max((self.timeout or 20.0) / 20, 0.05), 1.0)

    def arrive(self):
        """Call right before starting a collective; returns its sequence number."""
        self.seq += 1
        self.last_seen[self.rank] = self.seq
        if self._send_arrivals:
            note = np.array([self.seq], dtype=np.int64)
            with self._lock:
                for peer in range(self.size):
                    if peer != self.rank:
                        self._send_requests.append(self._notes.Isend(note, dest=peer, tag=ARRIVAL_TAG))
                self._send_notes.append(note)  # a send buffer must outlive its request
        return self.seq

    def drain(self):
        """Receive the arrival notes that have come in and retire our completed note sends."""
        if not self._send_arrivals:
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
                else:
                    now = time.monotonic()
                    watch.tick(now, 0.0)
                    if now > watch.deadline:
                        self._expire(watch)
        return watch.done_at

    @property
    def bounds_blocking_calls(self):
        """Whether ``run_blocking`` can enforce the timeout (it needs the watchdog thread)."""
        return self.timeout is None or self._threaded

    def run_blocking(self, call, args, seq, what):
        """Run ``call(*args)``, a blocking collective, under the deadline (the watchdog thread
        aborts the job if it has not returned in time); returns the ``perf_counter`` at its end.
        Requires ``bounds_blocking_calls``. This is the last bucket's path, once per training
        step, so it builds nothing when there is no deadline and only the watch when there is."""
        if self.timeout is None:
            call(*args)
            return time.perf_counter()
        if not self._threaded:
            raise RuntimeError("Watchdog.run_blocking: a timeout on a blocking call needs MPI_THREAD_MULTIPLE")
        self._watch_start(_Watch([(None, seq, what)], time.monotonic() + self.timeout))
        try:
            call(*args)
        finally:
            self._watch_stop()
        return time.perf_counter()

    def _watch_start(self, watch):
        if watch.deadline is None:
            return
        self._watch = watch
        if self._thread is None:
            self._start_thread()

    def _watch_stop(self):
        self._watch = None

    def _start_thread(self):
        self._thread = threading.Thread(target=self._run, name="pyneural-watchdog", daemon=True)
        _RUNNING.append(self)
        self._thread.start()

    def _run(self):
        while not self._stopping.wait(self.period):
            watch = self._watch
            now = time.monotonic()
            if watch is not None:
                watch.tick(now, self.period)
            if self.liveness:
                self._exchange_probes(probe=watch is not None and now - watch.started >= self.period)
            if watch is not None and now > watch.deadline:
                self._expire(watch)

    # -- liveness (daemon thread) -------------------------------------------------------------
    def _exchange_probes(self, probe):
        """Answer the probes that came in, note the replies, and with ``probe`` probe every peer.
        Probes and replies carry the sender's latest collective number."""
        MPI, notes = self.MPI, self._notes
        try:
            status = MPI.Status()
            for tag in (PROBE_TAG, REPLY_TAG):
                while notes.Iprobe(source=MPI.ANY_SOURCE, tag=tag, status=status):
                    src = status.Get_source()
                    notes.Recv(self._heard, source=src, tag=tag)
                    self.last_heard[src] = time.monotonic()
                    with self._lock:
                        self.last_seen[src] = max(self.last_seen[src], int(self._heard[0]))
                    if tag == PROBE_TAG:
                        self._send_progress(src, REPLY_TAG)
            if probe:
                for peer in range(self.size):
                    if peer != self.rank:
                        self._send_progress(peer, PROBE_TAG)
            self._probe_sends = [(r, buf) for r, buf in self._probe_sends if not r.Test()]
        except MPI.Exception as e:  # the thread must live on: it also enforces the deadline
            self._liveness_error = f"{type(e).__name__}: {e}"

    def _send_progress(self, dest, tag):
        progress = np.array([self.seq], dtype=np.int64)
        self._probe_sends.append((self._notes.Isend(progress, dest=dest, tag=tag), progress))

    def _silent_peers(self, watch):
        """``(ranks, seconds)``: the peers that sent nothing during the last ``seconds`` of
        ``watch`` (its second half); None for ranks when that cannot be judged (no liveness
        probes, or a wait too short to have given live peers a chance to answer)."""
        if not self.liveness or self.timeout is None:
            return None, 0.0
        since = watch.started + max(self.timeout / 2, self.period)
        window = time.monotonic() - since
        if window < 3 * self.period:
            return None, window
        return [r for r in range(self.size)
                if r != self.rank and (self.last_heard[r] is None or self.last_heard[r] < since)], window

    # -- the report -----------------------------------------------------------------------------
    def _who(self, ranks):
        """Ranks of ``comm`` as world ranks with their pid and host (ranges past a few)."""
        peers = [self.peers[r] for r in ranks]
        if len(peers) <= SHOWN_RANKS:
            return ", ".join(f"{p.world_rank} (pid {p.pid} on {p.host})" for p in peers)
        hosts = sorted({p.host for p in peers})
        more = f" and {len(hosts) - SHOWN_RANKS} more hosts" if len(hosts) > SHOWN_RANKS else ""
        return f"{_ranks_text(sorted(p.world_rank for p in peers))} on {', '.join(hosts[:SHOWN_RANKS])}{more}"

    def _liveness_lines(self, watch):
        silent, window = self._silent_peers(watch)
        lines = []
        if silent:
            lines.append(f"not responding: {self._who(silent)}: sent nothing in the last {window:.2g} s of the "
                         f"wait, probed every {self.period:g} s; stopped (SIGSTOP, a debugger), frozen or "
                         f"swapped out, dead, or cut off from this host")
        if self._liveness_error is not None:
            lines.append(f"liveness probes failed: {self._liveness_error}")
        return silent, lines

    def _expire(self, watch):
        """The deadline passed: name the first unfinished operation, the absent ranks and the ones
        that stopped responding, then abort the job. Never returns."""
        first = next(i for i, t in enumerate(watch.done_at) if t is None)
        _, seq, what = watch.pending[first]
        what = what() if callable(what) else what
        me = self.peers[self.rank].world_rank
        if self.liveness:
            self._exchange_probes(probe=False)  # the replies that came in since the last period
        silent, liveness_lines = self._liveness_lines(watch)
        if seq is None:  # a point-to-point transfer: ``what`` names the peer it waits for
            abort_job("\n".join([f"pyneural.distributed: timeout: {what} did not complete within "
                                 f"{self.timeout:g} s on rank {me}; aborting the job."] + liveness_lines))
        self.drain()
        missing = [r for r in range(self.size) if self.last_seen[r] < seq]
        if not self._send_arrivals and silent:  # a stopped peer's number is as old as its last reply
            missing = [r for r in missing if r not in silent]
        lines = [f"pyneural.distributed: timeout: {what} (collective #{seq}) did not complete within "
                 f"{self.timeout:g} s on rank {me}; aborting the job."] + liveness_lines
        if missing:
            lines.append(f"ranks that had not arrived: {self._who(missing)}")
            running = [r for r in missing if silent is not None and r not in silent]
            if running:
                lines.append(f"running but elsewhere in the program (they answer liveness probes): "
                             f"{_ranks_text([self.peers[r].world_rank for r in running])}")
        elif not silent:
            alive = " and answers liveness probes" if silent is not None else ""
            lines.append(f"every rank had arrived{alive}: the transfer itself stalled (check the network "
                         "interfaces, see btl_tcp_if_include / UCX_NET_DEVICES)")
        abort_job("\n".join(lines))
