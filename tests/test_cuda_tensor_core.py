"""Tensor-core GEMM (pyneural.cuda.tensor_core.matmul_tc), mma.sync kernel, against a float64 reference.

Every case draws fresh random inputs, poisons the output with NaN (beta == 0 must not read it; an
output matmul_tc allocates itself starts as NaN too, see tensor_core_helpers.NanEmpty), uses sizes
that do not divide the 128 x 128 tiles, and checks ||out - ref|| / ||ref|| against the error-bound
tolerances of tensor_core_helpers.TOL. The wgmma kernel (sm_90 only; refused by the emulated
device) is tested in cuda_wgmma_cases.py, in a process of its own (test_cuda_wgmma.py).
Needs CuPy and a GPU, or the emulated device; bf16 also needs ml_dtypes and a CuPy with bfloat16.
"""
import numpy as np
import pytest

from conftest import rel_err
from tensor_core_helpers import (TOL, assert_all_written, gelu, host64, nan_outputs, np_dtype,  # noqa: F401
                                 operands, poisoned, same_bits)

from pyneural.cuda import tensor_core as tc

pytestmark = pytest.mark.cuda

LAYOUTS = [(False, False), (False, True), (True, False), (True, True)]
# (M, N, K): edge tiles in every direction, K tails, tiny and large-K cases
SHAPES = [(1, 17, 127), (17, 1, 1000), (127, 1000, 17), (1000, 127, 4099), (130, 258, 72), (256, 128, 64)]


@pytest.fixture(scope="module")
def cp(cuda_xp):
    return cuda_xp


@pytest.mark.parametrize("name", ["bfloat16", "float16", "float32"])
@pytest.mark.parametrize("ta,tb", LAYOUTS)
@pytest.mark.parametrize("M,N,K", SHAPES)
def test_mma_matches_float64(cp, rng, name, ta, tb, M, N, K):
    a, b, ref = operands(cp, rng, M, N, K, ta, tb, name)
    out = poisoned(cp, M, N, cp.float32)
    got = tc.matmul_tc(a, b, trans_a=ta, trans_b=tb, out=out, out_dtype=np.float32, kernel="mma")
    assert got is out
    assert rel_err(host64(out), ref) < TOL[name]


@pytest.mark.parametrize("ta,tb", LAYOUTS)
def test_mma_fp16_in_fp16_out(cp, rng, nan_outputs, ta, tb):
    """f16 inputs, f16 output (the default out_dtype), in an output matmul_tc allocates itself."""
    M, N, K = 131, 197, 72
    a, b, ref = operands(cp, rng, M, N, K, ta, tb, "float16")
    out = tc.matmul_tc(a, b, trans_a=ta, trans_b=tb, kernel="mma")
    assert out.dtype == np.float16 and out.shape == (M, N)
    assert_all_written(out)
    assert rel_err(host64(out), ref) < TOL["float16"]


@pytest.mark.parametrize("name", ["bfloat16", "float16", "float32"])
def test_mma_runs_twice_to_the_same_bits(cp, rng, nan_outputs, name):
    """No atomics, no split-K: the same inputs give the same bits, in a fresh NaN-filled output each time."""
    M, N, K = 200, 150, 264
    a, b, ref = operands(cp, rng, M, N, K, False, True, name)
    first = tc.matmul_tc(a, b, trans_b=True, out_dtype=np.float32, kernel="mma")
    second = tc.matmul_tc(a, b, trans_b=True, out_dtype=np.float32, kernel="mma")
    assert first is not second
    assert_all_written(first)
    assert same_bits(first, second)
    assert rel_err(host64(first), ref) < TOL[name]


@pytest.mark.parametrize("name", ["bfloat16", "float16", "float32"])
def test_misaligned_operands_take_the_elementwise_path(cp, rng, name):
    # base pointers off by one element: no 16-byte copies possible, same answer
    M, N, K = 67, 45, 40
    dt = np_dtype(name)
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
    out = poisoned(cp, M, N, cp.float32)
    tc.matmul_tc(a, b, out=out, out_dtype=np.float32, kernel="mma")
    ref = a_host.astype(np.float64) @ b_host.astype(np.float64)
    assert rel_err(host64(out), ref) < TOL[name]


