"""Shared test helpers: fresh random inputs that replay from a printed seed, error-bound comparisons,
relative error, NaN poisoning; the CUDA device the CUDA tests run on.

Every run draws a base seed (or takes --seed N / PYNEURAL_TEST_SEED=N) and prints it in the header;
each test seeds its ``rng`` fixture, pyneural's global generator and torch's from that base and its
own node id, and prints the line that replays it (shown with a failure's captured output).

Where no usable GPU is present, the CUDA tests run on the emulated device (pyneural.cuda.emulator):
this module switches it on (PYNEURAL_CUDA_EMULATE=1) before any test module is imported, so every
CUDA test runs unchanged on whichever device there is, choosing neither. PYNEURAL_REQUIRE_GPU=1
(bench/gpu_check.sh) turns that off and makes a missing GPU an error instead of a skip."""
import os
import sys
import zlib

import numpy as np
import pytest

import pyneural
from pyneural import _C
from pyneural.cuda import _backend, emulator

REQUIRE_GPU = os.environ.get("PYNEURAL_REQUIRE_GPU", "") not in ("", "0")
if REQUIRE_GPU:
    os.environ.pop(emulator.ENV, None)
    if not _backend.available():
        raise pytest.UsageError(f"PYNEURAL_REQUIRE_GPU=1 but no usable CUDA GPU: {_backend.unavailable_reason()}")
elif not emulator.enabled() and not _backend.available() and emulator.usable():
    os.environ[emulator.ENV] = "1"
    _backend.native.cache_clear()


@pytest.fixture(params=["emulator"] if emulator.enabled() else ["native", "rawmodule"])
def cuda_backend(request, monkeypatch):
    """Run a CUDA kernel test on each kernel source: on a GPU the prebuilt pyneural._cuda (skipped
    where it was not built) and cupy.RawModule; without one, the emulated device."""
    if request.param == "native":
        try:
            import pyneural._cuda  # noqa: F401
        except ImportError:
            pytest.skip("pyneural._cuda was not built")
    if request.param == "rawmodule":
        monkeypatch.setenv("PYNEURAL_CUDA_BACKEND", "rawmodule")
    else:
        monkeypatch.delenv("PYNEURAL_CUDA_BACKEND", raising=False)
    _backend.native.cache_clear()
    yield request.param
    _backend.native.cache_clear()


@pytest.fixture
def cp(cuda_xp):
    """CuPy or the emulated device's namespace, under the name CUDA tests know it by."""
    return cuda_xp


def dev(cp, a):
    """A float32 device copy of a host array."""
    return cp.asarray(np.ascontiguousarray(a, dtype=np.float32))


def host(a):
    """A device array on the host, in float64."""
    return a.get().astype(np.float64)


def poison(cp, shape):
    """A float32 device array full of NaN."""
    return cp.full(shape, np.nan, dtype=np.float32)


@pytest.fixture(scope="session")
def cuda_xp():
    """CuPy, or the emulated device's CuPy-compatible namespace."""
    if not _backend.available():
        pytest.skip("needs CuPy and a CUDA GPU with compute capability >= 8.0, or the emulated device")
    return _backend.cupy()


def subprocess_env(**extra):
    """Environment for a child Python that must import the *same* pyneural as this test process
    (the installed package in CI, the in-place build in development), never the bare source tree.
    Children should also run with ``cwd`` outside the repository for the same reason."""
    site = os.path.dirname(os.path.dirname(os.path.abspath(pyneural.__file__)))
    path = [site] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(path), **extra)


SEED_ENV = "PYNEURAL_TEST_SEED"


def pytest_addoption(parser):
    parser.addoption("--seed", type=int, default=None,
                     help=f"base seed of every test's random draws (default: ${SEED_ENV}, else fresh "
                          "from OS entropy); each test derives its own from this and its node id")


def pytest_configure(config):
    """Fix the run's base seed once: --seed, else $PYNEURAL_TEST_SEED, else a fresh one."""
    seed = config.getoption("--seed")
    if seed is None and os.environ.get(SEED_ENV, "") != "":
        seed = int(os.environ[SEED_ENV])
    config.base_seed = int(np.random.SeedSequence().entropy % 2**32 if seed is None else seed)


def pytest_report_header(config):
    return f"random inputs: base seed {config.base_seed} (replay: --seed {config.base_seed} or {SEED_ENV}=...)"


def seed_sequence_of(request):
    """The test's own seed sequence: the run's base seed and the test's node id, so a test draws the
    same inputs alone or in any selection, and different tests draw independent ones."""
    node_key = zlib.crc32(request.node.nodeid.encode())
    return np.random.SeedSequence([request.config.base_seed, node_key])


