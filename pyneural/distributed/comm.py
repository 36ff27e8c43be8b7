"""The process group: who we are in the MPI job, and what happens when one of us fails.

``init()`` is the one entry point. It takes ``MPI.COMM_WORLD`` (or a communicator you pass),
learns this process's rank and the world size, and finds the *local* rank by splitting the
communicator into shared-memory islands (``COMM_TYPE_SHARED``): processes on the same machine land
in the same island, so ``local_rank`` is the index of this process on its node: what picks a GPU.

Failure policy. An MPI job must never outlive one of its ranks: if rank 3 raises while ranks
0-2 sit in an allreduce, those three wait forever and ``mpirun`` never returns. So ``init()``
installs an excepthook that prints the traceback (prefixed with the rank) and calls
``MPI.COMM_WORLD.Abort``, which tears the whole job down. Hangs that raise nothing (a rank stuck
in a loop, a stopped process, a dead network link) are the watchdog's job (watchdog.py); its
reports name each rank with its pid and host, gathered when ``init()`` builds it.

Threads. The ranks on one machine share its cores: ``init()`` gives each ``cores // local_size``
OpenMP threads unless OMP_NUM_THREADS is set (threads.py).
"""
import os
import sys
import time
import traceback

from ._mpi import abort_job, import_mpi
from .threads import configure as configure_threads
from .watchdog import Watchdog

DEFAULT_TIMEOUT = 300.0
SAME_ERROR_GRACE_S = 5.0

_world = None


class World:
    """This process's place in the job. ``comm`` carries the training collectives; ``node_comm``
    groups the processes that share this machine's memory; ``watchdog`` times every collective."""

    def __init__(self, comm, node_comm, watchdog):
        self.comm = comm
        self.node_comm = node_comm
        self.watchdog = watchdog
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.local_rank = node_comm.Get_rank()
        self.local_size = node_comm.Get_size()
        self.threads = None  # OpenMP threads of this rank, set by init() (None: unknown)

    @property
    def is_main(self):
        return self.rank == 0

    def abort(self, message, code=1):
        """Print ``message`` (tagged with the rank) and end every process of the job now."""
        abort_job(message, code, rank=self.rank)

    def __repr__(self):
        return (f"World(rank={self.rank}, size={self.size}, local_rank={self.local_rank}, "
                f"local_size={self.local_size}, threads={self.threads})")


def _abort_on_exception(exc_type, exc, tb):
    """sys.excepthook: an uncaught exception on any rank ends every rank. An error that every
    rank raises alike (``raised_on_every_rank``, e.g. a model mismatch) is printed by rank 0
    only: the others give it a moment to print and abort before aborting themselves."""
    MPI = import_mpi()
    if MPI.COMM_WORLD.Get_size() == 1:
        sys.__excepthook__(exc_type, exc, tb)
        return
    if getattr(exc, "raised_on_every_rank", False) and MPI.COMM_WORLD.Get_rank() != 0:
        time.sleep(SAME_ERROR_GRACE_S)
        MPI.COMM_WORLD.Abort(1)
    text = "".join(traceback.format_exception(exc_type, exc, tb))
    where = f"rank {MPI.COMM_WORLD.Get_rank()} (pid {os.getpid()} on {MPI.Get_processor_name()})"
    abort_job(f"uncaught exception on {where}, aborting all ranks:\n" + text)


def init(comm=None, timeout=DEFAULT_TIMEOUT, abort_on_exception=True, threads=None):
    """Join the MPI job and return the ``World``. Safe to call again: later calls return the same
    world, with ``timeout`` updated.

    ``timeout`` (seconds, None for never) bounds every collective pyneural.distributed issues:
    one that has not completed by then aborts the job, naming the operation and the ranks that
    had not arrived. ``abort_on_exception`` installs the excepthook described above.
    ``threads``: OpenMP threads for this rank (default: OMP_NUM_THREADS when set, else this
    machine's cores divided among its ranks).
    """
    global _world
    if timeout is not None and not timeout > 0:
        raise ValueError(f"distributed.init: timeout must be a number of seconds > 0 or None, got {timeout!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"distributed.init: threads must be an int >= 1 or None, got {threads!r}")
    MPI = import_mpi()
    if _world is None or (comm is not None and comm is not _world.comm):
        comm = MPI.COMM_WORLD if comm is None else comm
        node_comm = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
        _world = World(comm, node_comm, Watchdog(comm, timeout))
        _world.threads = configure_threads(_world.local_size, threads)
    elif threads is not None:
        _world.threads = configure_threads(_world.local_size, threads)
    _world.watchdog.timeout = timeout
    if abort_on_exception:
        sys.excepthook = _abort_on_exception
    return _world


def get_world():
    """The world set up by ``init()``; RuntimeError before it."""
    if _world is None:
        raise RuntimeError("pyneural.distributed: call distributed.init() first")
    return _world


def is_initialized():
    return _world is not None


def is_main():
    """True on rank 0, and in a process that never called ``init()``: the one that prints and
    writes files."""
    return _world is None or _world.rank == 0

