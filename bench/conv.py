"""How fast is pyneural's CPU convolution? GFLOP/s of forward, backward-data and backward-weight on
the ResNet-50 3x3 and 1x1 layer shapes (batch 8) and the digits-CNN layers (1->32 and 32->64, 3x3 on
8x8, batch 32, 128 and 512), against numpy im2col + matmul (the float32 numpy path of
pyneural.kernels.conv, on numpy's BLAS) and torch's CPU convolution when torch is installed, on the
same number of threads as ours. Every pass is checked against numpy before it is timed.

    python bench/conv.py [--quick] [--set r50,digits,resnet] [--batch N] [--json out.json] [--plot out.png]
    python bench/conv.py --channels-last [--set resnet,r50]

--channels-last times our NHWC kernels (NHWC x and dy, OHWI weights: csrc/cpu/conv_nhwc.cpp) against
torch's CPU convolution on channels_last tensors, with our NCHW kernels beside them (vs nchw = NHWC
time / NCHW time, > 1 when NHWC is faster). `--set resnet` is the small ResNet's stride-1 3x3 layers
(pyneural/models.py resnet_small, CIFAR's 32x32) at --batch.

The three libraries take turns, --rounds rounds of --repeat timing windows each, and each keeps its
fastest window (bench/common.py: best_interleaved): the machine is shared, so only ratios from one
run mean much. vs numpy = ours / numpy, vs torch = ours / torch.

    python bench/conv.py --set depthwise

--set depthwise: the MobileNet/EfficientNet layer (groups = channels, 3x3, padding 1) at the shapes
of issue 17, forward + both backwards of our direct depthwise kernel (conv_depthwise.h), of the
GEMM path it replaced (parallel="gemm") and of torch, in one table.

    python bench/conv.py --dtype bf16 [--channels-last] [--quick] [--set r50]

bf16 on the CPU: pyneural's bf16 convolution (pyneural.kernels.conv_bf16, on the bf16 GEMM's active
path: AMX, AVX512-BF16 or portable, named in the title) against torch's bf16 CPU convolution in the
same layout (NCHW, or channels_last with --channels-last), bf16 in and bf16 out (the weight gradient
float32 in ours) on the ResNet-50 layers at batch 8; each pass is checked against float64 first.
vs torch = ours / torch, from the same interleaved run.

    python bench/conv.py --device cuda --dtype bf16 [--layout NHWC,NCHW] [--batch 32] [--quick]

On the GPU (`--device cuda`, bf16 or fp16): the tensor-core kernels (pyneural.cuda.conv_tc, 16-bit in,
16-bit out as cuDNN, fp32 accumulation) against cuDNN through PyTorch (channels_last for NHWC,
cudnn.benchmark on) on the same ResNet-50 layers at batch 32, each pass checked against cuDNN first
(against the float64 CPU path without a CUDA PyTorch). Each call is timed alone with CUDA events after
L2 is flushed; the median of --repeat is kept; % peak is of --peak (H100 / H200 dense bf16).
`--set tiny` is one small layer for rehearsals on the emulated device.
"""
import glob
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# A development tree with its extension built in place runs as it is; elsewhere (bench/gpu_check.sh
# pip-installs the package, leaving the tree unbuilt) the installed pyneural is imported.
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if glob.glob(os.path.join(_REPO, "pyneural", "_C*.so")):
    sys.path.insert(0, _REPO)

from common import best_interleaved, parser, report  # noqa: E402

from pyneural import _C  # noqa: E402
from pyneural.kernels import bf16, conv, conv_bf16  # noqa: E402

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
TINY_LAYERS = [("tiny 8x8 16->16 3x3", 2, 16, 8, 16, 3, 1)]
# Depthwise 3x3 layers, padding 1: name, N, C, H(=W), stride.
DEPTHWISE_LAYERS = [("dw 28x28 64ch s1", 32, 64, 28, 1), ("dw 14x14 128ch s2", 32, 128, 14, 2),
                    ("dw 56x56 32ch s1", 16, 32, 56, 1)]
