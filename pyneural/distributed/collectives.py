"""Collectives under the watchdog: every one is numbered, announced, started non-blocking, and
waited for with a deadline, so none can hang the job.

These move contiguous arrays with mpi4py's upper-case (buffer) methods: no pickling. The one
exception is ``allgather_bytes``, for small metadata (parameter signatures, trace events), which
the caller serialises itself (JSON) and which travels as raw bytes.
"""
import numpy as np

from ._mpi import import_mpi


def _contiguous(fn, name, a):
    if not isinstance(a, np.ndarray) or not a.flags.c_contiguous:
        what = type(a).__name__ if not isinstance(a, np.ndarray) else f"array with strides {a.strides}"
        raise ValueError(f"{fn}: {name} must be a C-contiguous numpy array, got {what}")
    return a


def start(world, launch, what):
    """Announce and start one collective; ``launch()`` returns its MPI request. The result is
    a pending entry for ``world.watchdog.wait``."""
    seq = world.watchdog.arrive()
    return (launch(), seq, what)


def run(world, launch, what):
    """Start one collective and wait for it under the deadline."""
    world.watchdog.wait([start(world, launch, what)])


def barrier(world, what="barrier"):
    run(world, world.comm.Ibarrier, what)


def bcast_(world, buf, root=0, what="broadcast"):
    """Broadcast ``buf`` from ``root`` in place."""
    _contiguous("bcast_", "buf", buf)
    run(world, lambda: world.comm.Ibcast(buf, root=root), what)


def allreduce_(world, buf, op=None, what="allreduce"):
    """Reduce ``buf`` over all ranks in place (default: sum)."""
    MPI = import_mpi()
    _contiguous("allreduce_", "buf", buf)
    op = MPI.SUM if op is None else op
    run(world, lambda: world.comm.Iallreduce(MPI.IN_PLACE, buf, op=op), what)


def allgather(world, sendbuf, what="allgather"):
    """Rank r's ``sendbuf`` becomes row r of the result: shape ``(size,) + sendbuf.shape``."""
    _contiguous("allgather", "sendbuf", sendbuf)
    out = np.empty((world.size,) + sendbuf.shape, dtype=sendbuf.dtype)
    run(world, lambda: world.comm.Iallgather(sendbuf, out), what)
    return out


def allgather_bytes(world, payload, what="allgather of metadata"):
    """Every rank's ``payload`` (bytes), as a list indexed by rank. Two collectives: the
    lengths, then the bytes themselves (``Iallgatherv``)."""
    MPI = import_mpi()
    mine = np.frombuffer(payload, dtype=np.uint8)
    lengths = allgather(world, np.array([mine.size], dtype=np.int64), what + " (lengths)")[:, 0]
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    out = np.empty(int(lengths.sum()), dtype=np.uint8)
    counts, displs = [int(n) for n in lengths], [int(o) for o in offsets]
    run(world, lambda: world.comm.Iallgatherv(mine, [out, counts, displs, MPI.BYTE]), what)
    return [out[o:o + n].tobytes() for o, n in zip(displs, counts)]


def gather_bytes(world, payload, root=0, what="gather of metadata"):
    """Every rank's ``payload`` (bytes) collected on ``root``, as a list indexed by rank; other
    ranks get None."""
    MPI = import_mpi()
    mine = np.frombuffer(payload, dtype=np.uint8)
    lengths = allgather(world, np.array([mine.size], dtype=np.int64), what + " (lengths)")[:, 0]
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    counts, displs = [int(n) for n in lengths], [int(o) for o in offsets]
    out = np.empty(int(lengths.sum()), dtype=np.uint8) if world.rank == root else None
    recv = [out, counts, displs, MPI.BYTE] if world.rank == root else None
    run(world, lambda: world.comm.Igatherv(mine, recv, root=root), what)
    if world.rank != root:
        return None
    return [out[o:o + n].tobytes() for o, n in zip(displs, counts)]
