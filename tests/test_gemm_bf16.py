"""pyneural.kernels.gemm.gemm_bf16 against a float64 product of the same bf16 inputs, on every path
this CPU has (AMX, AVX512-BF16, portable, and the AMX path's code on emulated tiles).

Products of two bf16 are exact in float32, so the only error is the float32 summation (held to the
float32 GEMM tests' bound) and, for a bf16 result, its one final rounding (half a bf16 ulp)."""
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import ml_dtypes
import numpy as np
import pytest
from conftest import poisoned, subprocess_env

from pyneural import _C
from pyneural.kernels import bf16
from pyneural.kernels.gemm import gemm_bf16

BF16 = ml_dtypes.bfloat16
TRANSPOSES = [(False, False), (True, False), (False, True), (True, True)]

# (M, N, K). C tiles: 14 x 32 (avx512bf16), 32 x 32 (amx), 4 x 16 (generic); K steps of 2 (32 on
# AMX). Cache blocks kc/mc/nc: avx512bf16 4096/56/1024, generic 512/128/2048, amx 512/256/2048,
# amx_emulated 128/64/96 (small, so these sizes cross its K, M and N blocks). The sizes sit on and
# just off the tiles, cross blocks and take the threaded split.
SHAPES = [
    (1, 1, 1),
    (15, 17, 33),
    (17, 15, 1),
    (14, 32, 32),
    (32, 32, 64),
    (31, 33, 65),
    (33, 100, 257),
    (100, 33, 17),
    (1, 257, 100),
    (257, 1, 100),
    (65, 97, 129),      # past each emulated block by one
    (64, 96, 128),      # exactly the emulated blocks
    (130, 200, 300),    # threaded: a rectangle of C per thread
    (400, 150, 100),    # threaded, split along M
    (5, 2100, 40),      # N crosses the 1024 and 2048 column panels
]

# Sizes that cross K blocks on every path (so the epilogue runs its first, middle and last stages).
DEEP = [(40, 50, 1030), (20, 40, 4200)]


def available(name):
    return name in bf16.available_gemm_isas()


@pytest.fixture(params=list(bf16.GEMM_ISAS))
def isa(request):
    if not available(request.param):
        pytest.skip(f"bf16 GEMM path '{request.param}' is not available here")
    return request.param


def operands(rng, m, n, k, trans_a, trans_b):
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32).astype(BF16)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32).astype(BF16)
    return a, b


def product(a, b, trans_a, trans_b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a.T if trans_a else a) @ (b.T if trans_b else b)


def bounded_err(out, a, b, trans_a, trans_b, expected=None):
    """||out - expected|| / || |a| @ |b| ||, as in the float32 GEMM tests (NaN anywhere: inf)."""
    out = np.asarray(out, dtype=np.float64)
    if not np.all(np.isfinite(out)):
        return np.inf
    if expected is None:
        expected = product(a, b, trans_a, trans_b)
    bound = product(np.abs(a.astype(np.float32)).astype(BF16), np.abs(b.astype(np.float32)).astype(BF16),
                    trans_a, trans_b)
    return np.linalg.norm(out - expected) / max(np.linalg.norm(bound), 1e-30)


def assert_bf16_result(out, expected, bound_scale):
    """A bf16 result: within half a bf16 ulp of the float32 result, which is within the float32
    bound of the exact one (elementwise: |out - expected| <= 2^-8 |expected| + 1e-5 * scale)."""
    assert out.dtype == BF16
    got = out.astype(np.float64)
    assert np.all(np.isfinite(got))
    excess = np.abs(got - expected) - (2.0**-8 * np.abs(expected) + 1e-5 * bound_scale)
    assert excess.max() <= 0, f"worst excess {excess.max():.3g}"


@pytest.mark.parametrize("trans_a,trans_b", TRANSPOSES)
@pytest.mark.parametrize("m,n,k", SHAPES + DEEP)
def test_matches_float64(rng, isa, m, n, k, trans_a, trans_b):
    a, b = operands(rng, m, n, k, trans_a, trans_b)
    out = poisoned((m, n))
    result = gemm_bf16(a, b, trans_a=trans_a, trans_b=trans_b, out=out, isa=isa)
    assert result is out
    assert bounded_err(out, a, b, trans_a, trans_b) < 1e-5


@pytest.mark.parametrize("trans_a,trans_b", [(False, True), (True, False)])
@pytest.mark.parametrize("m,n,k", [(15, 17, 33), (33, 100, 257), (65, 97, 129)] + DEEP)
def test_bf16_output_over_poison(rng, isa, m, n, k, trans_a, trans_b):
    """A bf16 C: over several K blocks the running sum stays float32 (a workspace), rounded once."""
    a, b = operands(rng, m, n, k, trans_a, trans_b)
    out = np.full((m, n), np.nan, dtype=BF16)
    gemm_bf16(a, b, trans_a=trans_a, trans_b=trans_b, out=out, isa=isa)
    expected = product(a, b, trans_a, trans_b)
    assert_bf16_result(out, expected, np.sqrt(k) * 4)