@pytest.mark.parametrize("activation", [None, "relu", "gelu"])
@pytest.mark.parametrize("out_name", ["float32", "input"])
def test_linear_epilogue(cp, rng, activation, out_name):
    """Linear forward y = act(x @ W^T + b) in one kernel, fp32 or bf16 output."""
    M, N, K = 257, 300, 136
    x, w, ref = operands(cp, rng, M, N, K, False, True, "bfloat16")
    bias_host = rng.standard_normal(N).astype(np.float32)
    ref = ref + bias_host
    ref = {None: ref, "relu": np.maximum(ref, 0), "gelu": gelu(ref)}[activation]
    out_dtype = np.float32 if out_name == "float32" else x.dtype
    out = poisoned(cp, M, N, out_dtype)
    tc.matmul_tc(x, w, trans_b=True, bias=cp.asarray(bias_host), activation=activation, out=out, kernel="mma")
    assert rel_err(host64(out), ref) < 1e-2


@pytest.mark.parametrize("name", ["bfloat16", "float32"])
def test_alpha_beta_accumulate(cp, rng, name):
    M, N, K = 129, 67, 200
    a, b, ref = operands(cp, rng, M, N, K, True, False, name)
    c_host = rng.standard_normal((M, N)).astype(np.float32)
    out = cp.asarray(c_host)
    tc.matmul_tc(a, b, trans_a=True, out=out, alpha=0.5, beta=-2.0, out_dtype=np.float32)
    assert rel_err(host64(out), 0.5 * ref - 2.0 * c_host) < TOL[name]


# ---- NaN poisoning: an element no thread writes cannot pass -------------------------------------
@pytest.mark.parametrize("name", ["bfloat16", "float16", "float32"])
def test_unwritten_output_elements_are_caught(cp, nan_outputs, name):
    dt = np_dtype(name)
    if getattr(cp.cuda, "emulated", False):  # the emulated device poisons every allocation itself
        assert np.isnan(host64(cp.empty((3, 5), dtype=dt))).all()
    out = tc._cupy().empty((64, 48), dtype=dt)  # what matmul_tc allocates its output with
    assert np.isnan(host64(out)).all()
    out[:, :47] = 1  # a "kernel" that forgets the last column
    with pytest.raises(AssertionError, match="64 of 3072 elements are not finite"):
        assert_all_written(out)


# ---- a struct by value: the 128-byte TMA descriptor's argument form ------------------------------
_BLOB_KERNEL = r"""
struct alignas(128) PnBlob { unsigned long long words[16]; };
extern "C" __global__ void pn_copy_blob(const __grid_constant__ PnBlob blob, unsigned long long* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = blob.words[i];
}
"""


def test_struct_argument_reaches_the_kernel_by_value(cp, rng):
    """tc.struct_arg (what the wgmma launch passes its tensor maps as) arrives byte for byte."""
    raw = rng.integers(0, 256, 128, dtype=np.uint8).tobytes()
    fn = cp.RawModule(code=_BLOB_KERNEL, options=("-std=c++17",)).get_function("pn_copy_blob")
    out = cp.zeros(16, dtype=cp.uint64)
    fn((1,), (32,), (tc.struct_arg(raw), out, np.int32(16)))
    assert np.asarray(out.get()).tobytes() == raw
    if getattr(cp.cuda, "emulated", False):  # never hand a real CuPy 14 a 128-byte scalar: see struct_arg
        blob = tc.struct_arg(raw)
        with pytest.raises(TypeError, match="numpy.void scalar, which CuPy refuses"):
            fn((1,), (32,), (blob[0], out, np.int32(16)))
        with pytest.raises(TypeError, match=r"one-element numpy array of its bytes, got numpy.ndarray of shape \(2,\)"):
            fn((1,), (32,), (np.concatenate([blob, blob]), out, np.int32(16)))


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
    with pytest.raises(ValueError, match="a must have 2 dimensions"):
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
