"""Tensor-core GEMM (pyneural.cuda.tensor_core.matmul_tc) against a float64 reference.

Every case draws fresh random inputs, poisons the output with NaN (beta == 0 must not read it),
uses sizes that do not divide the 128 x 128 (mma.sync) / 128 x 256 (wgmma) tiles, and checks
||out - ref|| / ||ref||: < 1e-2 for bf16 / fp16, < 1e-3 for tf32. The reference is computed from
the inputs as the GPU sees them (after the cast to bf16 / fp16), so only accumulation and output
rounding are measured -- and tf32's rounding of the operands, which is part of that contract.
Needs CuPy and a GPU (skipped otherwise); bf16 also needs ml_dtypes and a CuPy with bfloat16.
"""
import math

import numpy as np
import pytest

from conftest import rel_err

from pyneural.cuda import tensor_core as tc

pytestmark = pytest.mark.cuda

TOL = {"bfloat16": 1e-2, "float16": 1e-2, "float32": 1e-3}
LAYOUTS = [(False, False), (False, True), (True, False), (True, True)]
# (M, N, K): edge tiles in every direction, K tails, tiny and large-K cases
SHAPES = [(1, 17, 127), (17, 1, 1000), (127, 1000, 17), (1000, 127, 4099), (130, 258, 72), (256, 128, 64)]


@pytest.fixture(scope="module")
def cp(cuda_xp):
    return cuda_xp


def _np_dtype(name):
    if name == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def _dev(cp, x, name):
    """Host float array -> device array of dtype `name`; also returns the float64 values the GPU sees."""
    host = x.astype(_np_dtype(name))
    try:
        d = cp.asarray(host)
    except Exception as e:  # a CuPy without bfloat16
        pytest.skip(f"this CuPy cannot hold {name} arrays: {e}")
    return d, host.astype(np.float64)


def _operands(cp, rng, M, N, K, ta, tb, name):
    a_shape = (K, M) if ta else (M, K)
    b_shape = (N, K) if tb else (K, N)
    a, a64 = _dev(cp, rng.standard_normal(a_shape), name)
    b, b64 = _dev(cp, rng.standard_normal(b_shape), name)
    ref = (a64.T if ta else a64) @ (b64.T if tb else b64)
    return a, b, ref


def _poisoned(cp, M, N, dtype):
    return cp.full((M, N), np.nan, dtype=dtype)


def _host(x):
    return np.asarray(x.get()).astype(np.float64)


@pytest.mark.parametrize("name", ["bfloat16", "float16", "float32"])
@pytest.mark.parametrize("ta,tb", LAYOUTS)
@pytest.mark.parametrize("M,N,K", SHAPES)
def test_mma_matches_float64(cp, rng, name, ta, tb, M, N, K):
    a, b, ref = _operands(cp, rng, M, N, K, ta, tb, name)
    out = _poisoned(cp, M, N, cp.float32)
    got = tc.matmul_tc(a, b, trans_a=ta, trans_b=tb, out=out, out_dtype=np.float32, kernel="mma")
    assert got is out
    assert rel_err(_host(out), ref) < TOL[name]


@pytest.mark.parametrize("name", ["bfloat16", "float16", "float32"])
def test_misaligned_operands_take_the_elementwise_path(cp, rng, name):
    # base pointers off by one element: no 16-byte copies possible, same answer
    M, N, K = 67, 45, 40
    dt = _np_dtype(name)
    a_host = rng.standard_normal((M, K)).astype(dt)
    b_host = rng.standard_normal((K, N)).astype(dt)
    try:
        a_buf = cp.empty(M * K + 1, dtype=dt)
        b_buf = cp.empty(K * N + 1, dtype=dt)
    except Exception as e:
        pytest.skip(f"this CuPy cannot hold {name} arrays: {e}")
    a = a_buf[1:].reshape(M, K)
    b = b_buf[1:].reshape(K, N)
    a[...] = cp.asarray(a_host)
    b[...] = cp.asarray(b_host)
    assert a.data.ptr % 16 != 0 and a.flags.c_contiguous
    out = _poisoned(cp, M, N, cp.float32)
    tc.matmul_tc(a, b, out=out, out_dtype=np.float32, kernel="mma")
    ref = a_host.astype(np.float64) @ b_host.astype(np.float64)
    assert rel_err(_host(out), ref) < TOL[name]


def _gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


