"""How fast is pyneural's CPU convolution? GFLOP/s of forward, backward-data and backward-weight on
the ResNet-50 3x3 and 1x1 layer shapes (batch 8) and the digits-CNN layer (8x8, batch 512), against
numpy im2col + matmul (the float32 numpy path of pyneural.kernels.conv, on numpy's BLAS) and torch's
CPU convolution when torch is installed. Every pass is checked against numpy before it is timed.

    python bench/conv.py [--quick] [--batch N] [--json out.json] [--plot out.png]
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import parser, report, time_call  # noqa: E402

from pyneural import _C  # noqa: E402
from pyneural.kernels import conv  # noqa: E402

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    torch = None

# name, N, C, H(=W), Co, k, padding; batch None = the --batch option.
LAYERS = [
    ("r50 56x56 64->64 3x3", None, 64, 56, 64, 3, 1),
    ("r50 28x28 128->128 3x3", None, 128, 28, 128, 3, 1),
    ("r50 14x14 256->256 3x3", None, 256, 14, 256, 3, 1),
    ("r50 7x7 512->512 3x3", None, 512, 7, 512, 3, 1),
    ("r50 56x56 64->256 1x1", None, 64, 56, 256, 1, 0),
    ("r50 56x56 256->64 1x1", None, 256, 56, 64, 1, 0),
    ("digits 8x8 32->64 3x3", 512, 32, 8, 64, 3, 1),
]
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
    p.add_argument("--batch", type=int, default=8, help="batch of the ResNet-50 layers (default 8)")
    args = p.parse_args()
    repeat = 3 if args.quick else args.repeat
    rng = np.random.default_rng(0)
    rows = []
    with torch.inference_mode() if torch is not None else _nullcontext():
        for name, N, C, H, Co, k, pad in LAYERS:
            if args.quick and name not in QUICK:
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
                row["ours"] = gflop / time_call(ours[pass_name], repeat=repeat)
                row["numpy"] = gflop / time_call(ref[pass_name], repeat=repeat)
                row["torch"] = gflop / time_call(theirs[pass_name], repeat=repeat) if theirs[pass_name] else None
                row["ratio"] = row["ours"] / row["numpy"]
                row["ratio_torch"] = row["ours"] / row["torch"] if row["torch"] else None
                rows.append(row)
                print(f"  {name:24s} {pass_name:10s} {row['ours']:7.1f} GFLOP/s", file=sys.stderr)
    columns = [("layer", "layer", "{}"), ("pass", "pass", "{}"), ("ours", "ours GFLOP/s", "{:.1f}"),
               ("numpy", "numpy GFLOP/s", "{:.1f}"), ("torch", "torch GFLOP/s", "{:.1f}"),
               ("ratio", "vs numpy", "{:.2f}x"), ("ratio_torch", "vs torch", "{:.2f}x")]
    threads = f", torch {torch.get_num_threads()} threads" if torch is not None else ""
    title = f"conv2d float32 NCHW, ResNet-50 layers at batch {args.batch} (isa {_C.active_isa()}{threads})"
    report(rows, columns, args, title, plot=_plot)


def _plot(rows, ax):
    labels = [f"{r['layer']}\n{r['pass']}" for r in rows]
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