# The small ResNet's stride-1 layers (the stem and each stage's 3x3) on 32x32 input.
RESNET_LAYERS = [("resnet 32x32 3->16 3x3", None, 3, 32, 16, 3, 1), ("resnet 32x32 16->16 3x3", None, 16, 32, 16, 3, 1),
                 ("resnet 16x16 32->32 3x3", None, 32, 16, 32, 3, 1), ("resnet 8x8 64->64 3x3", None, 64, 8, 64, 3, 1)]
QUICK = {"r50 56x56 64->64 3x3", "r50 7x7 512->512 3x3", "digits 8x8 32->64 3x3", "resnet 32x32 16->16 3x3"}
H200_BF16_PEAK = 989.0  # TFLOP/s, dense bf16 (H100 SXM: the same)


def _nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def _ours(x, w, dy, pad, layout):
    """Our three passes on NCHW arrays, or (layout NHWC) on NHWC copies of them made here, untimed."""
    if layout == "NHWC":
        x, w, dy = _nhwc(x), _nhwc(w), _nhwc(dy)
    return {
        "forward": lambda: conv.conv2d_forward(x, w, None, 1, pad, layout=layout),
        "bwd-data": lambda: conv.conv2d_backward_data(dy, w, x.shape, 1, pad, layout=layout),
        "bwd-weight": lambda: conv.conv2d_backward_weight(dy, x, w.shape, 1, pad, layout=layout),
    }


def _as_nchw(a, layout):
    return a.transpose(0, 3, 1, 2) if layout == "NHWC" else a


def passes(x, w, dy, pad, layout="NCHW"):
    """For each pass: (ours, numpy, torch or None) as zero-argument callables; channels_last torch
    tensors for layout NHWC."""
    ours = _ours(x, w, dy, pad, layout)
    theirs = dict.fromkeys(ours)
    if torch is not None:
        fmt = torch.channels_last if layout == "NHWC" else torch.contiguous_format
        theirs = _torch_passes(*(torch.from_numpy(a).contiguous(memory_format=fmt) for a in (x, w, dy)), pad)
    return ours, _numpy_passes(x, w, dy, pad), theirs


def _numpy_passes(x, w, dy, pad):
    """The three passes of a stride-1 convolution in numpy (pyneural.kernels.conv's reference), in
    the arrays' dtype."""
    hyper = ((1, 1), (pad, pad), (1, 1), 1)
    return {
        "forward": lambda: conv.forward_numpy(x, w, *hyper),
        "bwd-data": lambda: conv.backward_data_numpy(dy, w, x.shape, *hyper),
        "bwd-weight": lambda: conv.backward_weight_numpy(dy, x, w.shape, *hyper),
    }


def _torch_passes(tx, tw, tdy, pad):
    """The same three passes on torch tensors (its kernels directly: no autograd)."""
    back = torch.ops.aten.convolution_backward

    def grad(mask):
        return lambda: back(tdy, tx, tw, None, [1, 1], [pad, pad], [1, 1], False, [0, 0], 1, mask)

    return {"forward": lambda: F.conv2d(tx, tw, None, 1, pad), "bwd-data": grad([True, False, False]),
            "bwd-weight": grad([False, True, False])}


