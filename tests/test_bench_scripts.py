"""Every script in bench/ runs as the README shows it, with its quickest options, from a directory
outside the checkout and against the pyneural this test imports (the installed package in CI, whose
source tree has no compiled _C: a script that put the tree first on sys.path would fail here).
Each must exit 0, print its table (the reference's column beside ours) and write its --json rows;
with matplotlib installed, its --plot PNG too. Speed is not checked: these are smoke runs."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest
from conftest import subprocess_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "bench")
HAVE_MPI = importlib.util.find_spec("mpi4py") is not None
HAVE_PLOT = importlib.util.find_spec("matplotlib") is not None

# script, quickest arguments, a column header its table must print, needs (mpi / emulated cuda)
SCRIPTS = [
    ("gemm.py", ["--quick", "--sizes", "96", "--rounds", "1", "--min-time", "0.01"], "numpy GFLOP/s", None),
    ("conv.py", ["--set", "tiny", "--rounds", "1", "--min-time", "0.01"], "bwd-weight", None),
    ("conv.py", ["--dtype", "bf16", "--channels-last", "--set", "tiny", "--rounds", "1", "--min-time", "0.01"],
     "torch bf16 GFLOP/s", None),
    ("conv.py", ["--channels-last", "--set", "tiny", "--rounds", "1", "--min-time", "0.01"], "vs nchw", None),
    ("conv.py", ["--set", "depthwise", "--rounds", "1", "--repeat", "1", "--min-time", "0.01"], "GEMM path ms", None),
    ("train.py", ["--quick", "--models", "mlp", "--batches", "32", "--threads", "1"], "ours img/s", None),
    ("train.py", ["--contend", "--quick", "--models", "mlp", "--batches", "32", "--threads", "1,2"], "busy ratio",
     None),
    ("train.py", ["--quick", "--models", "cnn", "--batches", "8", "--torch-process", "shared"], "torch img/s", None),
    ("recsys.py", ["--sizes", "2000", "--epochs", "1", "--torch-epochs", "1"], "s/epoch", None),
    ("allreduce.py", ["--max-mb", "0.02", "--min-time", "0.01", "--repeat", "1"], "bucketed us", "mpi"),
    ("scaling.py", ["--ranks", "2", "--model", "mlp", "--steps", "2", "--warmup", "1", "--rounds", "1",
                    "--repeat", "1", "--bucket-cap-mb", "25"], "images/s", "mpi"),
    ("cuda_kernels.py", ["--sizes", "32", "--batches", "1", "--repeat", "1"], "cuBLAS/cuDNN TFLOP/s", "cuda"),
    ("cuda_tc.py", ["--sizes", "64", "--iters", "1", "--repeat", "1"], "cuBLAS TFLOP/s", "cuda"),
]


def test_every_bench_script_is_listed():
    helpers = ("common.py", "scaling_model.py", "torch_models.py", "torch_worker.py")
    scripts = {f for f in os.listdir(BENCH) if f.endswith(".py") and f not in helpers}
    assert scripts == {s[0] for s in SCRIPTS}, "a bench script without a smoke run here (or a stale entry)"


@pytest.mark.slow
@pytest.mark.parametrize("script,args,header,needs", SCRIPTS, ids=[s[0] for s in SCRIPTS])
def test_bench_script_runs_outside_the_checkout(tmp_path, script, args, header, needs):
    if needs == "mpi" and not HAVE_MPI:
        pytest.skip("needs mpi4py and mpirun")
    env = subprocess_env()  # the package under test first on the path; never the checkout's source tree
    env.pop("PYNEURAL_CUDA_EMULATE", None)
    if needs == "cuda":
        env["PYNEURAL_CUDA_EMULATE"] = "1"  # real GPU or not, the emulated device runs everywhere
    out_json = tmp_path / "rows.json"
    cmd = [sys.executable, os.path.join(BENCH, script), *args, "--json", str(out_json)]
    if HAVE_PLOT:
        cmd += ["--plot", str(tmp_path / "plot.png")]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    assert header in proc.stdout, f"{script}: no '{header}' column in its table:\n{proc.stdout}"
    rows = json.loads(out_json.read_text())["rows"]
    assert rows, f"{script}: --json wrote no rows"
    if HAVE_PLOT:
        assert (tmp_path / "plot.png").stat().st_size > 1000


def test_conv_depthwise_set_combined_says_it_runs_alone(tmp_path):
    """--set depthwise has its own table: combined with another set, a clear message, not a traceback."""
    proc = subprocess.run([sys.executable, os.path.join(BENCH, "conv.py"), "--set", "depthwise,r50"], cwd=tmp_path,
                          env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "runs alone" in proc.stderr and "Traceback" not in proc.stderr


def test_torch_worker_answers_step_window_and_threads(tmp_path):
    """bench/train.py's torch side in its own process (bench/torch_worker.py): one line per command,
    a step's loss, a window's seconds per step, the thread count set; a bad command says so."""
    pytest.importorskip("torch")
    import numpy as np
    rng = np.random.default_rng(0)
    data = tmp_path / "batches.npz"
    np.savez(data, x0=rng.standard_normal((4, 1, 8, 8)).astype(np.float32), y0=np.arange(4) % 10)
    spec = {"name": "mlp", "data": str(data), "device": "cpu", "amp": None, "channels_last": False,
            "lr": 0.01, "momentum": 0.9, "model_name": "mlp"}
    commands = [json.dumps(spec), "step", "window 0.01 wall", "window 0.01 cpu", "threads 1", "nonsense", "quit"]
    env = subprocess_env()
    env.pop("OMP_WAIT_POLICY", None)
    proc = subprocess.run([sys.executable, os.path.join(BENCH, "torch_worker.py")], input="\n".join(commands) + "\n",
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    loss, wall, cpu, threads, bad = proc.stdout.splitlines()
    assert 0 < float(loss) < 10 and 0 < float(wall) < 1 and 0 < float(cpu) < 1 and int(threads) == 1
    assert "unknown command" in bad