@pytest.fixture(autouse=True)
def _seed_generators(request):
    """Seed pyneural's global generator (layer initialisation, pn.randn, dropout) and, where the test
    process has loaded it, torch's, from the test's seed; print the replay line (shown on failure)."""
    numpy_child, pyneural_child, torch_child = seed_sequence_of(request).spawn(3)
    pyneural.manual_seed(int(pyneural_child.generate_state(1)[0]))
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(int(torch_child.generate_state(1)[0]))
    print(f"random inputs: {SEED_ENV}={request.config.base_seed} pytest '{request.node.nodeid}'")
    request.node.numpy_seed = numpy_child


@pytest.fixture
def rng(request):
    """A generator for the test's random inputs: fresh every run unless a base seed is given
    (--seed / $PYNEURAL_TEST_SEED), then the same draws for this test however it is selected."""
    return np.random.default_rng(request.node.numpy_seed)


def rel_err(out, ref):
    """||out - ref|| / ||ref|| in float64; NaN anywhere in out gives inf."""
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if not np.all(np.isfinite(out)):
        return np.inf
    denom = np.linalg.norm(ref)
    return np.linalg.norm(out - ref) / (denom if denom > 0 else 1.0)


def assert_close_bound(out, ref, k, magnitude, eps=np.finfo(np.float32).eps, c=1.0, what="result"):
    """Elementwise, ``out`` is within the rounding bound of a sum of ``k`` products in the working
    precision: |out - ref| <= c * k * eps * magnitude + eps * |ref|.

    ``ref`` is the float64 answer; ``magnitude`` the same sum over the terms' absolute values (|A| @ |B|
    for a GEMM, the same convolution of |x| and |w|, sum(|x|) for a reduction); ``eps`` the working
    dtype's machine epsilon (2u). Any order of summation, FMA or not, blocked or split across threads,
    errs by at most gamma_k = k u / (1 - k u) times ``magnitude``, so c = 1 holds with a factor ~2 to
    spare; the last term is the rounding of the result itself. Unlike a relative error it does not
    blow up where a short sum cancels, and unlike a norm it sees a single wrong element."""
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert out.shape == ref.shape, f"{what}: shape {out.shape} != {ref.shape}"
    bound = c * k * eps * np.asarray(magnitude, dtype=np.float64) + eps * np.abs(ref)
    err = np.abs(out - ref)
    bad = ~(err <= bound)  # NaN counts as a failure
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, np.nan_to_num(err / np.maximum(bound, 1e-300), nan=np.inf),
                                                 -1)), out.shape)
        raise AssertionError(f"{what}: {bad.sum()} of {out.size} elements beyond the rounding bound (k={k}, "
                             f"eps={eps:.3g}, c={c}); worst at {tuple(map(int, i))}: |{float(out[i])!r} - "
                             f"{float(ref[i])!r}| = {err[i]:.3g} > {bound[i]:.3g}")


def poisoned(shape, dtype=np.float32):
    """An array full of NaN: any element a kernel forgets to write shows up in rel_err."""
    return np.full(shape, np.nan, dtype=dtype)


ISAS = ("generic", "avx2", "avx512")


@pytest.fixture(params=ISAS)
def isa(request):
    """Run a test on one SIMD path of the C++ kernels; skipped where the CPU lacks it."""
    if ISAS.index(request.param) > ISAS.index(_C.detected_isa()):
        pytest.skip(f"this CPU has no {request.param}")
    before = _C.active_isa()
    _C.set_isa(request.param)
    yield request.param
    _C.set_isa(before)


def assert_same(a, b, path="root"):
    """Two trees of tensors, arrays and plain values are equal bit for bit, in type as well as value
    (floats by their bits, NaN equal to NaN); ``path`` names the first difference."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, pyneural.Tensor):
        assert a.requires_grad == b.requires_grad
        assert_same(a.data, b.data, path)
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert a.tobytes() == b.tobytes(), path
    elif isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            assert_same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert a.hex() == b.hex() or (a != a and b != b), path
    else:
        assert a == b, path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With PYNEURAL_REQUIRE_GPU=1 a skipped cuda test is a failure: a GPU run cannot pass by skipping
    (the wgmma tests on a non-sm_90 GPU included)."""
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_GPU and report.skipped and item.get_closest_marker("cuda") is not None:
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"PYNEURAL_REQUIRE_GPU=1: cuda test skipped ({reason})"


CUDA_TEST_TIMEOUT_S = int(os.environ.get("PYNEURAL_CUDA_TEST_TIMEOUT", "120"))


@pytest.fixture(autouse=True)
def _cuda_test_timeout(request):
    """On a real GPU (PYNEURAL_REQUIRE_GPU=1) a cuda test that runs past PYNEURAL_CUDA_TEST_TIMEOUT
    seconds (default 120) fails instead of freezing the run, as soon as control is back in Python
    (a kernel hung inside one synchronising C call is cut off by bench/gpu_check.sh's per-step limit)."""
    if not REQUIRE_GPU or request.node.get_closest_marker("cuda") is None:
        yield
        return
    import signal

    def expire(signum, frame):
        raise TimeoutError(f"cuda test exceeded {CUDA_TEST_TIMEOUT_S} s (a hung kernel?)")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(CUDA_TEST_TIMEOUT_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