def main():
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="three layers, fewer repetitions")
    p.add_argument("--set", help="layer sets: r50, digits, resnet, tiny (comma-separated; default r50,digits on "
                                 "the CPU, r50 on cuda), or depthwise alone (its own table: forward + both "
                                 "backwards of the depthwise kernel, the GEMM path and torch)")
    p.add_argument("--batch", type=int, help="batch of the ResNet-50 layers (default 8 on the CPU, 32 on cuda)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default=None,
                   help="fp32 (default) or bf16 on the CPU; bf16 (default) or fp16 on cuda (the tensor-core kernels)")
    p.add_argument("--layout", default="NHWC,NCHW", help="cuda: layouts to time (comma-separated)")
    p.add_argument("--channels-last", action="store_true",
                   help="CPU: NHWC activations for both libraries (fp32: our NHWC kernels and torch on channels_last "
                        "tensors, our NCHW kernels beside them; bf16: the bf16 convolution in NHWC)")
    p.add_argument("--peak", type=float, default=H200_BF16_PEAK, help="cuda: TFLOP/s for the %% peak column")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per pass (best is kept)")
    p.add_argument("--min-time", type=float, default=0.02, help="seconds per timing window")
    p.add_argument("--settle", type=float, default=0.2, help="idle seconds before each round")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                   help="before each round wait up to SECONDS for idle CPUs (shared machines; Linux)")
    p.set_defaults(repeat=3)
    args = p.parse_args()
    if args.device == "cuda":
        return cuda_main(args)
    if args.dtype == "fp16":
        raise SystemExit("bench/conv.py: --dtype fp16 runs on --device cuda (the CPU kernels are fp32 and bf16)")
    if args.quick:
        args.rounds, args.repeat = 2, 2
    threads = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count())
    if torch is not None:
        torch.set_num_threads(threads)
    if args.dtype == "bf16":
        return cpu_bf16_main(args, threads)
    args.set, args.batch = args.set or ("resnet,r50" if args.channels_last else "r50,digits"), args.batch or 8
    if args.set == "depthwise":
        return depthwise_main(args, threads)
    layout = "NHWC" if args.channels_last else "NCHW"
    sets = args.set.split(",")
    layers = _layers(sets)
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
            ours, ref, theirs = passes(x, w, dy, pad, layout)
            nchw = _ours(x, w, dy, pad, "NCHW") if layout == "NHWC" else None
            for pass_name in ours:
                got, want = _as_nchw(ours[pass_name](), layout), ref[pass_name]()
                err = np.linalg.norm(got - want) / np.linalg.norm(want)
                if not err < 1e-4:
                    raise SystemExit(f"{name} {pass_name}: relative error {err:.2e} against numpy")
                row = {"layer": name, "pass": pass_name, "batch": N, "gflop": gflop}
                times = best_interleaved([ours[pass_name], ref[pass_name], theirs[pass_name]]
                                         + ([nchw[pass_name]] if nchw else []), rounds=args.rounds,
                                         repeat=args.repeat, min_time=args.min_time, settle=args.settle,
                                         idle_limit=args.wait_idle)
                row["ours"], row["numpy"] = gflop / times[0], gflop / times[1]
                row["torch"] = gflop / times[2] if times[2] else None
                if nchw:
                    row["nchw"], row["ratio_nchw"] = gflop / times[3], times[3] / times[0]
                row["ratio"] = row["ours"] / row["numpy"]
                row["ratio_torch"] = row["ours"] / row["torch"] if row["torch"] else None
                rows.append(row)
                print(f"  {name:24s} {pass_name:10s} {row['ours']:7.1f} GFLOP/s", file=sys.stderr)
    columns = [("layer", "layer", "{}"), ("batch", "batch", "{}"), ("pass", "pass", "{}"), ("ours", "ours GFLOP/s", "{:.1f}"),
               ("numpy", "numpy GFLOP/s", "{:.1f}"), ("torch", "torch GFLOP/s", "{:.1f}"),
               ("ratio", "vs numpy", "{:.2f}x"), ("ratio_torch", "vs torch", "{:.2f}x")]
    if layout == "NHWC":
        columns[4:4] = [("nchw", "ours NCHW GFLOP/s", "{:.1f}")]
        columns.append(("ratio_nchw", "vs nchw", "{:.2f}x"))
    title = (f"conv2d float32 {layout}{' (torch channels_last)' if layout == 'NHWC' else ''} (isa "
             f"{_C.active_isa()}, {threads} threads for ours and torch; numpy's OpenBLAS its default), "
             f"vs numpy = ours / numpy, vs torch = ours / torch")
    report(rows, columns, args, title, plot=_plot)


