"""Helpers of the tensor-core GEMM tests (test_cuda_tensor_core.py for mma.sync, cuda_wgmma_cases.py
for wgmma): operands with their float64 values, NaN-poisoned outputs, the error-bound tolerances.

The reference is computed from the inputs as the GPU sees them (after the cast to bf16 / fp16), so
only accumulation and output rounding are measured -- and tf32's rounding of the operands, which is
part of that contract: ||out - ref|| / ||ref|| < 1e-2 for bf16 / fp16, < 1e-3 for tf32.
"""
import math

import numpy as np
import pytest

from pyneural.cuda import tensor_core as tc

TOL = {"bfloat16": 1e-2, "float16": 1e-2, "float32": 1e-3}


def np_dtype(name):
    if name == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def to_device(cp, x, name):
    """Host float array -> device array of dtype `name`; also returns the float64 values the GPU sees."""
    host = x.astype(np_dtype(name))
    try:
        d = cp.asarray(host)
    except Exception as e:  # a CuPy without bfloat16
        pytest.skip(f"this CuPy cannot hold {name} arrays: {e}")
    return d, host.astype(np.float64)


def operands(cp, rng, M, N, K, ta, tb, name):
    """Fresh standard-normal a, b for op(a) [M, K] @ op(b) [K, N], and the float64 product."""
    a, a64 = to_device(cp, rng.standard_normal((K, M) if ta else (M, K)), name)
    b, b64 = to_device(cp, rng.standard_normal((N, K) if tb else (K, N)), name)
    return a, b, (a64.T if ta else a64) @ (b64.T if tb else b64)


def poisoned(cp, M, N, dtype):
    return cp.full((M, N), np.nan, dtype=dtype)


def host64(x):
    return np.asarray(x.get()).astype(np.float64)


def gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def assert_all_written(out, what="out"):
    """Every element finite: with outputs that start as NaN, an element no thread wrote shows here."""
    bad = int(np.count_nonzero(~np.isfinite(host64(out))))
    assert bad == 0, f"{what}: {bad} of {out.size} elements are not finite (left unwritten by the kernel?)"


def same_bits(x, y):
    return x.dtype == y.dtype and x.shape == y.shape and np.asarray(x.get()).tobytes() == np.asarray(y.get()).tobytes()


class NanEmpty:
    """The array module matmul_tc allocates from, with ``empty`` filling its arrays with NaN: what the
    emulated device's ``empty`` does, and what a GPU's memory pool does not, so an element a kernel
    leaves unwritten is NaN on every device."""

    def __init__(self, cp):
        self._cp = cp

    def __getattr__(self, name):
        return getattr(self._cp, name)

    def empty(self, shape, dtype=float, order="C"):
        return self._cp.full(shape, np.nan, dtype=dtype, order=order)


@pytest.fixture
def nan_outputs(monkeypatch, cp):
    """matmul_tc's own outputs (out=None) start as NaN on every device."""
    monkeypatch.setattr(tc, "_cupy", lambda: NanEmpty(cp))