@pytest.mark.parametrize("out_dtype", [np.float32, BF16])
@pytest.mark.parametrize("m,n,k", [(31, 33, 65), (65, 97, 129), (20, 40, 4200)])
def test_alpha_beta_bias_relu(rng, isa, m, n, k, out_dtype):
    a, b = operands(rng, m, n, k, False, True)
    c = rng.standard_normal((m, n)).astype(np.float32).astype(out_dtype)
    bias = (rng.standard_normal(n) * np.sqrt(k)).astype(np.float32)
    expected = np.maximum(-0.5 * product(a, b, False, True) + 0.75 * c.astype(np.float64) + bias, 0.0)
    gemm_bf16(a, b, trans_b=True, alpha=-0.5, beta=0.75, out=c, bias=bias, relu=True, isa=isa)
    assert np.all(c.astype(np.float64) >= 0)
    assert (c.astype(np.float64) == 0).mean() > 0.2  # the ReLU had something to clamp
    if out_dtype is np.float32:
        assert bounded_err(c, a, b, False, True, expected) < 1e-5
    else:
        assert_bf16_result(c, expected, np.sqrt(k) * 4)


@pytest.mark.parametrize("m,n,k", [(15, 17, 33), (65, 97, 129), (20, 40, 4200)])
def test_beta_one_accumulates(rng, isa, m, n, k):
    a, b = operands(rng, m, n, k, True, False)
    c = rng.standard_normal((m, n)).astype(np.float32)
    expected = product(a, b, True, False) + c.astype(np.float64)
    gemm_bf16(a, b, trans_a=True, beta=1.0, out=c, isa=isa)
    assert bounded_err(c, a, b, True, False, expected) < 1e-5


def test_bias_alone_over_poison(rng, isa):
    a, b = operands(rng, 33, 47, 129, False, False)
    bias = rng.standard_normal(47).astype(np.float32)
    out = poisoned((33, 47))
    gemm_bf16(a, b, out=out, bias=bias, isa=isa)
    assert bounded_err(out, a, b, False, False, product(a, b, False, False) + bias) < 1e-5


def test_relu_keeps_nan(rng, isa):
    """NaN in a row of A reaches that row of C: the ReLU is max(0, x), not a NaN-swallowing clamp."""
    a, b = operands(rng, 20, 40, 64, False, False)
    a[3, 5] = np.nan
    out = gemm_bf16(a, b, relu=True, isa=isa)
    assert np.all(np.isnan(out[3]))
    assert np.all(np.isfinite(np.delete(out, 3, axis=0)))


def test_alpha_zero_reads_neither_operand(rng, isa):
    a, b = operands(rng, 9, 11, 5, False, False)
    a[0, 0] = np.nan
    c = rng.standard_normal((9, 11)).astype(np.float32)
    bias = rng.standard_normal(11).astype(np.float32)
    expected = np.maximum(0.5 * c.astype(np.float64) + bias, 0)
    gemm_bf16(a, b, alpha=0.0, beta=0.5, out=c, bias=bias, relu=True, isa=isa)
    assert np.allclose(c, expected, rtol=1e-6, atol=1e-6)


def test_out_dtype_allocates(rng):
    a, b = operands(rng, 20, 30, 40, False, True)
    out = gemm_bf16(a, b, trans_b=True, out_dtype=BF16)
    assert out.shape == (20, 30) and out.dtype == BF16
    assert_bf16_result(out, product(a, b, False, True), 30)
    out = gemm_bf16(a, b, trans_b=True)
    assert out.dtype == np.float32


def test_paths_agree_closely(rng):
    """Every path sums in float32, in different orders: they agree to float32 accuracy."""
    a, b = operands(rng, 70, 90, 300, False, True)
    results = [gemm_bf16(a, b, trans_b=True, isa=name) for name in bf16.available_gemm_isas()]
    for r in results[1:]:
        assert bounded_err(r, a, b, False, True, results[0].astype(np.float64)) < 1e-6


def test_matches_torch(rng):
    torch = pytest.importorskip("torch")
    a, b = operands(rng, 64, 96, 200, False, False)
    ours = gemm_bf16(a, b, out_dtype=BF16).astype(np.float32)
    theirs = torch.matmul(torch.from_numpy(a.astype(np.float32)).bfloat16(),
                          torch.from_numpy(b.astype(np.float32)).bfloat16()).float().numpy()
    # Both round a float32 sum to bf16; the sums differ in order, so a result may land one ulp apart.
    assert np.all(np.abs(ours - theirs) <= 2.0**-7 * np.abs(theirs) + 1e-3)