# ---- the depthwise rows: the direct kernel, the GEMM path and torch ------------------------------
def depthwise_main(args, threads):
    """Forward + backward-data + backward-weight of each DEPTHWISE_LAYERS shape (ms, one step's worth)."""
    rng = np.random.default_rng(0)
    rows = []
    for name, N, C, H, stride in DEPTHWISE_LAYERS:
        Ho = (H + 2 - 3) // stride + 1
        x = rng.standard_normal((N, C, H, H), dtype=np.float32)
        w = rng.standard_normal((C, 1, 3, 3), dtype=np.float32) / np.float32(3.0)
        dy = rng.standard_normal((N, C, Ho, Ho), dtype=np.float32)
        y, dx, dw = np.empty(dy.shape, np.float32), np.empty_like(x), np.empty_like(w)
        hyper = ((stride, stride), (1, 1), (1, 1), C)

        def step(parallel):
            def run():
                _C.conv2d_forward(x, w, None, y, *hyper, False, parallel)
                _C.conv2d_backward_data(dy, w, dx, *hyper, parallel)
                _C.conv2d_backward_weight(dy, x, dw, *hyper, parallel)
            return run

        fns = [step("auto"), step("gemm")]
        step("auto")()
        want = conv.forward_numpy(x.astype(np.float64), w.astype(np.float64), *hyper)
        if not np.linalg.norm(y - want) / np.linalg.norm(want) < 1e-5:
            raise SystemExit(f"{name}: the depthwise forward disagrees with numpy")
        if torch is not None:
            tx, tw, tdy = (torch.from_numpy(a) for a in (x, w, dy))
            back = torch.ops.aten.convolution_backward

            def theirs():
                F.conv2d(tx, tw, None, stride, 1, 1, C)
                back(tdy, tx, tw, None, [stride] * 2, [1, 1], [1, 1], False, [0, 0], C, [True, True, False])
            fns.append(theirs)
        with torch.inference_mode() if torch is not None else _nullcontext():
            times = best_interleaved(fns, rounds=args.rounds, repeat=args.repeat, min_time=args.min_time,
                                     settle=args.settle, idle_limit=args.wait_idle)
        row = {"layer": name, "batch": N, "ours_ms": times[0] * 1e3, "gemm_ms": times[1] * 1e3,
               "torch_ms": times[2] * 1e3 if torch is not None and times[2] else None}
        row["ratio_torch"] = times[2] / times[0] if row["torch_ms"] else None
        row["ratio_gemm"] = times[1] / times[0]
        rows.append(row)
    columns = [("layer", "layer", "{}"), ("batch", "batch", "{}"), ("ours_ms", "ours ms", "{:.2f}"),
               ("gemm_ms", "GEMM path ms", "{:.2f}"), ("torch_ms", "torch ms", "{:.2f}"),
               ("ratio_gemm", "vs GEMM path", "{:.2f}x"), ("ratio_torch", "vs torch", "{:.2f}x")]
    title = (f"depthwise conv 3x3 pad 1, forward + backward-data + backward-weight, float32 NCHW (isa "
             f"{_C.active_isa()}, {threads} threads for ours and torch); vs = their time / ours (> 1: ours faster)")
    report(rows, columns, args, title, plot=None)


# ---- the CPU bf16 rows: the bf16 convolution against torch's ------------------------------------
def _bf16_passes(x, w, dy, pad, channels_last):
    """For each pass: (ours, torch or None, float64 reference) as zero-argument callables; x and dy are
    bf16 in the layout asked for."""
    BF16 = bf16.bfloat16
    ours = {
        "forward": lambda: conv_bf16.conv2d_bf16_forward(x, w, None, 1, pad, out_dtype=BF16),
        "bwd-data": lambda: conv_bf16.conv2d_bf16_backward_data(dy, w, x.shape, 1, pad, out_dtype=BF16),
        "bwd-weight": lambda: conv_bf16.conv2d_bf16_backward_weight(dy, x, w.shape, 1, pad),
    }
    ref = _numpy_passes(*(a.astype(np.float64) for a in (x, w, dy)), pad)
    theirs = dict.fromkeys(ours)
    if torch is not None:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        theirs = _torch_passes(*(torch.from_numpy(a.astype(np.float32)).bfloat16().contiguous(memory_format=fmt)
                                 for a in (x, w, dy)), pad)
    return ours, theirs, ref


