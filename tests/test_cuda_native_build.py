"""pyneural._cuda, the ahead-of-time CUDA extension, builds with nvcc and imports on a machine with
no GPU, and calling it there raises a clear Python exception instead of crashing.

A plain `pip install .` builds it only where CuPy is in the build environment (PYNEURAL_CUDA=AUTO,
see csrc/cuda/CMakeLists.txt), so CI would never compile the bindings, the embedding of the fatbins
or the link against the CUDA runtime. Here the project's own CMake configures with
PYNEURAL_CUDA=ON for one architecture (80: one fatbin per .cu file, the quickest build that still
compiles every file, gemm_tc_wgmma.cu included) into a temporary directory and builds only the
`_cuda` target (-j2). The module is then loaded from its build path (importlib, under the name
`_cuda`, so it never shadows the installed pyneural) in a child Python: a crash shows up as a
negative return code (the signal) rather than taking pytest down.

Checked: the module imports; `images()` lists every csrc/cuda/*.cu file; `device_count()` never
raises; `launch` validates its grid before touching CUDA (ValueError); and without a usable device
`launch` raises RuntimeError "pyneural._cuda: no CUDA device / driver: ..." with the CUDA error, the
same again on a second call. Where the child does see a device (a GPU machine), launching a kernel
name that does not exist raises a Python exception naming the module instead.

Skipped only where nvcc is absent (PATH, then /usr/local/cuda/bin) or there is no cmake to run.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "csrc" / "cuda"
ARCH = "80"
BUILD_TIMEOUT_S = 900


from test_cuda_compile import _nvcc  # noqa: E402  (one way of finding nvcc)


def _run(cmd, what, **kw):
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, **kw)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{what} took more than {BUILD_TIMEOUT_S} s: {' '.join(map(str, cmd))}\n{e.stdout}\n{e.stderr}")
    if proc.returncode != 0:
        log = (proc.stdout + proc.stderr)[-8000:]
        pytest.fail(f"{what} failed (exit {proc.returncode}): {' '.join(map(str, cmd))}\n{log}")
    return proc


@pytest.fixture(scope="module")
def built_module(tmp_path_factory):
    """Path of the _cuda extension built with PYNEURAL_CUDA=ON for sm_80 in a temporary directory."""
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found in PATH or /usr/local/cuda/bin")
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake not found in PATH")
    import pybind11  # in the 'test' extra: a missing one is an error, not a skip

    build = tmp_path_factory.mktemp("cuda_native_build")
    _run([cmake, "-S", str(REPO), "-B", str(build), "-DPYNEURAL_CUDA=ON",
          f"-DPYNEURAL_CUDA_ARCHITECTURES={ARCH}", f"-DCMAKE_CUDA_COMPILER={nvcc}",
          f"-Dpybind11_DIR={pybind11.get_cmake_dir()}", f"-DPython_EXECUTABLE={sys.executable}",
          "-DCMAKE_BUILD_TYPE=Release"], "cmake configure")
    _run([cmake, "--build", str(build), "--target", "_cuda", "-j", "2"], "cmake --build --target _cuda")
    found = sorted(build.rglob("_cuda*.so")) + sorted(build.rglob("_cuda*.pyd"))
    assert len(found) == 1, f"expected one built _cuda extension under {build}, found {found}"
    return found[0]


CHILD = textwrap.dedent("""
    import importlib.util, json, sys
    import numpy as np

    spec = importlib.util.spec_from_file_location("_cuda", sys.argv[1])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    kernel = sys.argv[2]

    def attempt(*args):
        try:
            mod.launch(*args)
        except Exception as e:
            return [type(e).__name__, str(e)]
        return None

    out = {"file": mod.__file__, "doc": mod.__doc__, "images": mod.images(), "device_count": mod.device_count()}
    out["bad_grid"] = attempt("sgemm", kernel, (0,), (256,), 0, 0, 0, [])
    args = [None, None, None, None] + [np.int32(1)] * 6 + [np.float32(1), np.float32(0), np.int32(0)]
    if out["device_count"] == 0:
        out["launch"] = attempt("sgemm", kernel, (1,), (256,), 0, 0, 0, args)
        out["launch_again"] = attempt("elementwise", "pn_fill", (1,), (256,), 0, 0, 0, [None, np.int64(0), np.float32(0)])
    else:
        out["launch"] = attempt("sgemm", "pn_no_such_kernel", (1,), (256,), 0, 0, 0, [])
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def child(built_module, tmp_path_factory):
    """What the built module did in a fresh Python (run from an empty directory)."""
    kernels = re.findall(r"\bpn_sgemm_\w+", (SRC / "sgemm.cu").read_text())
    kernel = kernels[0] if kernels else "pn_sgemm_nn"
    cwd = tmp_path_factory.mktemp("cuda_native_child")
    proc = subprocess.run([sys.executable, "-c", CHILD, str(built_module), kernel], capture_output=True, text=True,
                          cwd=cwd, timeout=120, env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    log = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode >= 0, f"the child Python was killed by signal {-proc.returncode} (a crash)\n{log}"
    assert proc.returncode == 0, f"the child Python failed (exit {proc.returncode})\n{log}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_module_imports_and_lists_every_kernel_file(child, built_module):
    assert Path(child["file"]) == built_module
    assert "pyneural" in child["doc"]
    assert child["images"] == sorted(s.stem for s in SRC.glob("*.cu"))
    assert isinstance(child["device_count"], int) and child["device_count"] >= 0


def test_launch_checks_its_arguments_before_cuda(child):
    assert child["bad_grid"] is not None, "launch with grid (0,) did not raise"
    kind, message = child["bad_grid"]
    assert kind == "ValueError" and "grid" in message, child["bad_grid"]


def test_launch_without_a_device_raises_a_clear_runtime_error(child):
    if child["device_count"] > 0:
        assert child["launch"] is not None, "launching a kernel name that does not exist did not raise"
        kind, message = child["launch"]
        assert kind in ("ValueError", "RuntimeError") and "pyneural._cuda" in message, child["launch"]
        return
    for key in ("launch", "launch_again"):
        assert child[key] is not None, f"{key}: launch without a CUDA device did not raise"
        kind, message = child[key]
        assert kind == "RuntimeError", child[key]
        assert message.startswith("pyneural._cuda: no CUDA device / driver"), message
        assert "cudaGetDeviceCount" in message and "cudaError" in message, message
