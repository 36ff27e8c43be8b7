"""pyneural's CUDA kernels against the vendor libraries on the same GPU, TFLOP/s and ratio.

    python bench/cuda_kernels.py                    # GEMM 1024..8192 (incl. 4096^3) + ResNet-50 convs
    python bench/cuda_kernels.py --only gemm --sizes 4096
    python bench/cuda_kernels.py --json gpu.json --plot gpu.png

GEMM: pyneural.cuda.gemm (csrc/cuda/sgemm.cu, fp32 CUDA cores) vs cupy.matmul (cuBLAS; TF32 is
off unless CUPY_TF32=1, so both are plain fp32). Conv: pyneural.cuda.conv2d_forward (implicit GEMM)
vs torch.nn.functional.conv2d (cuDNN, fp32 with TF32 disabled) on the ResNet-50 3x3 and 1x1
layer shapes at batch 32 and 128, NCHW. Each pair is timed with CUDA events in the same run,
interleaved, best of --repeat; every shape is first checked against the reference.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import parser, report  # noqa: E402

SQUARES = [1024, 2048, 4096, 8192]
# (label, C_in, H=W, C_out, kernel, stride, padding): ResNet-50's distinct conv shapes
RESNET50 = [
    ("56x56 64->64 3x3", 64, 56, 64, 3, 1, 1),
    ("28x28 128->128 3x3", 128, 28, 128, 3, 1, 1),
    ("14x14 256->256 3x3", 256, 14, 256, 3, 1, 1),
    ("7x7 512->512 3x3", 512, 7, 512, 3, 1, 1),
    ("56x56 64->256 1x1", 64, 56, 256, 1, 1, 0),
    ("56x56 256->64 1x1", 256, 56, 64, 1, 1, 0),
    ("28x28 512->128 1x1", 512, 28, 128, 1, 1, 0),
    ("14x14 1024->256 1x1", 1024, 14, 256, 1, 1, 0),
    ("7x7 2048->512 1x1", 2048, 7, 512, 1, 1, 0),
]


def gpu_or_exit():
    from pyneural.cuda import _backend, emulator
    if not _backend.available():
        sys.exit("bench/cuda_kernels.py needs CuPy and a CUDA GPU (compute capability >= 8.0); none found here.")
    if emulator.enabled():
        print("bench/cuda_kernels.py: on the EMULATED device (PYNEURAL_CUDA_EMULATE): a dry run of this script, "
              "the times are CPU times of the emulator and of numpy, not GPU numbers")
    return _backend.cupy()


def time_gpu(cp, fn, repeat, iters=10):
    """Best per-call seconds over ``repeat`` rounds of ``iters`` calls, timed with CUDA events."""
    fn()
    cp.cuda.get_current_stream().synchronize()
    best = float("inf")
    for _ in range(repeat):
        start, stop = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        for _ in range(iters):
            fn()
        stop.record()
        stop.synchronize()
        best = min(best, cp.cuda.get_elapsed_time(start, stop) / 1e3 / iters)
    return best


def bench_gemm(cp, sizes, repeat):
    from pyneural.cuda.gemm import gemm
    rows = []
    for n in sizes:
        a = cp.random.standard_normal((n, n), dtype=np.float32)
        b = cp.random.standard_normal((n, n), dtype=np.float32)
        out = cp.empty((n, n), dtype=np.float32)
        ref = cp.matmul(a, b)
        gemm(a, b, out=out)
        err = float(cp.linalg.norm(out - ref) / cp.linalg.norm(ref))
        if err > 1e-4:
            sys.exit(f"GEMM {n}^3 disagrees with cuBLAS: relative error {err:.2e}")
        ours = time_gpu(cp, lambda: gemm(a, b, out=out), repeat)
        theirs = time_gpu(cp, lambda: cp.matmul(a, b, out=ref), repeat)
        flops = 2.0 * n ** 3
        rows.append({"kind": "gemm", "shape": f"{n}^3", "ours_tflops": flops / ours / 1e12,
                     "ref_tflops": flops / theirs / 1e12, "ratio": theirs / ours})
    return rows


def bench_conv(cp, batches, repeat):
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        print("conv rows need PyTorch with CUDA (pip install torch); skipped")
        return []
    if not torch.cuda.is_available():
        print("conv rows need a CUDA build of PyTorch; skipped")
        return []
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    from pyneural.cuda.conv import conv2d_forward
    rows = []
    for batch in batches:
        for label, c, hw, oc, k, s, p in RESNET50:
            x = cp.random.standard_normal((batch, c, hw, hw), dtype=np.float32)
            w = cp.random.standard_normal((oc, c, k, k), dtype=np.float32) * (1.0 / np.sqrt(c * k * k))
            xt, wt = torch.as_tensor(x, device="cuda"), torch.as_tensor(w, device="cuda")
            y = conv2d_forward(x, w, stride=s, padding=p)
            yt = F.conv2d(xt, wt, stride=s, padding=p)
            err = float(cp.linalg.norm(y - cp.asarray(yt)) / cp.linalg.norm(cp.asarray(yt)))
            if err > 1e-4:
                sys.exit(f"conv {label} batch {batch} disagrees with cuDNN: relative error {err:.2e}")
            ours = time_gpu(cp, lambda: conv2d_forward(x, w, stride=s, padding=p, out=y), repeat)
            # torch runs on its own current stream; time it with the same events on that stream.
            with cp.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream):
                theirs = time_gpu(cp, lambda: F.conv2d(xt, wt, stride=s, padding=p), repeat)
            oh = (hw + 2 * p - k) // s + 1
            flops = 2.0 * batch * oc * oh * oh * c * k * k
            rows.append({"kind": "conv", "shape": f"b{batch} {label}", "ours_tflops": flops / ours / 1e12,
                         "ref_tflops": flops / theirs / 1e12, "ratio": theirs / ours})
    return rows


def main():
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--only", choices=["gemm", "conv"], help="run one family")
    p.add_argument("--sizes", default=",".join(map(str, SQUARES)), help="GEMM squares, comma separated")
    p.add_argument("--batches", default="32,128", help="conv batch sizes, comma separated")
    args = p.parse_args()
    cp = gpu_or_exit()
    rows = []
    if args.only in (None, "gemm"):
        rows += bench_gemm(cp, [int(v) for v in args.sizes.split(",")], args.repeat)
    if args.only in (None, "conv"):
        rows += bench_conv(cp, [int(v) for v in args.batches.split(",")], args.repeat)
    columns = [("kind", "kind", "{}"), ("shape", "shape", "{}"), ("ours_tflops", "ours TFLOP/s", "{:.2f}"),
               ("ref_tflops", "cuBLAS/cuDNN TFLOP/s", "{:.2f}"), ("ratio", "ratio (ours/ref speed)", "{:.3f}")]

    def plot(rows, ax):
        ax.barh([r["shape"] for r in rows], [r["ratio"] for r in rows])
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_xlabel("speed relative to cuBLAS / cuDNN (fp32)")

    device = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)["name"].decode()
    report(rows, columns, args, f"pyneural CUDA kernels vs cuBLAS / cuDNN, fp32, {device}", plot)


if __name__ == "__main__":
    main()
