"""``pyneural doctor`` (distributed part): what MPI this is, and does an allreduce actually work.

Run it as the job will run: ``mpirun -np 2 pyneural doctor`` (or across the machines of a
hostfile) tests the real transport between processes; run alone it still reports the library.

The self-test fills each rank's buffer with ``rank + 1`` (float32, an odd length so no
algorithm's chunking divides it evenly) and checks every element of the sum against
``N(N+1)/2`` through a raw ``Iallreduce``, through pyneural's bucketed path (default,
deterministic and bf16-compressed) and, where CuPy sees a GPU, through device buffers: directly
when MPI says it is CUDA-aware, falling back to staging through pinned host memory when the
direct transfer raises or gives a wrong sum. Every decision that selects a collective is agreed
across ranks first (an allreduce of flags), so nodes that differ cannot deadlock the test, and
every collective runs under the watchdog, so a transfer that hangs aborts the job (naming it)
after ``timeout`` seconds instead of hanging the doctor.

The command line is ``pyneural doctor`` (pyneural/commands/doctor.py); ``python -m
pyneural.distributed.doctor`` runs the same report.
"""
import os
import time

import numpy as np

from ._mpi import OPEN_MPI_DEFAULTS, import_mpi, mpi_available
from .collectives import run as run_collective

SELF_TEST_ELEMENTS = (1 << 20) + 37
VERDICTS = {True: "PASS", False: "FAIL", None: "WARN"}  # WARN: failed, but a fallback works


def _expected(size):
    return size * (size + 1) / 2


def _check(values, size):
    """Largest relative deviation of ``values`` from the expected sum."""
    want = _expected(size)
    return float(np.max(np.abs(np.asarray(values, dtype=np.float64) - want)) / want)


def _host_tests(world):
    """(name, passed, detail) for the raw and bucketed host paths."""
    from .bucket import GradReducer
    MPI = import_mpi()
    results = []
    buf = np.full(SELF_TEST_ELEMENTS, world.rank + 1, dtype=np.float32)
    start = time.perf_counter()
    run_collective(world, lambda: world.comm.Iallreduce(MPI.IN_PLACE, buf), "doctor: host allreduce")
    elapsed = time.perf_counter() - start
    err = _check(buf, world.size)
    results.append(("host Iallreduce (raw MPI)", err == 0.0,
                    f"{buf.nbytes / 2**20:.1f} MiB in {elapsed * 1e3:.2f} ms, max rel. error {err:.1e}"))
    for label, options, tolerance in (("bucketed Iallreduce", {}, 0.0),
                                      ("bucketed deterministic allgather", {"deterministic": True}, 0.0),
                                      ("bucketed bf16-compressed", {"compress": "bf16"}, 2.0 ** -7)):
        grads = [np.full(n, world.rank + 1, dtype=np.float32) for n in (SELF_TEST_ELEMENTS, 1000, 3)]
        reducer = GradReducer(world, [(f"t{i}", g) for i, g in enumerate(grads)], cap_bytes=2**20, **options)
        reducer.begin()
        start = time.perf_counter()
        for i in reversed(range(len(grads))):
            reducer.grad_ready(i, grads[i])
        reducer.finish()
        elapsed = time.perf_counter() - start
        for i, g in enumerate(grads):
            reducer.average_into(i, g)
        err = max(_check(g * world.size, world.size) for g in grads)
        results.append((f"host {label}", err <= tolerance,
                        f"{len(reducer.buckets)} buckets in {elapsed * 1e3:.2f} ms, max rel. error {err:.1e}"))
    return results


def _agree(world, flag):
    """True only if ``flag`` is true on every rank."""
    from .collectives import allreduce_
    value = np.array([1 if flag else 0], dtype=np.int32)
    allreduce_(world, value, op=import_mpi().MIN, what="doctor: agreement")
    return bool(value[0])


def _cupy_device():
    """CuPy if it imports and sees a GPU, else None."""
    try:
        import cupy
        return cupy if cupy.cuda.runtime.getDeviceCount() > 0 else None
    except Exception:  # noqa: BLE001 - no CuPy, no driver, no device: all mean "no GPU test"
        return None