def cpu_bf16_main(args, threads):
    """The --dtype bf16 CPU rows: ours (conv_bf16) vs torch's bf16 conv, one layout, per layer and pass."""
    BF16 = bf16.bfloat16
    batch = args.batch or 8
    layout = "NHWC" if args.channels_last else "NCHW"
    rng = np.random.default_rng(0)
    rows = []

    def place(a):
        return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2) if args.channels_last else a

    with torch.inference_mode() if torch is not None else _nullcontext():
        for name, N, C, H, Co, k, pad in _layers((args.set or "r50").split(",")):
            if args.quick and name not in QUICK:
                continue
            N = batch if name.startswith("r50") else N
            Ho = H + 2 * pad - k + 1
            x = place(rng.standard_normal((N, C, H, H), dtype=np.float32).astype(BF16))
            w = (rng.standard_normal((Co, C, k, k), dtype=np.float32) / np.float32(np.sqrt(C * k * k))).astype(BF16)
            dy = place(rng.standard_normal((N, Co, Ho, Ho), dtype=np.float32).astype(BF16))
            gflop = 2.0 * N * Co * Ho * Ho * C * k * k / 1e9
            ours, theirs, ref = _bf16_passes(x, w, dy, pad, args.channels_last)
            for pass_name in ours:
                want = ref[pass_name]()
                err = float(np.linalg.norm(ours[pass_name]().astype(np.float64) - want) / np.linalg.norm(want))
                if not err < 1e-2:  # a bf16 output: half a bf16 ulp, relative
                    raise SystemExit(f"{name} {layout} {pass_name}: relative error {err:.2e} against float64")
                times = best_interleaved([ours[pass_name], theirs[pass_name]], rounds=args.rounds, repeat=args.repeat,
                                         min_time=args.min_time, settle=args.settle, idle_limit=args.wait_idle)
                row = {"layer": name, "layout": layout, "pass": pass_name, "batch": N, "gflop": gflop, "err": err,
                       "ours": gflop / times[0], "torch": gflop / times[1] if times[1] else None}
                row["ratio_torch"] = row["ours"] / row["torch"] if row["torch"] else None
                rows.append(row)
                print(f"  {name:24s} {layout} {pass_name:10s} {row['ours']:7.1f} GFLOP/s", file=sys.stderr)
    columns = [("layer", "layer", "{}"), ("batch", "batch", "{}"), ("layout", "layout", "{}"), ("pass", "pass", "{}"),
               ("ours", "ours GFLOP/s", "{:.1f}"), ("torch", "torch bf16 GFLOP/s", "{:.1f}"),
               ("ratio_torch", "vs torch", "{:.2f}x"), ("err", "rel err", "{:.1e}")]
    title = (f"conv2d bf16 {layout} on the CPU (pyneural bf16 GEMM path {bf16.gemm_isa()}, {threads} threads for "
             f"ours and torch), bf16 in/out (dW fp32 in ours), vs torch = ours / torch")
    report(rows, columns, args, title, plot=_plot)


def _layers(sets):
    if "depthwise" in sets:
        raise SystemExit("bench/conv.py: --set depthwise has its own table and runs alone (--set depthwise), "
                         "not combined with other sets")
    unknown = set(sets) - {"r50", "digits", "tiny", "resnet"}
    if unknown:
        raise SystemExit(f"bench/conv.py: unknown layer set(s) {sorted(unknown)}; choose from r50, digits, resnet, "
                         f"tiny, or depthwise alone")
    return ((RESNET_LAYERS if "resnet" in sets else []) + (R50_LAYERS if "r50" in sets else [])
            + (DIGITS_LAYERS if "digits" in sets else []) + (TINY_LAYERS if "tiny" in sets else []))


# ---- the GPU rows: the tensor-core kernels against cuDNN ------------------------------------------
def _torch_cuda():
    if torch is None or not torch.cuda.is_available():
        return None
    torch.backends.cudnn.benchmark = True
    return torch


def _np_dtype(dtype):
    if dtype == "fp16":
        return np.float16
    import ml_dtypes
    return ml_dtypes.bfloat16