@pytest.mark.parametrize("kernel", ["mma", "wgmma"])
@pytest.mark.parametrize("activation", [None, "relu", "gelu"])
@pytest.mark.parametrize("out_name", ["float32", "input"])
def test_linear_epilogue(cp, rng, kernel, activation, out_name):
    """Linear forward y = act(x @ W^T + b) in one kernel, fp32 or bf16 output."""
    if kernel == "wgmma" and cp.cuda.Device().compute_capability != "90":
        pytest.skip("wgmma needs an sm_90 device")
    M, N, K = 257, 300, 136  # K % 8 == 0 so the wgmma path is eligible
    x, w, ref = _operands(cp, rng, M, N, K, False, True, "bfloat16")
    bias_host = rng.standard_normal(N).astype(np.float32)
    ref = ref + bias_host
    ref = {None: ref, "relu": np.maximum(ref, 0), "gelu": _gelu(ref)}[activation]
    out_dtype = np.float32 if out_name == "float32" else x.dtype
    out = _poisoned(cp, M, N, out_dtype)
    tc.matmul_tc(x, w, trans_b=True, bias=cp.asarray(bias_host), activation=activation, out=out, kernel=kernel)
    assert rel_err(_host(out), ref) < 1e-2


@pytest.mark.parametrize("name", ["bfloat16", "float32"])
def test_alpha_beta_accumulate(cp, rng, name):
    M, N, K = 129, 67, 200
    a, b, ref = _operands(cp, rng, M, N, K, True, False, name)
    c_host = rng.standard_normal((M, N)).astype(np.float32)
    out = cp.asarray(c_host)
    tc.matmul_tc(a, b, trans_a=True, out=out, alpha=0.5, beta=-2.0, out_dtype=np.float32)
    assert rel_err(_host(out), 0.5 * ref - 2.0 * c_host) < TOL[name]


@pytest.mark.parametrize("M,N,K", [(8192 // 32, 520, 1024), (1000, 1000, 4096), (1, 257, 8)])
def test_wgmma_matches_float64(cp, rng, M, N, K):
    if cp.cuda.Device().compute_capability != "90":
        pytest.skip("wgmma needs an sm_90 device")
    for name in ("bfloat16", "float16"):
        a, b, ref = _operands(cp, rng, M, N, K, False, True, name)
        out = _poisoned(cp, M, N, cp.float32)
        tc.matmul_tc(a, b, trans_b=True, out=out, out_dtype=np.float32, kernel="wgmma")
        assert rel_err(_host(out), ref) < TOL[name], name


def test_auto_equals_mma(cp, rng):
    """Whatever "auto" picks (wgmma on sm_90) agrees with the mma.sync kernel."""
    M, N, K = 300, 520, 256
    a, b, ref = _operands(cp, rng, M, N, K, False, True, "bfloat16")
    auto = tc.matmul_tc(a, b, trans_b=True, out_dtype=np.float32)
    mma = tc.matmul_tc(a, b, trans_b=True, out_dtype=np.float32, kernel="mma")
    assert rel_err(_host(auto), ref) < 1e-2 and rel_err(_host(mma), ref) < 1e-2
    assert rel_err(_host(auto), _host(mma)) < 1e-4


# ---- bad input -----------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors(cp):
    a = cp.ones((4, 8), dtype=cp.float16)
    b = cp.ones((8, 5), dtype=cp.float16)
    with pytest.raises(TypeError, match="a must be a cupy.ndarray"):
        tc.matmul_tc(np.ones((4, 8), np.float16), b)
    with pytest.raises(TypeError, match="share one dtype"):
        tc.matmul_tc(a, b.astype(cp.float32))
    with pytest.raises(TypeError, match="dtype bfloat16, float16 or float32"):
        tc.matmul_tc(a.astype(cp.int32), b.astype(cp.int32))
    with pytest.raises(ValueError, match=r"inner dimensions differ.*\(8, 5\)"):
        tc.matmul_tc(a, b, trans_b=True)
    with pytest.raises(ValueError, match="2-D"):
        tc.matmul_tc(a.reshape(2, 2, 8), b)
    with pytest.raises(ValueError, match="C-contiguous"):
        tc.matmul_tc(cp.ones((8, 4), dtype=cp.float16).T, b)
    with pytest.raises(ValueError, match="zero-size"):
        tc.matmul_tc(cp.ones((0, 8), dtype=cp.float16), b)
    with pytest.raises(ValueError, match=r"bias must have shape \(5,\)"):
        tc.matmul_tc(a, b, bias=cp.ones(4, dtype=cp.float32))
    with pytest.raises(ValueError, match="activation"):
        tc.matmul_tc(a, b, activation="tanh")
    with pytest.raises(TypeError, match="out_dtype"):
        tc.matmul_tc(a.astype(cp.float32), b.astype(cp.float32), out_dtype=np.float16)
    with pytest.raises(ValueError, match=r"out must be a float32 array of shape \(4, 5\)"):
        tc.matmul_tc(a, b, out=cp.empty((5, 4), dtype=cp.float32))
    with pytest.raises(ValueError, match="beta"):
        tc.matmul_tc(a, b, beta=1.0)
    with pytest.raises(ValueError, match="kernel='wgmma' needs"):
        tc.matmul_tc(a, b, kernel="wgmma")  # "nn" layout is never wgmma
    with pytest.raises(ValueError, match="kernel must be"):
        tc.matmul_tc(a, b, kernel="cublas")
