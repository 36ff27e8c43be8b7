"""pyneural.kernels.gemm against float64 numpy, on every SIMD path this CPU has."""
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import assert_close_bound, poisoned, rel_err, subprocess_env

from pyneural import _C
from pyneural.kernels.gemm import gemm

_ORDER = ["generic", "avx2", "avx512"]
ISAS = _ORDER[: _ORDER.index(_C.detected_isa()) + 1]
TRANSPOSES = [(False, False), (True, False), (False, True), (True, True)]

# (M, N, K). Register tiles are 14x32 (avx512), 6x16 (avx2), 4x8 (generic); kc = 512 (256 generic),
# nc = 2048. The sizes sit on and just off those, cross K and N blocks, take both thread splits and the
# matrix-vector paths.
SHAPES = [
    (1, 1, 1),
    (7, 13, 97),
    (97, 7, 13),
    (13, 97, 7),
    (14, 32, 16),
    (15, 33, 17),
    (27, 31, 255),
    (29, 65, 257),
    (15, 47, 511),
    (43, 33, 513),
    (5, 17, 1100),
    (2000, 3, 40),     # tall-skinny
    (3, 1500, 400),    # short-fat: threads take column slabs
    (1100, 70, 600),   # M > 1024: threads share the B panel, A blocks dealt dynamically
    (5, 4100, 30),     # N crosses the nc panel
    (300, 500, 600),   # moderately large: two K blocks, threaded
    (1, 300, 77),      # M == 1 and N == 1 take the matrix-vector path
    (300, 1, 77),
    (1, 1, 1000),
    (1, 5000, 300),    # ... threaded
    (3000, 1, 400),
    # On avx512, row-major B is read in place (no packing) for M <= 96, A^T for N <= 128 or M <= 16,
    # and K blocks up to 64 deep walk C by rows: each threshold from both sides.
    (96, 200, 70),
    (97, 200, 70),
    (16, 600, 129),
    (17, 600, 129),
    (200, 128, 64),
    (200, 129, 65),
    (11, 40, 1030),    # direct operands across K blocks
]


def operands(rng, m, n, k, trans_a, trans_b, dtype=np.float32):
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    return a, b


def reference(a, b, trans_a, trans_b):
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return (a.T if trans_a else a) @ (b.T if trans_b else b)


def bounded_err(out, a, b, trans_a, trans_b):
    """||out - ref|| over ||(|a| @ |b|)||: the error relative to fp32 dot products' own bound. Unlike
    ||out - ref|| / ||ref||, it does not blow up when a short product (1 x 1 x 1000) nearly cancels."""
    if not np.all(np.isfinite(out)):
        return np.inf
    bound = reference(np.abs(a), np.abs(b), trans_a, trans_b)
    return np.linalg.norm(out - reference(a, b, trans_a, trans_b)) / max(np.linalg.norm(bound), 1e-30)


@pytest.fixture(params=ISAS)
def isa(request):
    before = _C.active_isa()
    _C.set_isa(request.param)
    yield request.param
    _C.set_isa(before)


@pytest.mark.parametrize("trans_a,trans_b", TRANSPOSES)
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_matches_float64(rng, isa, m, n, k, trans_a, trans_b):
    a, b = operands(rng, m, n, k, trans_a, trans_b)
    out = poisoned((m, n))
    result = gemm(a, b, trans_a=trans_a, trans_b=trans_b, out=out)
    assert result is out
    assert bounded_err(out, a, b, trans_a, trans_b) < 1e-5
    assert_close_bound(out, reference(a, b, trans_a, trans_b), k, reference(np.abs(a), np.abs(b), trans_a, trans_b))


@pytest.mark.parametrize("trans_a,trans_b", TRANSPOSES)
@pytest.mark.parametrize("m,n,k", [(13, 97, 7), (29, 65, 257), (300, 500, 600), (1, 97, 300), (97, 1, 300)])
def test_alpha_beta_accumulate(rng, isa, m, n, k, trans_a, trans_b):
    a, b = operands(rng, m, n, k, trans_a, trans_b)
    c = rng.standard_normal((m, n)).astype(np.float32)
    expected = -0.5 * reference(a, b, trans_a, trans_b) + 0.75 * c.astype(np.float64)
    magnitude = 0.5 * reference(np.abs(a), np.abs(b), trans_a, trans_b) + 0.75 * np.abs(c.astype(np.float64))
    gemm(a, b, trans_a=trans_a, trans_b=trans_b, alpha=-0.5, beta=0.75, out=c)
    assert rel_err(c, expected) < 1e-5
    assert_close_bound(c, expected, k + 2, magnitude)  # k products, then alpha and beta