def test_concurrent_callers(rng):
    """Python threads call in at once (the GIL is released): pack buffers must be per thread."""
    cases = [operands(rng, 90 + 7 * i, 80 + 5 * i, 150 + 3 * i, False, i % 2 == 1) + (i % 2 == 1,) for i in range(6)]

    def run(case):
        a, b, tb = case
        return max(bounded_err(gemm_bf16(a, b, trans_b=tb), a, b, False, tb) for _ in range(3))

    with ThreadPoolExecutor(max_workers=3) as pool:
        assert max(pool.map(run, cases)) < 1e-5


def test_forced_default_path(isa):
    before = bf16.gemm_isa()
    try:
        bf16.set_gemm_isa(isa)
        assert bf16.gemm_isa() == isa
    finally:
        bf16.set_gemm_isa(before)


def test_detected_path_is_the_best_available():
    order = ["amx", "avx512bf16", "generic"]
    assert bf16.detected_gemm_isa() == next(name for name in order if available(name))


_CHILD = """
import numpy as np, ml_dtypes
from pyneural.kernels import bf16
from pyneural.kernels.gemm import gemm_bf16
rng = np.random.default_rng({seed})
worst = 0.0
for m, n, k in [(300, 200, 300), (29, 700, 200), (700, 29, 200)]:
    a = rng.standard_normal((m, k)).astype(np.float32).astype(ml_dtypes.bfloat16)
    b = rng.standard_normal((k, n)).astype(np.float32).astype(ml_dtypes.bfloat16)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    out = np.full((m, n), np.nan, np.float32)
    gemm_bf16(a, b, out=out)
    worst = max(worst, np.linalg.norm(out - ref) / np.linalg.norm(ref))
print(bf16.gemm_isa(), worst)
"""


def run_child(rng, **env):
    done = subprocess.run([sys.executable, "-c", _CHILD.format(seed=int(rng.integers(2**31)))],
                          env=subprocess_env(**env), capture_output=True, text=True, timeout=120,
                          cwd=os.path.expanduser("~"))
    return done


@pytest.mark.parametrize("threads", ["1", "3"])
def test_thread_counts(rng, threads):
    """One thread, and more threads than cores (a 3-rectangle grid)."""
    done = run_child(rng, OMP_NUM_THREADS=threads)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.split()[1]) < 1e-5


def test_environment_variable_forces_the_path(rng):
    done = run_child(rng, PYNEURAL_BF16_ISA="generic")
    assert done.returncode == 0, done.stderr
    name, err = done.stdout.split()
    assert name == "generic" and float(err) < 1e-5


def test_environment_variable_unknown_path(rng):
    done = run_child(rng, PYNEURAL_BF16_ISA="sse9")
    assert done.returncode != 0
    assert "PYNEURAL_BF16_ISA=sse9: bf16 GEMM: unknown path 'sse9'" in done.stderr


def test_dot_peak_positive(isa):
    if isa not in ("amx", "avx512bf16"):
        pytest.skip("peaks are measured for amx and avx512bf16")
    assert bf16.dot_peak_gflops(isa, seconds=0.02) > 1.0


# ---- bad input: one test per case --------------------------------------------------------------

def h(*shape):
    return np.ones(shape, dtype=BF16)


def test_rejects_float32_operand():
    with pytest.raises(TypeError, match=r"gemm_bf16: a must have dtype bfloat16, got float32 \(shape \(2, 3\)\) "
                                        r"\(convert it with pyneural.kernels.bf16.to_bf16 first\)"):
        gemm_bf16(np.ones((2, 3), np.float32), h(3, 4))


def test_rejects_float64_operand():
    with pytest.raises(TypeError, match="gemm_bf16: b must have dtype bfloat16, got float64"):
        gemm_bf16(h(2, 3), np.ones((3, 4)))


def test_rejects_non_array():
    with pytest.raises(TypeError, match="gemm_bf16: a must be a numpy.ndarray of bfloat16, got list"):
        gemm_bf16([[1.0]], h(1, 1))


def test_rejects_wrong_rank():
    with pytest.raises(ValueError, match=r"gemm_bf16: a must have 2 dimensions, got shape \(3,\)"):
        gemm_bf16(h(3), h(3, 4))


def test_rejects_inner_dimension_mismatch():
    with pytest.raises(ValueError, match=r"op\(a\) is 2x3 .* op\(b\) is 5x4"):
        gemm_bf16(h(2, 3), h(5, 4))


