"""Allreduce bandwidth: pyneural's bucketed path against raw ``MPI.Allreduce``, in the same run.

    python bench/allreduce.py                          # launches mpirun -np 2 itself
    python bench/allreduce.py --np 4 --max-mb 64 --bf16
    python bench/allreduce.py --transport tcp          # Open MPI's TCP path, as between machines
    mpirun -np 8 --hostfile hosts python bench/allreduce.py   # under your own launcher

For each message size (4 KiB .. 256 MiB, float32) three ways of summing it over all ranks,
interleaved in every repetition so that machine noise hits them alike:

  raw       ``comm.Allreduce(MPI.IN_PLACE, buf)``: blocking, MPI's own algorithm choice
  bucketed  what DistributedDataParallel issues: the message as 1 MiB "gradients" packed into
            buckets of --bucket-cap-mb, one non-blocking collective per bucket, all in flight
            together, waited for under the watchdog (``GradReducer.reduce_packed``)
  +copies   the whole DDP round: copy each gradient into its bucket, reduce, divide by N while
            copying back out (two extra passes over memory on top of ``bucketed``)

Bandwidth follows nccl-tests: algbw = bytes / time, busbw = algbw * 2(n-1)/n (the bytes each
rank's link really carries in a bandwidth-optimal allreduce). ``ratio`` = raw time / bucketed
time, i.e. bucketed busbw / raw busbw; the goal is >= 0.95 where bandwidth, not latency, rules.
Times are the max over ranks of the mean per call, median over --repeat repetitions.

``--transport sm|tcp`` forces Open MPI's transport when the script launches mpirun itself
(``pml ob1`` with the ``sm`` or ``tcp`` BTL, plus ``self``); without it MPI picks (shared memory
on one host). Under your own launcher pass the same as ``--mca pml ob1 --mca btl self,tcp``.

Each rank runs with OMP_NUM_THREADS=1 (set by the self-launch); the machine this was written on
has 2 cores shared with other work, so compare numbers within one run only.
"""
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import parser, report  # noqa: E402

import pyneural.distributed as dist  # noqa: E402
from pyneural.distributed.bucket import GradReducer  # noqa: E402
from pyneural.distributed.launch import launched_by_mpirun, mpirun_command  # noqa: E402

KIB = 1024
SIZES = [4 * KIB * 4**i for i in range(9)]  # 4 KiB .. 256 MiB
TENSOR_BYTES = 2**20
TRANSPORTS = {"sm": {"OMPI_MCA_pml": "ob1", "OMPI_MCA_btl": "self,sm"},
              "tcp": {"OMPI_MCA_pml": "ob1", "OMPI_MCA_btl": "self,tcp"}}


def parse():
    p = parser("pyneural bucketed allreduce vs raw MPI.Allreduce")
    p.add_argument("--np", type=int, default=2, help="ranks when this script launches mpirun itself")
    p.add_argument("--max-mb", type=float, default=256, help="largest message (MiB)")
    p.add_argument("--bucket-cap-mb", type=float, default=25)
    p.add_argument("--min-time", type=float, default=0.2, help="seconds per timed repetition (about)")
    p.add_argument("--bf16", action="store_true", help="also time the bf16-compressed bucketed path")
    p.add_argument("--transport", choices=sorted(TRANSPORTS), default=None,
                   help="force Open MPI's shared-memory or TCP transport (default: MPI's choice)")
    return p.parse_args()


def relaunch(args):
    """Run this script under mpirun with one thread per rank; return its exit code."""
    forced = TRANSPORTS.get(args.transport, {})
    env = dict(os.environ, OMP_NUM_THREADS="1", **forced)
    cmd = mpirun_command(args.np, [os.path.abspath(__file__)] + sys.argv[1:])
    print("launching:", " ".join(cmd), "(OMP_NUM_THREADS=1 per rank"
          + "".join(f", {k}={v}" for k, v in forced.items()) + ")", flush=True)
    return subprocess.run(cmd, env=env).returncode


class Timer:
    """Times a callable across ranks: same iteration count everywhere (decided by rank 0),
    max over ranks of the mean time per call."""

    def __init__(self, world, MPI):
        self.world, self.MPI, self.comm = world, MPI, world.comm

    def iterations(self, fn, min_time):
        fn()
        self.comm.Barrier()
        start = self.MPI.Wtime()
        fn()
        once = np.array([self.MPI.Wtime() - start])
        self.comm.Allreduce(self.MPI.IN_PLACE, once, op=self.MPI.MAX)
        return int(min(max(min_time / max(once[0], 1e-7), 1), 10000))

    def mean_seconds(self, fn, iters):
        self.comm.Barrier()
        start = self.MPI.Wtime()
        for _ in range(iters):
            fn()
        elapsed = np.array([(self.MPI.Wtime() - start) / iters])
        self.comm.Allreduce(self.MPI.IN_PLACE, elapsed, op=self.MPI.MAX)
        return float(elapsed[0])