def _time_cold(cp, fn, repeat, flush, stream_ptr=None):
    """Median seconds of one call after L2 is flushed, timed with CUDA events on the caller's stream
    (``stream_ptr``: a foreign stream, PyTorch's)."""
    stream = cp.cuda.ExternalStream(stream_ptr) if stream_ptr is not None else cp.cuda.get_current_stream()
    with stream:
        fn()
        samples = []
        for _ in range(repeat):
            if flush is not None:
                flush.fill(0)
            start, stop = cp.cuda.Event(), cp.cuda.Event()
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            samples.append(cp.cuda.get_elapsed_time(start, stop) / 1e3)
    return float(np.median(samples))


def _cuda_layer(cp, tc, th, dtype, layout, N, C, H, Co, k, pad, rng):
    """(ours, theirs or None, check) per pass: zero-argument callables on the device and a check that
    returns the relative error of ours against cuDNN (or the float64 CPU path)."""
    np_dtype = _np_dtype(dtype)
    x = rng.standard_normal((N, C, H, H), dtype=np.float32).astype(np_dtype)
    w = (rng.standard_normal((Co, C, k, k), dtype=np.float32) / np.float32(np.sqrt(C * k * k))).astype(np_dtype)
    Ho = H + 2 * pad - k + 1
    dy = rng.standard_normal((N, Co, Ho, Ho), dtype=np.float32).astype(np_dtype)
    nhwc = layout == "NHWC"
    put = (lambda a: cp.asarray(np.ascontiguousarray(a.transpose(0, 2, 3, 1)))) if nhwc else cp.asarray
    back = (lambda a: np.asarray(a.get()).astype(np.float32).transpose(0, 3, 1, 2)) if nhwc else (
        lambda a: np.asarray(a.get()).astype(np.float32))
    xd, wd, dyd = put(x), put(w), put(dy)
    x_shape, w_shape = xd.shape, wd.shape
    hyper = dict(stride=1, padding=pad, layout=layout, out_dtype=np_dtype)
    ours = {
        "forward": lambda: tc.conv2d_forward(xd, wd, None, **hyper),
        "bwd-data": lambda: tc.conv2d_backward_data(dyd, wd, x_shape, **hyper),
        "bwd-weight": lambda: tc.conv2d_backward_weight(dyd, xd, w_shape, **hyper),
    }
    if th is not None:
        tdt = th.float16 if dtype == "fp16" else th.bfloat16
        fmt = th.channels_last if nhwc else th.contiguous_format
        tx, tw, tdy = (th.from_numpy(a.astype(np.float32)).to("cuda").to(tdt).contiguous(memory_format=fmt)
                       for a in (x, w, dy))
        grad = th.ops.aten.convolution_backward

        def bwd(mask, i):
            return lambda: grad(tdy, tx, tw, None, [1, 1], [pad, pad], [1, 1], False, [0, 0], 1, mask)[i]

        theirs = {"forward": lambda: th.nn.functional.conv2d(tx, tw, None, 1, pad),
                  "bwd-data": bwd([True, False, False], 0), "bwd-weight": bwd([False, True, False], 1)}
        want = {name: (lambda f=f: f().float().contiguous().cpu().numpy()) for name, f in theirs.items()}
    else:
        theirs = dict.fromkeys(ours)
        x64, w64, dy64 = (a.astype(np.float64) for a in (x, w, dy))
        want = {"forward": lambda: conv.forward_numpy(x64, w64, (1, 1), (pad, pad), (1, 1), 1),
                "bwd-data": lambda: conv.backward_data_numpy(dy64, w64, x.shape, (1, 1), (pad, pad), (1, 1), 1),
                "bwd-weight": lambda: conv.backward_weight_numpy(dy64, x64, w.shape, (1, 1), (pad, pad), (1, 1), 1)}

    def check(name):
        ref = want[name]()
        return float(np.linalg.norm(back(ours[name]()) - ref) / np.linalg.norm(ref))
    return ours, theirs, check