def test_beta_one_adds(rng, isa):
    a, b = operands(rng, 45, 70, 300, False, False)
    c = rng.standard_normal((45, 70)).astype(np.float32)
    expected = reference(a, b, False, False) + c.astype(np.float64)
    gemm(a, b, beta=1.0, out=c)
    assert rel_err(c, expected) < 1e-5


def test_alpha_scales_over_poisoned_out(rng, isa):
    a, b = operands(rng, 33, 47, 129, True, False)
    out = poisoned((33, 47))
    gemm(a, b, trans_a=True, alpha=2.5, out=out)
    assert rel_err(out, 2.5 * reference(a, b, True, False)) < 1e-5


def test_alpha_zero_only_scales_out(rng):
    a, b = operands(rng, 9, 11, 5, False, False)
    a[0, 0] = np.nan  # BLAS convention: alpha == 0 never reads a or b
    c = rng.standard_normal((9, 11)).astype(np.float32)
    expected = 0.5 * c.astype(np.float64)
    gemm(a, b, alpha=0.0, beta=0.5, out=c)
    assert rel_err(c, expected) < 1e-6


def test_allocates_output(rng):
    a, b = operands(rng, 20, 30, 40, False, True)
    out = gemm(a, b, trans_b=True)
    assert out.shape == (20, 30) and out.dtype == np.float32
    assert rel_err(out, reference(a, b, False, True)) < 1e-5


@pytest.mark.parametrize("trans_a,trans_b", TRANSPOSES)
def test_float64_reference_path(rng, trans_a, trans_b):
    a, b = operands(rng, 17, 23, 31, trans_a, trans_b, dtype=np.float64)
    c = rng.standard_normal((17, 23))
    expected = 1.5 * reference(a, b, trans_a, trans_b) - 2.0 * c
    gemm(a, b, trans_a=trans_a, trans_b=trans_b, alpha=1.5, beta=-2.0, out=c)
    assert rel_err(c, expected) < 1e-12
    out = poisoned((17, 23), np.float64)
    gemm(a, b, trans_a=trans_a, trans_b=trans_b, out=out)
    assert rel_err(out, reference(a, b, trans_a, trans_b)) < 1e-12


def test_concurrent_callers(rng):
    """Python threads call in at once (the GIL is released): pack buffers must be per thread."""
    cases = []
    for i in range(8):
        m, n, k = 150 + 7 * i, 130 + 5 * i, 270 + 3 * i
        a, b = operands(rng, m, n, k, i % 2 == 1, i % 3 == 0)
        cases.append((a, b, i % 2 == 1, i % 3 == 0))

    def run(case):
        a, b, ta, tb = case
        return [rel_err(gemm(a, b, trans_a=ta, trans_b=tb), reference(a, b, ta, tb)) for _ in range(3)]

    with ThreadPoolExecutor(max_workers=4) as pool:
        errors = [e for errs in pool.map(run, cases) for e in errs]
    assert max(errors) < 1e-5


_SUBPROCESS_CHECK = """
import numpy as np
from pyneural.kernels.gemm import gemm
rng = np.random.default_rng({seed})
worst = 0.0
for m, n, k in [(300, 500, 600), (3, 1500, 400), (1100, 70, 600), (129, 257, 513)]:
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    out = np.full((m, n), np.nan, np.float32)
    gemm(a, b, out=out)
    worst = max(worst, np.linalg.norm(out - ref) / np.linalg.norm(ref))
print(worst)
"""


@pytest.mark.parametrize("threads", [None, "1", "3"])
def test_thread_counts(rng, threads):
    """OpenMP left to its default (all cores), one thread, and more threads than cores."""
    env = subprocess_env()
    env.pop("OMP_NUM_THREADS", None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = threads
    code = _SUBPROCESS_CHECK.format(seed=int(rng.integers(2**31)))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          cwd=os.path.expanduser("~"))
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) < 1e-5


# ---- bad input: one test per case --------------------------------------------------------------

def f32(*shape):
    return np.ones(shape, dtype=np.float32)


def test_rejects_non_array():
    with pytest.raises(TypeError, match="gemm: a must be a numpy.ndarray"):
        gemm([[1.0]], f32(1, 1))


def test_rejects_non_array_out():
    with pytest.raises(TypeError, match="gemm: out must be a numpy.ndarray, got list"):
        gemm(f32(2, 3), f32(3, 4), out=[[0.0] * 4] * 2)


