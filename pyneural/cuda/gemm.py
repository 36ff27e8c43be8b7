"""SGEMM on CuPy float32 arrays with pyneural's kernel (csrc/cuda/sgemm.cu):
``out = alpha * op(a) @ op(b) + beta * out (+ bias, ReLU)``."""
import numpy as np

from pyneural.cuda import _backend
from pyneural.kernels._checks import (
    check_device_array as check_array, check_no_overlap, check_device_vector as check_vector)

_FN = "cuda.gemm"
TILE_M, TILE_N, THREADS = 128, 128, 256  # must match gemm_tile.cuh (tests/test_cuda_compile.py checks)


def launch_config(m, n):
    """(grid, block, shared memory bytes) of pn_sgemm_*: one 256-thread block per 128 x 128 tile of C."""
    if -(-m // TILE_M) > 65535:
        raise ValueError(f"{_FN}: M = {m} exceeds {65535 * TILE_M} rows (grid limit); split the product")
    return (-(-n // TILE_N), -(-m // TILE_M)), (THREADS,), 0


def gemm(a, b, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, out=None, bias=None, relu=False):
    """Return ``alpha * op(a) @ op(b) + beta * out``, then ``+ bias`` (length N) and ReLU if asked.

    ``a`` (M x K, or K x M with ``trans_a``) and ``b`` (K x N, or N x K with ``trans_b``) are
    C-contiguous float32 CuPy arrays on the current device; a transposed operand is passed as stored
    (no copy). ``out`` (M x N) is required when ``beta != 0``; with ``beta == 0`` its old contents are
    never read."""
    check_array(_FN, "a", a, ndim=2)
    check_array(_FN, "b", b, ndim=2)
    m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    kb, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if k != kb:
        raise ValueError(f"{_FN}: inner dimensions differ: op(a) is {m}x{k} (a.shape {a.shape}, trans_a={trans_a}) "
                         f"but op(b) is {kb}x{n} (b.shape {b.shape}, trans_b={trans_b})")
    bias = check_vector(_FN, "bias", bias, n)
    alpha, beta = float(alpha), float(beta)
    if out is None:
        if beta != 0.0:
            raise ValueError(f"{_FN}: beta={beta} needs an out array to accumulate into")
        out = _backend.cupy().empty((m, n), dtype=np.float32)
    else:
        check_array(_FN, "out", out, ndim=2)
        if out.shape != (m, n):
            raise ValueError(f"{_FN}: out must have shape {(m, n)}, got {out.shape}")
        check_no_overlap(_FN, "out", out, a=a, b=b, bias=bias)
    name = "pn_sgemm_" + ("t" if trans_a else "n") + ("t" if trans_b else "n")
    grid, block, smem = launch_config(m, n)
    _backend.launch("sgemm.cu", name, grid, block,
                    (a, b, out, bias, np.int32(m), np.int32(n), np.int32(k), np.int32(a.shape[1]),
                     np.int32(b.shape[1]), np.int32(n), np.float32(alpha), np.float32(beta), np.int32(bool(relu))),
                    smem)
    return out
