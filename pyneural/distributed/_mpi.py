"""The one place that imports mpi4py (lazily, so that ``import pyneural`` works without it), and
the job-wide abort.

Open MPI tuning. Open MPI's non-blocking collectives (``coll/libnbc``) pick a binomial tree for
``MPI_Iallreduce`` whenever there are fewer than 4 ranks or the buffer is reduced in place
(both true of 2-rank gradient buckets): everything is reduced onto one rank and broadcast back,
about half the bandwidth of the blocking ``MPI_Allreduce``. Before MPI starts, we therefore
default ``coll_libnbc_iallreduce_algorithm`` to 3, reduce-scatter + allgather (Rabenseifner):
bandwidth-optimal, log(p) rounds, and every rank ends with the same bits. We also default
``mpi_yield_when_idle`` to 1: a rank waiting in a collective then yields the core between polls
instead of spinning, which on a host where ranks share cores with other work (a third process
on a 2-core host) gives the core to the rank everyone is waiting for: 2 ranks of the digits CNN
beside a busy loop went from ~500 to ~900 img/s (bench/NOTES.md, "Busy machine"). An explicit
setting in the environment wins; other MPI libraries ignore the variables.
"""
import os
import sys

OPEN_MPI_DEFAULTS = {"OMPI_MCA_coll_libnbc_iallreduce_algorithm": "3", "OMPI_MCA_mpi_yield_when_idle": "1"}


def import_mpi():
    """``mpi4py.MPI``, or an ImportError that says how to get it."""
    MPI = sys.modules.get("mpi4py.MPI")
    if MPI is not None:  # the per-collective path: a dict lookup
        return MPI
    for key, value in OPEN_MPI_DEFAULTS.items():
        os.environ.setdefault(key, value)
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError("pyneural.distributed needs mpi4py and an MPI library: "
                          "pip install 'pyneural[mpi]' (installs mpi4py and Open MPI from PyPI)") from e
    return MPI


def mpi_available():
    """True when mpi4py imports (and with it an MPI library)."""
    try:
        import_mpi()
    except ImportError:
        return False
    return True


def abort_job(message, code=1, rank=None):
    """Write ``message`` to stderr and call ``MPI.COMM_WORLD.Abort``. Abort is what makes
    ``mpirun`` kill the other ranks instead of waiting for them."""
    MPI = import_mpi()
    rank = MPI.COMM_WORLD.Get_rank() if rank is None else rank
    sys.stderr.write("".join(f"[rank {rank}] {line}\n" for line in message.rstrip("\n").split("\n")))
    sys.stderr.flush()
    sys.stdout.flush()
    MPI.COMM_WORLD.Abort(code)