def cuda_main(args):
    """The --device cuda rows: ours (conv_tc) vs cuDNN per layer, layout and pass."""
    from pyneural.cuda import _backend, conv_tc, emulator
    if not _backend.available():
        raise SystemExit(f"bench/conv.py --device cuda: no usable device ({_backend.unavailable_reason()})")
    dtype = args.dtype or "bf16"
    if dtype == "fp32":
        raise SystemExit("bench/conv.py --device cuda times the 16-bit tensor-core kernels (--dtype bf16 or fp16); "
                         "the fp32 CUDA-core conv is in bench/cuda_kernels.py")
    if emulator.enabled():
        print("bench/conv.py: on the EMULATED device (PYNEURAL_CUDA_EMULATE): a dry run, the times are CPU times "
              "of the emulator, not GPU numbers")
    cp, th = _backend.cupy(), _torch_cuda()
    l2 = int(cp.cuda.Device().attributes.get("L2CacheSize", 0))
    flush = cp.empty(2 * l2 // 4, dtype=np.float32) if l2 else None
    layouts = [v.strip().upper() for v in args.layout.split(",")]
    batch = args.batch or 32
    rng = np.random.default_rng(0)
    rows = []
    for name, N, C, H, Co, k, pad in _layers((args.set or "r50").split(",")):
        if args.quick and name not in QUICK | {"tiny 8x8 16->16 3x3"}:
            continue
        N = batch if name.startswith("r50") else N
        Ho = H + 2 * pad - k + 1
        gflop = 2.0 * N * Co * Ho * Ho * C * k * k / 1e9
        for layout in layouts:
            ours, theirs, check = _cuda_layer(cp, conv_tc, th, dtype, layout, N, C, H, Co, k, pad, rng)
            for pass_name in ours:
                err = check(pass_name)
                if not err < 2e-2:
                    raise SystemExit(f"{name} {layout} {pass_name}: relative error {err:.2e} against "
                                     f"{'cuDNN' if th is not None else 'float64'}")
                t_ours = _time_cold(cp, ours[pass_name], args.repeat, flush)
                t_theirs = (_time_cold(cp, theirs[pass_name], args.repeat, flush, th.cuda.current_stream().cuda_stream)
                            if th is not None else None)
                row = {"layer": name, "layout": layout, "pass": pass_name, "batch": N, "gflop": gflop, "err": err,
                       "ours_us": t_ours * 1e6, "ours": gflop / t_ours / 1e3,
                       "cudnn": gflop / t_theirs / 1e3 if t_theirs else None}
                row["peak_pct"] = 100.0 * row["ours"] / args.peak
                row["ratio"] = row["ours"] / row["cudnn"] if row["cudnn"] else None
                rows.append(row)
                print(f"  {name:24s} {layout} {pass_name:10s} {row['ours']:8.2f} TFLOP/s", file=sys.stderr)
    columns = [("layer", "layer", "{}"), ("batch", "batch", "{}"), ("layout", "layout", "{}"), ("pass", "pass", "{}"),
               ("ours_us", "ours us", "{:.1f}"), ("ours", "ours TFLOP/s", "{:.1f}"), ("peak_pct", "% peak", "{:.1f}"),
               ("cudnn", "cuDNN TFLOP/s", "{:.1f}"), ("ratio", "vs cuDNN", "{:.2f}x"), ("err", "rel err", "{:.1e}")]
    from pyneural.cuda import get_device_name
    title = (f"conv2d {dtype} on {get_device_name(cp.cuda.Device().id)}: pyneural conv_tc "
             f"(mma.sync implicit GEMM, {dtype} out) vs cuDNN via torch; % peak of {args.peak:.0f} TFLOP/s")
    report(rows, columns, args, title, plot=None)


def _plot(rows, ax):
    labels = [f"{r['layer']} N={r['batch']}\n{r['pass']}" for r in rows]
    pos = np.arange(len(rows))
    for i, (key, label) in enumerate((("ours", "pyneural"), ("numpy", "numpy im2col+matmul"), ("torch", "torch"))):
        vals = [r.get(key) or 0.0 for r in rows]
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
