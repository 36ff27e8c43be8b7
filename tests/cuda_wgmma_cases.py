"""The wgmma tensor-core GEMM (csrc/cuda/gemm_tc_wgmma.cu: TMA + wgmma + mbarriers, sm_90a) against
a float64 reference, with the tolerances of tensor_core_helpers.TOL.

Not collected by a plain ``pytest tests/``: test_cuda_wgmma.py runs this file in a child pytest of
its own, so that a wgmma kernel that faults (leaving the CUDA context unusable) or hangs cannot take
the rest of the run down with it. Run it directly with ``pytest tests/cuda_wgmma_cases.py``. Every
test needs a real sm_90 GPU: the emulated device refuses wgmma, and there every test skips with
that reason; with PYNEURAL_REQUIRE_GPU=1 (bench/gpu_check.sh) a skip is a failure.
"""
import numpy as np
import pytest

from conftest import rel_err
from tensor_core_helpers import (TOL, assert_all_written, gelu, host64, nan_outputs, operands,  # noqa: F401
                                 poisoned, same_bits)

from pyneural.cuda import _backend
from pyneural.cuda import tensor_core as tc

pytestmark = pytest.mark.cuda


@pytest.fixture(scope="module")
def cp(cuda_xp):
    if getattr(cuda_xp.cuda, "emulated", False):
        pytest.skip("wgmma (TMA, mbarrier transaction counts: Hopper-only) is refused by the emulated device; "
                    "these tests run on a real sm_90 GPU (bench/gpu_check.sh)")
    if cuda_xp.cuda.Device().compute_capability != "90":
        pytest.skip(f"wgmma needs an sm_90 GPU, this is sm_{cuda_xp.cuda.Device().compute_capability}")
    return cuda_xp


def _wgmma(a, b, **kw):
    return tc.matmul_tc(a, b, trans_b=True, kernel="wgmma", **kw)


@pytest.mark.parametrize("M,N,K", [(8192 // 32, 520, 1024), (1000, 1000, 4096), (1, 257, 8), (129, 1, 72)])
@pytest.mark.parametrize("name", ["bfloat16", "float16"])
def test_wgmma_matches_float64(cp, rng, name, M, N, K):
    a, b, ref = operands(cp, rng, M, N, K, False, True, name)
    out = poisoned(cp, M, N, cp.float32)
    assert _wgmma(a, b, out=out, out_dtype=np.float32) is out
    assert rel_err(host64(out), ref) < TOL[name]


@pytest.mark.parametrize("name", ["bfloat16", "float16"])
def test_wgmma_persistent_loop_over_more_tiles_than_sms(cp, rng, nan_outputs, name):
    """13 x 24 = 312 output tiles of 128 x 256 on 132 SMs: every block takes 2 or 3 tiles (and the
    producer runs into a block's next tile while its consumers store the last). Odd M and N cut
    the edge tiles; K = 1000 is a multiple of 8 but not of 64, so the last K step is part zeros;
    13 M-tiles leave a short last group of the grouped tile order."""
    M, N, K = 1537, 6001, 1000
    tiles = -(-M // tc.WGMMA_BLOCK[0]) * -(-N // tc.WGMMA_BLOCK[1])
    sms = _backend.sm_count(cp.cuda.Device().id)
    assert tiles >= 300 and tiles > sms, (tiles, sms)
    a, b, ref = operands(cp, rng, M, N, K, False, True, name)
    out = _wgmma(a, b, out_dtype=np.float32)
    assert_all_written(out)
    assert rel_err(host64(out), ref) < TOL[name]


def test_wgmma_fp16_in_fp16_out(cp, rng, nan_outputs):
    M, N, K = 389, 515, 200
    a, b, ref = operands(cp, rng, M, N, K, False, True, "float16")
    out = _wgmma(a, b)
    assert out.dtype == np.float16 and out.shape == (M, N)
    assert_all_written(out)
    assert rel_err(host64(out), ref) < TOL["float16"]


@pytest.mark.parametrize("name,out_name", [("bfloat16", "float32"), ("float16", "float32"), ("float16", "input"),
                                           ("bfloat16", "input")])
def test_wgmma_alpha_beta_reads_out(cp, rng, name, out_name):
    """beta != 0: the epilogue reads C (fp32, or 16-bit through the same casts it writes with)."""
    M, N, K = 300, 333, 136
    a, b, ref = operands(cp, rng, M, N, K, False, True, name)
    c_dtype = np.float32 if out_name == "float32" else a.dtype
    c = cp.asarray(rng.standard_normal((M, N)).astype(c_dtype))
    c_before = host64(c)
    got = _wgmma(a, b, out=c, alpha=0.5, beta=-2.0)
    assert got is c
    assert rel_err(host64(c), 0.5 * ref - 2.0 * c_before) < TOL[name]


@pytest.mark.parametrize("activation", [None, "relu", "gelu"])
@pytest.mark.parametrize("out_name", ["float32", "input"])
def test_wgmma_linear_epilogue(cp, rng, activation, out_name):
    """Linear forward y = act(x @ W^T + b) in one kernel, fp32 or bf16 output."""
    M, N, K = 257, 300, 136
    x, w, ref = operands(cp, rng, M, N, K, False, True, "bfloat16")
    bias_host = rng.standard_normal(N).astype(np.float32)
    ref = ref + bias_host
    ref = {None: ref, "relu": np.maximum(ref, 0), "gelu": gelu(ref)}[activation]
    out_dtype = np.float32 if out_name == "float32" else x.dtype
    out = poisoned(cp, M, N, out_dtype)
    _wgmma(x, w, bias=cp.asarray(bias_host), activation=activation, out=out)
    assert rel_err(host64(out), ref) < TOL["bfloat16"]


@pytest.mark.parametrize("name", ["bfloat16", "float16"])
def test_wgmma_runs_twice_to_the_same_bits(cp, rng, nan_outputs, name):
    """Persistent scheduling without atomics or split-K: the same inputs give the same bits, each run
    in a fresh NaN-filled output (so a run that wrote nothing cannot match the last one)."""
    M, N, K = 1100, 2100, 520
    a, b, ref = operands(cp, rng, M, N, K, False, True, name)
    first = _wgmma(a, b, out_dtype=np.float32)
    second = _wgmma(a, b, out_dtype=np.float32)
    assert first is not second
    assert_all_written(first)
    assert same_bits(first, second)
    assert rel_err(host64(first), ref) < TOL[name]


def test_auto_picks_wgmma_and_agrees_with_mma(cp, rng, nan_outputs):
    M, N, K = 300, 520, 256
    a, b, ref = operands(cp, rng, M, N, K, False, True, "bfloat16")
    assert tc._wgmma_eligible(cp, "bf16", a, b, False, True, K)
    auto = tc.matmul_tc(a, b, trans_b=True, out_dtype=np.float32)
    mma = tc.matmul_tc(a, b, trans_b=True, out_dtype=np.float32, kernel="mma")
    assert_all_written(auto)
    assert_all_written(mma)
    assert rel_err(host64(auto), ref) < TOL["bfloat16"] and rel_err(host64(mma), ref) < TOL["bfloat16"]
    assert rel_err(host64(auto), host64(mma)) < 1e-4