def methods_for(world, MPI, nbytes, args):
    """The (name, callable) pairs timed at one message size."""
    count = nbytes // 4
    raw = np.zeros(count, dtype=np.float32)
    sizes = [min(TENSOR_BYTES // 4, count - i) for i in range(0, count, TENSOR_BYTES // 4)]
    grads = [np.zeros(n, dtype=np.float32) for n in sizes]
    named = [(f"g{i}", g) for i, g in enumerate(grads)]
    cap = args.bucket_cap_mb * 2**20
    reducer = GradReducer(world, named, cap_bytes=cap)

    def full_round():
        reducer.begin()
        for i in reversed(range(len(grads))):
            reducer.grad_ready(i, grads[i])
        reducer.finish()
        for i, g in enumerate(grads):
            reducer.average_into(i, g)

    methods = [("raw", lambda: world.comm.Allreduce(MPI.IN_PLACE, raw)),
               ("bucketed", reducer.reduce_packed),
               ("copies", full_round)]
    if args.bf16:
        methods.append(("bf16", GradReducer(world, named, cap_bytes=cap, compress="bf16").reduce_packed))
    return methods, len(reducer.buckets)


def worker(args):
    world = dist.init(timeout=600)
    from mpi4py import MPI
    timer = Timer(world, MPI)
    n = world.size
    bus = 2 * (n - 1) / n
    rows = []
    for nbytes in [s for s in SIZES if s <= args.max_mb * 2**20]:
        methods, buckets = methods_for(world, MPI, nbytes, args)
        iters = timer.iterations(methods[0][1], args.min_time)
        samples = {name: [] for name, _ in methods}
        for _ in range(args.repeat):
            for name, fn in methods:
                fn()
                samples[name].append(timer.mean_seconds(fn, iters))
        t = {name: float(np.median(v)) for name, v in samples.items()}
        row = {"bytes": nbytes, "size": _size(nbytes), "buckets": buckets, "iters": iters}
        for name, seconds in t.items():
            row[f"{name}_us"] = seconds * 1e6
            row[f"{name}_busbw"] = nbytes / seconds * bus / 1e9
        row["raw_algbw"] = nbytes / t["raw"] / 1e9
        row["ratio"] = t["raw"] / t["bucketed"]
        row["ratio_copies"] = t["raw"] / t["copies"]
        rows.append(row)
        if world.rank == 0:
            print(f"  {row['size']:>8}: raw {row['raw_us']:10.1f} us  bucketed {row['bucketed_us']:10.1f} us  "
                  f"ratio {row['ratio']:.3f}", flush=True)
    if world.rank != 0:
        return
    columns = [("size", "size", "{}"), ("buckets", "buckets", "{}"),
               ("raw_us", "raw us", "{:.1f}"), ("raw_algbw", "raw algbw GB/s", "{:.2f}"),
               ("raw_busbw", "raw busbw", "{:.2f}"),
               ("bucketed_us", "bucketed us", "{:.1f}"), ("bucketed_busbw", "bucketed busbw", "{:.2f}"),
               ("ratio", "ratio", "{:.3f}"),
               ("copies_us", "+copies us", "{:.1f}"), ("ratio_copies", "+copies ratio", "{:.3f}")]
    if args.bf16:
        columns += [("bf16_us", "bf16 us", "{:.1f}"), ("bf16_busbw", "bf16 busbw (fp32 bytes)", "{:.2f}")]
    transport = args.transport or f"MPI's choice (btl {os.environ.get('OMPI_MCA_btl', 'default')})"
    title = (f"allreduce, float32, {n} ranks ({world.local_size} on this host), transport {transport}, "
             f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
             f"{MPI.Get_library_version().splitlines()[0].strip()}; "
             f"bucket cap {args.bucket_cap_mb:g} MiB; busbw = algbw * 2(n-1)/n; ratio = raw time / bucketed time")
    report(rows, columns, args, title, plot=_plot)


def _size(nbytes):
    return f"{nbytes // 2**20} MiB" if nbytes >= 2**20 else f"{nbytes // KIB} KiB"


def _plot(rows, ax):
    x = [r["bytes"] for r in rows]
    for key, label in (("raw_busbw", "raw MPI.Allreduce"), ("bucketed_busbw", "pyneural bucketed"),
                       ("copies_busbw", "pyneural + pack/unpack copies")):
        ax.plot(x, [r[key] for r in rows], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("message bytes")
    ax.set_ylabel("busbw (GB/s)")
    ax.legend()


def main():
    args = parse()
    if not launched_by_mpirun():
        raise SystemExit(relaunch(args))
    forced = TRANSPORTS.get(args.transport, {})
    unmet = {k: v for k, v in forced.items() if os.environ.get(k) != v}
    if unmet:
        raise SystemExit(f"bench/allreduce.py: --transport {args.transport} needs Open MPI's "
                         + " ".join(f"--mca {k[len('OMPI_MCA_'):]} {v}" for k, v in unmet.items())
                         + " from your launcher (or let this script launch mpirun itself)")
    worker(args)


if __name__ == "__main__":
    main()