def test_rejects_inner_mismatch_after_transpose():
    with pytest.raises(ValueError, match=r"op\(a\) is 3x2 .*trans_a=True"):
        gemm_bf16(h(2, 3), h(3, 4), trans_a=True)


def test_rejects_float64_out():
    with pytest.raises(TypeError, match=r"gemm_bf16: out must have dtype float32 or bfloat16, got float64"):
        gemm_bf16(h(2, 3), h(3, 4), out=np.zeros((2, 4)))


def test_rejects_out_dtype_conflict():
    with pytest.raises(TypeError, match="gemm_bf16: out has dtype float32 but out_dtype=bfloat16"):
        gemm_bf16(h(2, 3), h(3, 4), out=np.zeros((2, 4), np.float32), out_dtype=BF16)


def test_rejects_bad_out_dtype():
    with pytest.raises(TypeError, match="gemm_bf16: out_dtype must be float32 or bfloat16, got float16"):
        gemm_bf16(h(2, 3), h(3, 4), out_dtype=np.float16)


def test_rejects_wrong_out_shape():
    with pytest.raises(ValueError, match=r"gemm_bf16: out must have shape \(2, 4\), got \(4, 2\)"):
        gemm_bf16(h(2, 3), h(3, 4), out=np.zeros((4, 2), np.float32))


def test_rejects_beta_without_out():
    with pytest.raises(ValueError, match="beta=0.5 needs an out array"):
        gemm_bf16(h(2, 3), h(3, 4), beta=0.5)


def test_rejects_bf16_bias():
    with pytest.raises(TypeError, match=r"gemm_bf16: bias must be a float32 numpy.ndarray of shape \(4,\), got bfloat16"):
        gemm_bf16(h(2, 3), h(3, 4), bias=h(4))


def test_rejects_wrong_bias_shape():
    with pytest.raises(ValueError, match=r"gemm_bf16: bias must have shape \(4,\), got \(3,\)"):
        gemm_bf16(h(2, 3), h(3, 4), bias=np.zeros(3, np.float32))


def test_rejects_non_contiguous_operand():
    with pytest.raises(ValueError, match="gemm_bf16: b must be C-contiguous"):
        gemm_bf16(h(2, 3), h(3, 8)[:, ::2])


def test_rejects_zero_size():
    with pytest.raises(ValueError, match=r"gemm_bf16: a has a zero-size dimension, shape \(0, 3\)"):
        gemm_bf16(h(0, 3), h(3, 4))


def test_rejects_read_only_out():
    out = np.zeros((2, 4), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="gemm_bf16: out is read-only"):
        gemm_bf16(h(2, 3), h(3, 4), out=out)


def test_rejects_out_overlapping_input():
    a = h(4, 4)
    with pytest.raises(ValueError, match=r"gemm_bf16: out \(shape \(4, 4\)\) overlaps an input"):
        gemm_bf16(a, h(4, 4), out=a)


def test_rejects_unknown_isa():
    with pytest.raises(ValueError, match=r"gemm_bf16: isa must be one of .* got 'sse'"):
        gemm_bf16(h(2, 3), h(3, 4), isa="sse")


def test_rejects_unavailable_isa():
    missing = [name for name in bf16.GEMM_ISAS if not available(name)]
    if not missing:
        pytest.skip("every bf16 GEMM path is available here")
    with pytest.raises(ValueError, match=f"bf16 GEMM: path '{missing[0]}' is not available: "):
        gemm_bf16(h(2, 3), h(3, 4), isa=missing[0])


def test_set_gemm_isa_rejects_unknown():
    with pytest.raises(ValueError, match="set_gemm_isa: name must be one of"):
        bf16.set_gemm_isa("avx2")


# The binding is callable on its own, so it checks its arguments too.

def test_binding_rejects_float32_operand():
    with pytest.raises(ValueError, match=r"gemm_bf16: a \(bf16 bits\): expected dtype uint16, got float32"):
        _C.gemm_bf16(np.ones((2, 3), np.float32), h(3, 4).view(np.uint16), np.zeros((2, 4), np.float32))


def test_binding_rejects_bias_shape():
    with pytest.raises(ValueError, match=r"gemm_bf16: bias must have shape \(4,\)"):
        _C.gemm_bf16(h(2, 3).view(np.uint16), h(3, 4).view(np.uint16), np.zeros((2, 4), np.float32),
                     bias=np.zeros(5, np.float32))


def test_binding_rejects_overlap():
    b = h(4, 4).view(np.uint16)
    with pytest.raises(ValueError, match=r"gemm_bf16: out \(4x4\) overlaps input b"):
        _C.gemm_bf16(h(4, 4).view(np.uint16), b, b)
