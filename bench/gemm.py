"""GEMM: pyneural's blocked kernels against numpy's BLAS (OpenBLAS) and torch (MKL / oneDNN), GFLOP/s.

    python bench/gemm.py                         # squares 64..4096, DL shapes, training shapes
    python bench/gemm.py --set square            # one set: square, dl or train (comma-separated)
    python bench/gemm.py --sizes 1024,2048       # just these squares
    python bench/gemm.py --isa avx2 --quick      # force a SIMD path, short run
    python bench/gemm.py --dtype bf16            # bf16 GEMM vs torch's bf16 matmul and the peak

--dtype bf16 times gemm_bf16 (bf16 operands, float32 sums, bf16 result) against torch.matmul on
bf16 tensors (also a bf16 result) on squares 1024, 2048, 4096 (or --sizes), and measures the peak
of the path's dot instruction on resident operands first (_tile_dpbf16ps for AMX, vdpbf16ps for
AVX512-BF16: pyneural.kernels.bf16.dot_peak_gflops), so each row also says what fraction of the
peak ours and torch reach. --isa forces a bf16 path (amx, avx512bf16, generic).

ratio = ours / numpy (the issue's goal: >= 0.9 at 1024..4096); vs torch = ours / torch.matmul,
when torch is installed, on the same number of threads. All libraries are timed in the same run,
taking turns over --rounds rounds, and each keeps its best (bench/common.py: best_interleaved):
the machine is shared, so only ratios within one run mean much. Before each timing the script
sleeps --settle seconds: OpenBLAS's idle threads busy-wait for ~0.1 s after a call, and timing one
library while another's threads still spin on the same two cores measures the spinning.
--wait-idle additionally waits (Linux) until the CPUs are idle. Each shape is first checked
against numpy.

The "train" set is every product one training step of the framework's MLP (64-512-512-10) and
CNN head (1024-128-10) makes at batch 32, 128 and 512 (pyneural/functions/matmul.py Linear:
forward x @ W^T, backward dX = dY @ W, dW = dY^T @ X).
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import best_interleaved, parser, report  # noqa: E402

from pyneural import _C  # noqa: E402
from pyneural.kernels.gemm import gemm, gemm_bf16  # noqa: E402

try:
    import torch
except ImportError:
    torch = None

SQUARES = [64, 128, 256, 512, 1024, 2048, 3072, 4096]
BF16_SQUARES = [1024, 2048, 4096]
FP32_ISAS = ["generic", "avx2", "avx512"]
BF16_ISAS = ["amx", "avx512bf16", "generic"]
QUICK_SQUARES = [256, 1024, 2048]

# (label, M, N, K, trans_a, trans_b)
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

# (layer name, in, out, needs dX): Linear layers of the training benchmark's MLP and CNN head.
TRAIN_LAYERS = [("mlp1", 64, 512, False), ("mlp2", 512, 512, True), ("mlp3", 512, 10, True),
                ("cnn-fc1", 1024, 128, True), ("cnn-fc2", 128, 10, True)]
TRAIN_BATCHES = [32, 128, 512]


def train_shapes():
    shapes = []
    for batch in TRAIN_BATCHES:
        for name, fan_in, fan_out, needs_dx in TRAIN_LAYERS:
            shapes.append((f"B{batch} {name} y=xW^T", batch, fan_out, fan_in, False, True))
            if needs_dx:
                shapes.append((f"B{batch} {name} dX=dYW", batch, fan_in, fan_out, False, False))
            shapes.append((f"B{batch} {name} dW=dY^Tx", fan_out, fan_in, batch, True, False))
    return shapes


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

    theirs = None
    if torch is not None:
        t_a, t_b, t_out = torch.from_numpy(op_a), torch.from_numpy(op_b), torch.empty((m, n))

        def theirs():
            torch.matmul(t_a, t_b, out=t_out)

    ours()
    reference()
    err = np.linalg.norm(ours_out - ref_out) / max(np.linalg.norm(ref_out), 1e-30)
    if not err < 1e-5:
        raise SystemExit(f"{label}: ours differs from numpy, relative error {err:.2e}")

    times = best_interleaved([ours, reference, theirs], rounds=args.rounds, repeat=args.repeat,
                             min_time=args.min_time, settle=args.settle, idle_limit=args.wait_idle)
    gf = [None if t is None else 2.0 * m * n * k / t / 1e9 for t in times]
    return {"shape": label, "m": m, "n": n, "k": k, "trans_a": trans_a, "trans_b": trans_b,
            "ours_gflops": gf[0], "numpy_gflops": gf[1], "torch_gflops": gf[2], "ratio": gf[0] / gf[1],
            "ratio_torch": gf[0] / gf[2] if gf[2] else None, "rel_err": float(err)}


def measure_bf16(label, m, n, k, args, rng, peak):
    """One bf16 row: ours (bf16 result) vs torch.matmul on bf16 tensors, checked first against the
    float64 product of the same bf16 inputs."""
    from pyneural.kernels.bf16 import bfloat16

    a = rng.standard_normal((m, k)).astype(np.float32).astype(bfloat16)
    b = rng.standard_normal((k, n)).astype(np.float32).astype(bfloat16)
    ours_out = np.empty((m, n), bfloat16)

    def ours():
        gemm_bf16(a, b, out=ours_out)

    theirs = None
    if torch is not None:
        t_a = torch.from_numpy(a.astype(np.float32)).bfloat16()
        t_b = torch.from_numpy(b.astype(np.float32)).bfloat16()
        t_out = torch.empty((m, n), dtype=torch.bfloat16)

        def theirs():
            torch.matmul(t_a, t_b, out=t_out)

    ours()
    ref = a.astype(np.float64) @ b.astype(np.float64)
    err = np.linalg.norm(ours_out.astype(np.float64) - ref) / np.linalg.norm(ref)
    if not err < 4e-3:  # one bf16 rounding of the result: <= 2^-9 relative
        raise SystemExit(f"{label}: ours differs from the float64 product, relative error {err:.2e}")

    times = best_interleaved([ours, theirs], rounds=args.rounds, repeat=args.repeat, min_time=args.min_time,
                             settle=args.settle, idle_limit=args.wait_idle)
    gf = [None if t is None else 2.0 * m * n * k / t / 1e9 for t in times]
    return {"shape": label, "m": m, "n": n, "k": k, "ours_gflops": gf[0], "torch_gflops": gf[1],
            "ratio_torch": gf[0] / gf[1] if gf[1] else None, "peak_gflops": peak,
            "ours_of_peak": gf[0] / peak if peak else None,
            "torch_of_peak": gf[1] / peak if gf[1] and peak else None,
            "rel_err": float(err)}


def main_bf16(args, threads):
    """The --dtype bf16 run: the dot-instruction peak(s), then ours vs torch per square."""
    from pyneural.kernels import bf16

    if args.isa:
        bf16.set_gemm_isa(args.isa)
    isa = bf16.gemm_isa()
    peak_isa = isa if isa in ("amx", "avx512bf16") else None
    peaks = {}
    for name in ("amx", "avx512bf16"):
        try:
            peaks[name] = max(bf16.dot_peak_gflops(name, seconds=0.2) for _ in range(args.rounds))
        except ValueError as e:
            print(f"{name} peak: not measured ({e})", file=sys.stderr)
    for name, value in peaks.items():
        print(f"  measured {name} dot peak: {value:.1f} GFLOP/s on {threads} threads", file=sys.stderr)
    peak = peaks.get(peak_isa)  # None for the portable path: no dot instruction to hold it against

    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else BF16_SQUARES
    rng = np.random.default_rng(0)
    rows = []
    for size in sizes:
        rows.append(measure_bf16(f"square {size}", size, size, size, args, rng, peak))
        print(f"  {rows[-1]['shape']:20s} {rows[-1]['ours_gflops']:7.1f} GFLOP/s", file=sys.stderr)
    columns = [("shape", "shape (MxNxK)", "{}"), ("ours_gflops", "ours GFLOP/s", "{:.1f}"),
               ("torch_gflops", "torch GFLOP/s", "{:.1f}"), ("ratio_torch", "vs torch", "{:.2f}"),
               ("ours_of_peak", "ours/peak", "{:.2f}"), ("torch_of_peak", "torch/peak", "{:.2f}")]
    amx = f"AMX peak {peaks['amx']:.1f}" if "amx" in peaks else "AMX: none on this CPU"
    measured = f"measured {peak_isa} dot loop {peak:.1f} GFLOP/s" if peak else "none for this path"
    title = (f"bf16 GEMM, isa={isa}, {threads} threads, bf16 result; peak = {measured} ({amx}); "
             f"vs torch = ours / torch.matmul(bf16)")
    report(rows, columns, args, title)


def plot(rows, ax):
    squares = [r for r in rows if r["shape"].startswith("square")]
    sizes = [r["m"] for r in squares]
    ax.plot(sizes, [r["ours_gflops"] for r in squares], "o-", label="pyneural sgemm")
    ax.plot(sizes, [r["numpy_gflops"] for r in squares], "s--", label="numpy (OpenBLAS)")
    if squares and squares[0]["torch_gflops"]:
        ax.plot(sizes, [r["torch_gflops"] for r in squares], "^:", label="torch (MKL)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("M = N = K")
    ax.set_ylabel("GFLOP/s")
    ax.grid(True, alpha=0.3)
    ax.legend()


def main():
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--set", default="square,dl,train", help="shape sets: square, dl, train (comma-separated)")
    p.add_argument("--sizes", help="comma-separated square sizes (replaces the square set)")
    p.add_argument("--dtype", choices=["float32", "bf16"], default="float32", help="operand type (default float32)")
    p.add_argument("--isa", choices=FP32_ISAS + BF16_ISAS[:2],
                   help="force a path: generic, avx2, avx512 (float32); amx, avx512bf16, generic (bf16)")
    p.add_argument("--quick", action="store_true", help="a few squares, short timings")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per shape (best is kept)")
    p.add_argument("--min-time", type=float, default=0.01, help="seconds per timed repetition")
    p.add_argument("--settle", type=float, default=0.2, help="idle seconds before each round (see above)")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                   help="before each timing wait up to SECONDS for idle CPUs (shared machines; Linux)")
    p.set_defaults(repeat=5)
    args = p.parse_args()
    if args.quick:
        args.repeat, args.rounds, args.min_time = 1, 2, 0.05
    threads = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count())
    if torch is not None:
        torch.set_num_threads(threads)
    if args.dtype == "bf16":
        return main_bf16(args, threads)
    if args.isa:
        if args.isa not in FP32_ISAS:
            raise SystemExit(f"--isa {args.isa} is a bf16 path; add --dtype bf16")
        _C.set_isa(args.isa)

    sets = args.set.split(",")
    cases = []
    if args.sizes or "square" in sets:
        squares = [int(s) for s in args.sizes.split(",")] if args.sizes else (QUICK_SQUARES if args.quick else SQUARES)
        cases += [(f"square {s}", s, s, s, False, False) for s in squares]
    if "dl" in sets and not args.sizes:
        cases += [(f"{label} {m}x{n}x{k}", m, n, k, ta, tb) for label, m, n, k, ta, tb in DL_SHAPES]
    if "train" in sets and not args.sizes:
        cases += [(f"{label} {m}x{n}x{k}", m, n, k, ta, tb) for label, m, n, k, ta, tb in train_shapes()]

    rng = np.random.default_rng(0)
    rows = []
    for case in cases:
        rows.append(measure(*case, args, rng))
        print(f"  {rows[-1]['shape']:40s} {rows[-1]['ours_gflops']:7.1f} GFLOP/s", file=sys.stderr)
    columns = [("shape", "shape (MxNxK)", "{}"), ("ours_gflops", "ours GFLOP/s", "{:.1f}"),
               ("numpy_gflops", "numpy GFLOP/s", "{:.1f}"), ("torch_gflops", "torch GFLOP/s", "{:.1f}"),
               ("ratio", "ratio", "{:.2f}"), ("ratio_torch", "vs torch", "{:.2f}")]
    title = (f"SGEMM, isa={_C.active_isa()}, {threads} threads (ours, torch; numpy's OpenBLAS its default), "
             f"ratio = ours / numpy, vs torch = ours / torch")
    report(rows, columns, args, title, plot=plot)


if __name__ == "__main__":
    main()
