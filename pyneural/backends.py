"""``pn.backends``: PyTorch's switches for how float32 matrix products may run on the GPU.

``pn.backends.cuda.matmul.allow_tf32 = True`` (or ``pn.set_float32_matmul_precision("high")``) lets
float32 matmul / linear on the CUDA device run on the tensor cores as tf32 (mma.sync m16n8k8: 10-bit
mantissas, fp32 accumulation, ~3e-4 relative error) instead of the fp32 SGEMM. Off by default, as
in PyTorch. The CPU ignores it.
"""
import types

cuda = types.SimpleNamespace(matmul=types.SimpleNamespace(allow_tf32=False))
_PRECISIONS = ("highest", "high", "medium")


def set_float32_matmul_precision(precision):
    if precision not in _PRECISIONS:
        raise ValueError(f"set_float32_matmul_precision: expected one of {_PRECISIONS}, got {precision!r}")
    cuda.matmul.allow_tf32 = precision != "highest"


def get_float32_matmul_precision():
    return "high" if cuda.matmul.allow_tf32 else "highest"