def _device_tests(world, cuda_aware_claim):
    """Device-buffer allreduce: direct when MPI claims CUDA-awareness and it works, else staged.
    Returns (results, device path chosen or None)."""
    from .transport import StagedWire
    MPI = import_mpi()
    cupy = _cupy_device()
    if not _agree(world, cupy is not None):
        return [("device buffers", True, "skipped: not every rank has CuPy and a GPU")], None
    cupy.cuda.Device(world.local_rank % cupy.cuda.runtime.getDeviceCount()).use()
    results, path = [], "staged"
    if _agree(world, cuda_aware_claim):
        buf = cupy.full(SELF_TEST_ELEMENTS, world.rank + 1, dtype=cupy.float32)
        cupy.cuda.get_current_stream().synchronize()
        try:
            run_collective(world, lambda: world.comm.Iallreduce(MPI.IN_PLACE, buf),
                           "doctor: CUDA-aware device allreduce")
            err, failure = _check(cupy.asnumpy(buf), world.size), None
        except Exception as e:  # noqa: BLE001 - any failure of the direct path means: stage instead
            err, failure = None, f"{type(e).__name__}: {e}"
        direct_ok = _agree(world, failure is None and err == 0.0)
        detail = failure or f"max rel. error {err:.1e}"
        if direct_ok:
            path = "direct"
        else:  # a warning, not a failure: training works through the staged path
            detail += ("; failed on some rank: falling back to host staging (set PYNEURAL_MPI_CUDA_AWARE=0 "
                       "for training)")
        results.append(("device Iallreduce, CUDA-aware (direct)", True if direct_ok else None, detail))
    buf = cupy.full(SELF_TEST_ELEMENTS, world.rank + 1, dtype=cupy.float32)
    wire = StagedWire(buf)
    host = wire.to_wire()
    run_collective(world, lambda: world.comm.Iallreduce(MPI.IN_PLACE, host), "doctor: staged device allreduce")
    wire.from_wire()
    err = _check(cupy.asnumpy(buf), world.size)
    results.append(("device Iallreduce staged through pinned host memory", err == 0.0, f"max rel. error {err:.1e}"))
    return results, path


def _build_line():
    import pyneural
    from pyneural import _C
    return (f"pyneural:      {pyneural.__version__} from {os.path.dirname(pyneural.__file__)}; CPU kernels "
            f"{_C.active_isa()} (CPU supports {_C.detected_isa()})")


def run(out=print, timeout=60.0):
    """Print the report (rank 0 only) and return True when every self-test passed. Collective:
    under mpirun every rank must call it. ``timeout`` bounds each collective (seconds)."""
    if not mpi_available():
        out(_build_line())
        out("MPI:           mpi4py is not installed (pip install 'pyneural[mpi]'); distributed training unavailable")
        return False
    import mpi4py

    from .comm import get_world, init, is_initialized
    from .transport import cuda_aware, loaded_mpi_library
    MPI = import_mpi()
    world = get_world() if is_initialized() else init(timeout=timeout)
    claim, how = cuda_aware()
    results = _host_tests(world)
    device_results, device_path = _device_tests(world, claim is True)
    results += device_results
    ok = _agree(world, all(passed is not False for _, passed, _ in results))
    if world.rank != 0:
        return ok
    vendor, vendor_version = MPI.get_vendor()
    thread_levels = {MPI.THREAD_SINGLE: "single", MPI.THREAD_FUNNELED: "funneled",
                     MPI.THREAD_SERIALIZED: "serialized", MPI.THREAD_MULTIPLE: "multiple"}
    out(_build_line())
    out(f"MPI library:   {MPI.Get_library_version().replace(chr(0), '').strip().splitlines()[0]}")
    out(f"               vendor {vendor} {'.'.join(map(str, vendor_version))}, MPI standard "
        f"{'.'.join(map(str, MPI.Get_version()))}, mpi4py {mpi4py.__version__}, thread level "
        f"{thread_levels.get(MPI.Query_thread(), MPI.Query_thread())}")
    out(f"               loaded from {loaded_mpi_library() or 'unknown'}")
    out(f"CUDA-aware:    {'yes' if claim else 'no' if claim is False else 'unknown'} ({how})"
        + (f"; device transfers: {device_path}" if device_path else ""))
    for key in OPEN_MPI_DEFAULTS if vendor == "Open MPI" else ():
        out(f"Open MPI:      {key[len('OMPI_MCA_'):]}={os.environ.get(key, 'unset')}")
    by_host = {}
    for rank, peer in enumerate(world.watchdog.peers):  # gathered by init()
        by_host.setdefault(peer.host, []).append(rank)
    out(f"world:         {world.size} rank(s) on {len(by_host)} host(s): "
        + "; ".join(f"{h} (ranks {', '.join(map(str, r))})" for h, r in by_host.items()))
    watchdog = world.watchdog
    liveness = "on" if watchdog.liveness else "off (needs MPI_THREAD_MULTIPLE and 2 or more ranks)"
    out(f"watchdog:      timeout {'none' if watchdog.timeout is None else f'{watchdog.timeout:g} s'} per "
        f"collective; liveness probes {liveness}")
    threads = world.threads if world.threads is not None else "unknown"
    source = ("OMP_NUM_THREADS" if os.environ.get("OMP_NUM_THREADS")
              else f"{os.cpu_count()} cores / {world.local_size} rank(s) on this host")
    out(f"threads:       {threads} OpenMP thread(s) per rank on rank 0 ({source})")
    if world.size == 1:
        out("               (one process: run 'mpirun -np 2 pyneural doctor' to test transfers between processes)")
    for name, passed, detail in results:
        out(f"self-test:     {VERDICTS[passed]}  {name}: {detail}")
    return ok


def main():
    raise SystemExit(0 if run() else 1)


if __name__ == "__main__":
    main()