def test_rejects_integer_dtype():
    with pytest.raises(TypeError, match=r"gemm: b must have dtype float32 or float64, got int32"):
        gemm(f32(2, 3), np.ones((3, 4), dtype=np.int32))


def test_rejects_mixed_dtypes():
    with pytest.raises(TypeError, match="a=float32, b=float64"):
        gemm(f32(2, 3), np.ones((3, 4)))


def test_rejects_out_dtype():
    with pytest.raises(TypeError, match="out=float64"):
        gemm(f32(2, 3), f32(3, 4), out=np.zeros((2, 4)))


def test_rejects_wrong_rank():
    with pytest.raises(ValueError, match=r"gemm: a must have 2 dimensions, got shape \(3,\)"):
        gemm(f32(3), f32(3, 4))


def test_rejects_inner_dimension_mismatch():
    with pytest.raises(ValueError, match=r"op\(a\) is 2x3 .* op\(b\) is 5x4"):
        gemm(f32(2, 3), f32(5, 4))


def test_rejects_inner_mismatch_after_transpose():
    with pytest.raises(ValueError, match=r"op\(a\) is 3x2 .*trans_a=True"):
        gemm(f32(2, 3), f32(3, 4), trans_a=True)


def test_rejects_wrong_out_shape():
    with pytest.raises(ValueError, match=r"gemm: out must have shape \(2, 4\), got \(4, 2\)"):
        gemm(f32(2, 3), f32(3, 4), out=f32(4, 2))


def test_rejects_zero_size_dimension():
    with pytest.raises(ValueError, match=r"gemm: a has a zero-size dimension, shape \(0, 3\)"):
        gemm(f32(0, 3), f32(3, 4))


def test_rejects_non_contiguous_input():
    a = f32(3, 4)[:, ::2]
    with pytest.raises(ValueError, match="gemm: a must be C-contiguous"):
        gemm(a, f32(2, 5))


def test_rejects_non_contiguous_out():
    out = f32(2, 8)[:, ::2]
    with pytest.raises(ValueError, match="gemm: out must be C-contiguous"):
        gemm(f32(2, 3), f32(3, 4), out=out)


def test_rejects_read_only_out():
    out = f32(2, 4)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="gemm: out is read-only"):
        gemm(f32(2, 3), f32(3, 4), out=out)


def test_rejects_beta_without_out():
    with pytest.raises(ValueError, match="beta=0.5 needs an out array"):
        gemm(f32(2, 3), f32(3, 4), beta=0.5)


def test_rejects_out_overlapping_input():
    a = f32(4, 4)
    with pytest.raises(ValueError, match=r"out \(4x4\) overlaps input a \(4x4\)"):
        gemm(a, f32(4, 4), out=a)


def test_rejects_out_overlapping_float64_input():
    b = np.ones((4, 4))
    with pytest.raises(ValueError, match=r"gemm: out \(shape \(4, 4\)\) overlaps an input"):
        gemm(np.ones((4, 4)), b, out=b)


# The binding is callable on its own, so it checks its arguments too.

def test_binding_rejects_float64():
    with pytest.raises(ValueError, match="sgemm: a: expected dtype float32, got float64"):
        _C.sgemm(np.ones((2, 3)), f32(3, 4), f32(2, 4))


def test_binding_rejects_non_contiguous():
    with pytest.raises(ValueError, match="sgemm: b: array must be C-contiguous"):
        _C.sgemm(f32(2, 3), f32(3, 8)[:, ::2], f32(2, 4))


def test_binding_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="sgemm: op\\(a\\) is 2x3 but op\\(b\\) is 4x4"):
        _C.sgemm(f32(2, 3), f32(4, 4), f32(2, 4))


def test_binding_rejects_wrong_out_shape():
    with pytest.raises(ValueError, match="sgemm: out must be 2x4, got 2x5"):
        _C.sgemm(f32(2, 3), f32(3, 4), f32(2, 5))


def test_binding_rejects_read_only_out():
    out = f32(2, 4)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="sgemm: out: output array is read-only"):
        _C.sgemm(f32(2, 3), f32(3, 4), out)


def test_binding_rejects_overlap():
    a = f32(4, 4)
    b = f32(4, 4)
    with pytest.raises(ValueError, match=r"sgemm: out \(4x4\) overlaps input b \(4x4\)"):
        _C.sgemm(f32(4, 4), b, b)
