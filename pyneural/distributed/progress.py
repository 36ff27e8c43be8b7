"""A background thread that keeps bucket collectives moving while backward computes.

Open MPI and MPICH advance a non-blocking collective only inside MPI calls made by the process
(there is no asynchronous progress by default). A bucket launched early in backward would
otherwise sit after its first round until the next gradient hook tests it, and a long
convolution backward between two hooks leaves the network idle; the bucket is then mostly
transferred at the very end, in the wait that backward was supposed to hide.

So while buckets are in flight, this thread tests them (``MPI_Testsome``), which both advances
the transfers and records when each finished. The compute kernels release the GIL, so the
thread runs while they do. Polling costs CPU that the rank's own compute wants (one core per
rank is the usual layout), so the pause between tests backs off: 50 us after a bucket is added
or one finishes, doubling while nothing happens, up to 1 ms. A finishing bucket is thus noticed
within about a millisecond, at a few hundred wake-ups per second of backward. It needs
``MPI_THREAD_MULTIPLE``; without it the reducer falls back to testing from the hooks.

MPI forbids two threads completing the same request at once: the lock is held around every
test, and ``take_all`` hands the unfinished buckets back to the caller, after which the thread
no longer touches them and the caller may wait on them.
"""
import threading
import time

from ._mpi import import_mpi

MIN_INTERVAL, MAX_INTERVAL = 50e-6, 1e-3


class ProgressThread:
    def __init__(self):
        self._interval = MIN_INTERVAL
        self._lock = threading.Lock()
        self._active = []
        self._work = threading.Event()
        self._thread = None

    def add(self, bucket):
        """Start driving ``bucket`` (launched: ``bucket.pending`` holds its request)."""
        with self._lock:
            self._active.append(bucket)
            self._interval = MIN_INTERVAL
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pyneural-mpi-progress", daemon=True)
                self._thread.start()
        self._work.set()

    def take_all(self):
        """Stop driving every bucket not yet finished and return them (in launch order)."""
        if not self._active:  # only add() (this same caller) makes it non-empty: nothing to take
            return []
        with self._lock:
            active, self._active = self._active, []
            self._work.clear()
        return active

    def _run(self):
        MPI = import_mpi()
        while True:
            self._work.wait()
            with self._lock:
                if self._active:
                    done = MPI.Request.Testsome([b.pending[0] for b in self._active])
                    if done:
                        now = time.perf_counter()
                        for i in done:
                            self._active[i].done_at = now
                        self._active = [b for b in self._active if b.done_at is None]
                        self._interval = MIN_INTERVAL
                    else:
                        self._interval = min(2 * self._interval, MAX_INTERVAL)
                if not self._active:
                    self._work.clear()
                    continue
                pause = self._interval
            time.sleep(pause)
