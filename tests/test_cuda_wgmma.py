"""The wgmma tensor-core GEMM tests (cuda_wgmma_cases.py), each run in a child pytest process.

A wgmma kernel that faults leaves its CUDA context unusable and one that hangs never returns; in a
child, either costs only this test: the child is killed after a time limit (the cuda-test limit
of conftest, PYNEURAL_CUDA_TEST_TIMEOUT, less a margin) and its output is shown. The child inherits
the environment, PYNEURAL_REQUIRE_GPU included, so there a skipped wgmma case fails the child.
"""
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CUDA_TEST_TIMEOUT_S, subprocess_env

pytestmark = pytest.mark.cuda

CASES = Path(__file__).with_name("cuda_wgmma_cases.py")
CHILD_TIMEOUT_S = max(30, CUDA_TEST_TIMEOUT_S - 10)  # inside conftest's per-test alarm


def _tail(text, lines=60):
    return "\n".join((text or "").splitlines()[-lines:])


def test_wgmma_cases_in_their_own_process(cuda_xp, tmp_path, request):
    if getattr(cuda_xp.cuda, "emulated", False):
        pytest.skip("wgmma (TMA, mbarrier transaction counts: Hopper-only) is refused by the emulated device; "
                    "cuda_wgmma_cases.py runs on a real sm_90 GPU (bench/gpu_check.sh)")
    cc = cuda_xp.cuda.Device().compute_capability
    if cc != "90":
        pytest.skip(f"wgmma needs an sm_90 GPU, this is sm_{cc}")
    cmd = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "--rootdir", str(CASES.parents[1]),
           "--seed", str(request.config.base_seed), str(CASES)]  # the parent's seed: one line replays both
    try:
        child = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(PYTHONUNBUFFERED="1"), capture_output=True,
                               text=True, timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout
        pytest.fail(f"the wgmma cases ran past {CHILD_TIMEOUT_S} s (a hung kernel?); the child was killed. Its "
                    f"output so far:\n{_tail(out)}")
    print(child.stdout)
    assert child.returncode == 0, (f"wgmma cases failed (exit {child.returncode}):\n{_tail(child.stdout)}\n"
                                   f"{_tail(child.stderr, 20)}")
