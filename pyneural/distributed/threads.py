"""OpenMP threads per rank: N ranks on one machine share its cores instead of each taking all.

pyneural's kernels run OpenMP parallel regions with, by default, one thread per core. Two ranks
on a 2-core machine would then run 2 x 2 threads on 2 cores and spend their time preempting
each other (and an OpenMP barrier whose thread is descheduled waits a whole time slice). So
``init()`` gives each rank ``cores // ranks on this machine`` threads (at least 1), where
*cores* is what this process may run on:

* the launcher bound the rank (its CPU affinity is narrower than the machine, as with Open
  MPI's ``--bind-to core`` or a ``--map-by ...:PE=4`` layout): the cores it was given are its
  own, all of them;
* otherwise every rank sees every core, and they are divided among the ranks on this machine.

``OMP_NUM_THREADS`` set in the environment always wins (tests set it to 1 so that every process
runs each kernel alike). The count is applied with ``pyneural._C.set_num_threads`` where the
extension has it, else with the OpenMP runtime's own ``omp_set_num_threads`` (standard OpenMP
API, looked up in the runtime this process loaded). Either sets the count for parallel regions
started by the calling thread: the training thread.
"""
import ctypes
import os

_OPENMP_RUNTIMES = ("libgomp", "libomp", "libiomp5")


def available_cores():
    """(cores this process may run on, cores in the machine)."""
    machine = os.cpu_count() or 1
    try:
        mine = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        mine = machine
    return mine, machine


def threads_per_rank(local_size, cores=None):
    """OpenMP threads for one of ``local_size`` ranks sharing this machine; ``cores`` is
    ``available_cores()`` unless given (tests)."""
    mine, machine = available_cores() if cores is None else cores
    if mine < machine:  # bound by the launcher: these cores are this rank's alone
        return max(1, mine)
    return max(1, machine // max(1, local_size))


def _openmp_runtime():
    """ctypes handle of the OpenMP runtime loaded in this process, or None."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rsplit(" ", 1)[-1].strip()
                if os.path.basename(path).startswith(_OPENMP_RUNTIMES):
                    return ctypes.CDLL(path)
    except OSError:
        return None
    return None


def set_threads(n):
    """Use ``n`` OpenMP threads in this thread's parallel regions. Returns how it was applied
    (a short text), or None when no OpenMP runtime could be reached."""
    from .. import _C
    if hasattr(_C, "set_num_threads"):
        _C.set_num_threads(int(n))
        return "pyneural._C.set_num_threads"
    runtime = _openmp_runtime()
    if runtime is None or not hasattr(runtime, "omp_set_num_threads"):
        return None
    runtime.omp_set_num_threads(ctypes.c_int(int(n)))
    return "omp_set_num_threads"


def get_threads():
    """OpenMP threads the next parallel region of this thread would use, or None if unknown."""
    from .. import _C
    if hasattr(_C, "get_num_threads"):
        return int(_C.get_num_threads())
    runtime = _openmp_runtime()
    if runtime is None or not hasattr(runtime, "omp_get_max_threads"):
        return None
    runtime.omp_get_max_threads.restype = ctypes.c_int
    return int(runtime.omp_get_max_threads())


def configure(local_size, threads=None):
    """Called by ``init()``: an explicit ``threads``, else OMP_NUM_THREADS when set (left to the
    runtime), else ``threads_per_rank``. Returns the thread count in force (None if unknown)."""
    if threads is None and os.environ.get("OMP_NUM_THREADS"):
        return get_threads()
    n = threads if threads is not None else threads_per_rank(local_size)
    if set_threads(n) is None:
        return None
    return n
