"""SGEMM: pyneural's blocked kernel (_C.sgemm) against numpy's BLAS (OpenBLAS), GFLOP/s.

    python bench/gemm.py                     # square 64..4096 + deep-learning shapes
    python bench/gemm.py --sizes 1024,2048   # just these squares (and no DL shapes)
    python bench/gemm.py --isa avx2 --quick  # force a SIMD path, short run

Both are timed in the same run, interleaved (ours, numpy, ours, numpy, ...) over --rounds rounds,
and each keeps its best round: the machine is shared, so only the ratio in one run means much.
Before each timing the script sleeps --settle seconds: OpenBLAS's idle threads busy-wait for
~0.1 s after a call (and OpenMP's for a moment), and timing one library while the other's threads
still spin on the same two cores measures the spinning. --wait-idle additionally waits (Linux) until
the CPUs are idle before each timing, which keeps other people's jobs on a shared machine out of
the numbers. Each shape is first checked against numpy.
"""
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import parser, report, time_call  # noqa: E402

from pyneural import _C  # noqa: E402
from pyneural.kernels.gemm import gemm  # noqa: E402

SQUARES = [64, 128, 256, 512, 1024, 2048, 3072, 4096]
QUICK_SQUARES = [256, 1024, 2048]

# (label, M, N, K, trans_a, trans_b): the shapes a training step of a small network produces.
DL_SHAPES = [
    ("linear fwd x@W", 32, 512, 64, False, False),
    ("linear bwd dX=dY@W^T", 32, 64, 512, False, True),
    ("linear bwd dW=X^T@dY", 64, 512, 32, True, False),
    ("classifier fwd", 32, 10, 512, False, False),
    ("classifier bwd dW", 512, 10, 32, True, False),
    ("batch512 fwd", 512, 1024, 128, False, False),
    ("batch512 bwd dX", 512, 128, 1024, False, True),
    ("batch512 bwd dW", 128, 1024, 512, True, False),
    ("conv3x3 64ch 56x56", 64, 3136, 576, False, False),
    ("gemv-like M=1", 1, 4096, 1024, False, False),
    ("tall-skinny N=16", 8192, 16, 256, False, False),
]


def wait_idle(limit, threshold=0.9, window=0.5):
    """Wait up to ``limit`` seconds until the CPUs were >= ``threshold`` idle over ``window`` s."""
    def counters():
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
        return sum(fields), fields[3]

    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        total0, idle0 = counters()
        time.sleep(window)
        total1, idle1 = counters()
        if (idle1 - idle0) >= threshold * max(total1 - total0, 1):
            return


def make_case(rng, m, n, k, trans_a, trans_b):
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    return a, b


def measure(label, m, n, k, trans_a, trans_b, args, rng):
    a, b = make_case(rng, m, n, k, trans_a, trans_b)
    op_a, op_b = (a.T if trans_a else a), (b.T if trans_b else b)
    ours_out = np.empty((m, n), np.float32)
    ref_out = np.empty((m, n), np.float32)

    def ours():
        gemm(a, b, trans_a=trans_a, trans_b=trans_b, out=ours_out)

    def reference():
        np.matmul(op_a, op_b, out=ref_out)

    ours()
    reference()
    err = np.linalg.norm(ours_out - ref_out) / max(np.linalg.norm(ref_out), 1e-30)
    if not err < 1e-5:
        raise SystemExit(f"{label}: ours differs from numpy, relative error {err:.2e}")

    ours_t, ref_t = [], []
    def settle():
        time.sleep(args.settle)
        if args.wait_idle:
            wait_idle(args.wait_idle)

    for _ in range(args.rounds):
        settle()
        ours_t.append(time_call(ours, repeat=args.repeat, min_time=args.min_time))
        settle()
        ref_t.append(time_call(reference, repeat=args.repeat, min_time=args.min_time))
    flops = 2.0 * m * n * k
    ours_gf, ref_gf = flops / min(ours_t) / 1e9, flops / min(ref_t) / 1e9
    return {"shape": label, "m": m, "n": n, "k": k, "trans_a": trans_a, "trans_b": trans_b,
            "ours_gflops": ours_gf, "numpy_gflops": ref_gf, "ratio": ours_gf / ref_gf, "rel_err": float(err)}


def plot(rows, ax):
    squares = [r for r in rows if r["shape"].startswith("square")]
    sizes = [r["m"] for r in squares]
    ax.plot(sizes, [r["ours_gflops"] for r in squares], "o-", label="pyneural sgemm")
    ax.plot(sizes, [r["numpy_gflops"] for r in squares], "s--", label="numpy (OpenBLAS)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("M = N = K")
    ax.set_ylabel("GFLOP/s")
    ax.grid(True, alpha=0.3)
    ax.legend()


def main():
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", help="comma-separated square sizes (default: 64..4096 and the DL shapes)")
    p.add_argument("--isa", choices=["generic", "avx2", "avx512"], help="force a SIMD path")
    p.add_argument("--quick", action="store_true", help="a few sizes, short timings")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per shape (best is kept)")
    p.add_argument("--min-time", type=float, default=0.1, help="seconds per timed repetition")
    p.add_argument("--settle", type=float, default=0.3, help="idle seconds before each timing (see above)")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                   help="before each timing wait up to SECONDS for idle CPUs (shared machines; Linux)")
    p.add_argument("--no-dl", action="store_true", help="skip the deep-learning shapes")
    args = p.parse_args()
    if args.isa:
        _C.set_isa(args.isa)
    if args.quick:
        args.repeat, args.rounds, args.min_time = 1, 2, 0.05

    squares = [int(s) for s in args.sizes.split(",")] if args.sizes else (QUICK_SQUARES if args.quick else SQUARES)
    cases = [(f"square {s}", s, s, s, False, False) for s in squares]
    if not (args.sizes or args.no_dl):
        cases += [(f"{label} {m}x{n}x{k}", m, n, k, ta, tb) for label, m, n, k, ta, tb in DL_SHAPES]

    rng = np.random.default_rng(0)
    rows = [measure(*case, args, rng) for case in cases]
    columns = [("shape", "shape (MxNxK)", "{}"), ("ours_gflops", "ours GFLOP/s", "{:.1f}"),
               ("numpy_gflops", "numpy GFLOP/s", "{:.1f}"), ("ratio", "ratio", "{:.2f}")]
    threads = os.environ.get("OMP_NUM_THREADS", "default")
    title = f"SGEMM, isa={_C.active_isa()}, OMP_NUM_THREADS={threads}, ratio = ours / numpy"
    report(rows, columns, args, title, plot=plot)


if __name__ == "__main__":
    main()
