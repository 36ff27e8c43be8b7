"""How fast is pyneural's CPU convolution? GFLOP/s of forward, backward-data and backward-weight on
the ResNet-50 3x3 and 1x1 layer shapes (batch 8) and the digits-CNN layers (1->32 and 32->64, 3x3 on
8x8, batch 32, 128 and 512), against numpy im2col + matmul (the float32 numpy path of
pyneural.kernels.conv, on numpy's BLAS) and torch's CPU convolution when torch is installed, on the
same number of threads as ours. Every pass is checked against numpy before it is timed.

    python bench/conv.py [--quick] [--set r50,digits] [--batch N] [--json out.json] [--plot out.png]

The three libraries take turns, --rounds rounds of --repeat timing windows each, and each keeps its
fastest window (bench/common.py: best_interleaved): the machine is shared, so only ratios from one
run mean much. vs numpy = ours / numpy, vs torch = ours / torch.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import best_interleaved, parser, report  # noqa: E402

from pyneural import _C  # noqa: E402
from pyneural.kernels import conv  # noqa: E402

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    torch = None

# name, N, C, H(=W), Co, k, padding; batch None = the --batch option.
R50_LAYERS = [
    ("r50 56x56 64->64 3x3", None, 64, 56, 64, 3, 1),
    ("r50 28x28 128->128 3x3", None, 128, 28, 128, 3, 1),
    ("r50 14x14 256->256 3x3", None, 256, 14, 256, 3, 1),
    ("r50 7x7 512->512 3x3", None, 512, 7, 512, 3, 1),
    ("r50 56x56 64->256 1x1", None, 64, 56, 256, 1, 0),
    ("r50 56x56 256->64 1x1", None, 256, 56, 64, 1, 0),
]
# The framework's digits CNN (pyneural/models.py cnn) at the training benchmark's batches.
DIGITS_LAYERS = [(f"digits 8x8 {c}->{co} 3x3", n, c, 8, co, 3, 1)
                 for n in (32, 128, 512) for c, co in ((1, 32), (32, 64))]
QUICK = {"r50 56x56 64->64 3x3", "r50 7x7 512->512 3x3", "digits 8x8 32->64 3x3"}


def passes(x, w, dy, pad):
    """For each pass: (ours, numpy, torch or None) as zero-argument callables."""
    hyper = ((1, 1), (pad, pad), (1, 1), 1)
    ours = {
        "forward": lambda: conv.conv2d_forward(x, w, None, 1, pad),
        "bwd-data": lambda: conv.conv2d_backward_data(dy, w, x.shape, 1, pad),
        "bwd-weight": lambda: conv.conv2d_backward_weight(dy, x, w.shape, 1, pad),
    }
    ref = {
        "forward": lambda: conv.forward_numpy(x, w, *hyper),
        "bwd-data": lambda: conv.backward_data_numpy(dy, w, x.shape, *hyper),
        "bwd-weight": lambda: conv.backward_weight_numpy(dy, x, w.shape, *hyper),
    }
    theirs = dict.fromkeys(ours)
    if torch is not None:
        tx, tw, tdy = (torch.from_numpy(a) for a in (x, w, dy))
        back = torch.ops.aten.convolution_backward

        def grad(mask):
            return lambda: back(tdy, tx, tw, None, [1, 1], [pad, pad], [1, 1], False, [0, 0], 1, mask)

        theirs = {
            "forward": lambda: F.conv2d(tx, tw, None, 1, pad),
            "bwd-data": grad([True, False, False]),
            "bwd-weight": grad([False, True, False]),
        }
    return ours, ref, theirs


def main():
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="three layers, fewer repetitions")
    p.add_argument("--set", default="r50,digits", help="layer sets: r50, digits (comma-separated)")
    p.add_argument("--batch", type=int, default=8, help="batch of the ResNet-50 layers (default 8)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per pass (best is kept)")
    p.add_argument("--min-time", type=float, default=0.02, help="seconds per timing window")
    p.add_argument("--settle", type=float, default=0.2, help="idle seconds before each round")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                   help="before each round wait up to SECONDS for idle CPUs (shared machines; Linux)")
    p.set_defaults(repeat=3)
    args = p.parse_args()
    if args.quick:
        args.rounds, args.repeat = 2, 2
    threads = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count())
    if torch is not None:
        torch.set_num_threads(threads)
    sets = args.set.split(",")
    layers = (R50_LAYERS if "r50" in sets else []) + (DIGITS_LAYERS if "digits" in sets else [])
    rng = np.random.default_rng(0)
    rows = []
    with torch.inference_mode() if torch is not None else _nullcontext():
        for name, N, C, H, Co, k, pad in layers:
            if args.quick and (name not in QUICK or (N or 512) != 512):
                continue
            N = N or args.batch
            x = rng.standard_normal((N, C, H, H), dtype=np.float32)
            w = rng.standard_normal((Co, C, k, k), dtype=np.float32) / float(np.sqrt(C * k * k))
            Ho = H + 2 * pad - k + 1
            dy = rng.standard_normal((N, Co, Ho, Ho), dtype=np.float32)
            gflop = 2.0 * N * Co * Ho * Ho * C * k * k / 1e9
            ours, ref, theirs = passes(x, w, dy, pad)
            for pass_name in ours:
                got, want = ours[pass_name](), ref[pass_name]()
                err = np.linalg.norm(got - want) / np.linalg.norm(want)
                if not err < 1e-4:
                    raise SystemExit(f"{name} {pass_name}: relative error {err:.2e} against numpy")
                row = {"layer": name, "pass": pass_name, "batch": N, "gflop": gflop}
                times = best_interleaved([ours[pass_name], ref[pass_name], theirs[pass_name]], rounds=args.rounds,
                                         repeat=args.repeat, min_time=args.min_time, settle=args.settle,
                                         idle_limit=args.wait_idle)
                row["ours"], row["numpy"] = gflop / times[0], gflop / times[1]
                row["torch"] = gflop / times[2] if times[2] else None
                row["ratio"] = row["ours"] / row["numpy"]
                row["ratio_torch"] = row["ours"] / row["torch"] if row["torch"] else None
                rows.append(row)
                print(f"  {name:24s} {pass_name:10s} {row['ours']:7.1f} GFLOP/s", file=sys.stderr)
    columns = [("layer", "layer", "{}"), ("batch", "batch", "{}"), ("pass", "pass", "{}"), ("ours", "ours GFLOP/s", "{:.1f}"),
               ("numpy", "numpy GFLOP/s", "{:.1f}"), ("torch", "torch GFLOP/s", "{:.1f}"),
               ("ratio", "vs numpy", "{:.2f}x"), ("ratio_torch", "vs torch", "{:.2f}x")]
    title = (f"conv2d float32 NCHW (isa {_C.active_isa()}, {threads} threads for ours and torch; numpy's OpenBLAS "
             f"its default), vs numpy = ours / numpy, vs torch = ours / torch")
    report(rows, columns, args, title, plot=_plot)


def _plot(rows, ax):
    labels = [f"{r['layer']} N={r['batch']}\n{r['pass']}" for r in rows]
    pos = np.arange(len(rows))
    for i, (key, label) in enumerate((("ours", "pyneural"), ("numpy", "numpy im2col+matmul"), ("torch", "torch"))):
        vals = [r[key] or 0.0 for r in rows]
        if any(vals):
            ax.barh(pos + (i - 1) * 0.27, vals, height=0.27, label=label)
    ax.set_yticks(pos)
    ax.set_yticklabels(labels, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("GFLOP/s")
    ax.legend()


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    main()
