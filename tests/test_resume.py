"""Exact resume: a real ``pyneural train`` process killed with SIGKILL right after a checkpoint
resumes to the bits of an uninterrupted run; a checkpoint of N ranks resumes on M ranks with every
sample of the interrupted epoch used exactly once; a checkpoint of another model, or a save that
fails half-way, loses nothing."""
import errno
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import assert_same, subprocess_env

import pyneural as pn
from pyneural import checkpoint, cli, models, optim
from pyneural.checkpoint import Checkpointer, SaveEvery, restore_training_state, training_state
from pyneural.commands.train import KILL_AFTER_SAVE_ENV
from pyneural.data import DataLoader, TensorDataset
from pyneural.distributed.launch import find_mpirun, launcher_flags
from pyneural.trainer import Trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# 1437 digits / batch 256 = 6 steps per epoch, 2 epochs = 12 steps; the kill at step 9 is in the
# middle of the second epoch, between an optimizer step and the next batch. One thread per child:
# the children are quick, and two of them run at once.
RUN = ["--model", "mlp", "--epochs", "2", "--batch-size", "256", "--seed", "3", "--no-progress"]
STEPS, KILL_AT = 12, 9
TIMINGS = ("images_per_s", "seconds", "data_wait_s")


def start_training(cwd, *flags, **env):
    return subprocess.Popen([sys.executable, "-m", "pyneural", "train", *RUN, *flags], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd,
                            env=subprocess_env(OMP_NUM_THREADS="1", **env))


def finish(proc):
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"pyneural train did not finish in 120 s:\n{out[-2000:]}\n{err[-2000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def train(cwd, *flags, **env):
    return finish(start_training(cwd, *flags, **env))


def step_losses(path):
    with open(path) as f:
        return [(r["step"], r["epoch"], r["loss"]) for r in map(json.loads, f)]


def epoch_lines(stdout):
    """The per-epoch lines without their timings."""
    return [line.split("%")[0] for line in stdout.splitlines() if line.startswith("epoch")]


def test_sigkilled_run_resumes_to_the_same_bits(tmp_path):
    straight_proc = start_training(tmp_path, "--checkpoint-dir", "straight", "--save-every", "1000",
                                   "--step-log", "straight.log")
    killed = train(tmp_path, "--checkpoint-dir", "run", "--save-every", "3", "--keep", "2", "--step-log", "a.log",
                   **{KILL_AFTER_SAVE_ENV: str(KILL_AT)})
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr)
    assert "final test accuracy" not in killed.stdout
    run_dir = Checkpointer(tmp_path / "run")
    assert run_dir.steps() == [6, 9], "--keep 2 keeps the newest two"

    resumed = train(tmp_path, "--checkpoint-dir", "run", "--save-every", "3", "--keep", "2", "--resume",
                    "--step-log", "b.log")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {os.path.join('run', 'ckpt-000000009.npz')}: step 9, epoch 2, sample 768/1437" \
        in resumed.stdout
    straight = finish(straight_proc)
    assert straight.returncode == 0, straight.stderr

    expected = step_losses(tmp_path / "straight.log")
    first, rest = step_losses(tmp_path / "a.log"), step_losses(tmp_path / "b.log")
    assert [s for s, _, _ in expected] == list(range(1, STEPS + 1))
    assert [s for s, _, _ in first] == list(range(1, KILL_AT + 1))
    assert first + rest == expected, "the loss sequences must be identical, bit for bit"

    a = pn.load(Checkpointer(tmp_path / "straight").latest())
    b = pn.load(run_dir.latest())
    assert a["step"] == b["step"] == STEPS
    for history in (a["trainer"]["history"], b["trainer"]["history"]):
        for stats in history:
            for key in TIMINGS:
                stats.pop(key)
    for part in ("model", "optimizer", "scheduler", "loader", "trainer", "rng"):
        assert_same(a[part], b[part], part)
    # The interrupted epoch's printed mean loss and accuracy include the steps before the kill.
    assert epoch_lines(resumed.stdout) == epoch_lines(straight.stdout)[1:]
    assert "utilization report" in resumed.stdout



# ---- N ranks -> M ranks --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mpirun():
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install 'pyneural[mpi]')")
    launcher = find_mpirun()
    if launcher is None:
        pytest.skip("no mpirun/mpiexec found")
    return [launcher] + launcher_flags(launcher)


def phase(mpirun, tmp_path, ranks, name, *extra):
    cmd = mpirun + ["-np", str(ranks), sys.executable, os.path.join(REPO, "tests", "mpi", "resume_ranks.py"),
                    "--dir", str(tmp_path / "ckpt"), "--out", str(tmp_path / name), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            env=subprocess_env(OMP_NUM_THREADS="1"), start_new_session=True)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} did not finish in 60 s\n{out[-2000:]}\n{err[-4000:]}")
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{out[-2000:]}\n{err[-4000:]}"
    results = []
    for rank in range(ranks):
        with open(tmp_path / f"{name}.{rank}.json") as f:
            results.append(json.load(f))
    return results


@pytest.mark.mpi
def test_checkpoint_of_two_ranks_resumes_on_one_and_back_with_every_sample_once(mpirun, tmp_path):
    """2 ranks stop mid-epoch 0; 1 rank resumes, finishes epoch 0 and stops mid-epoch 1; 2 ranks
    resume and finish. Each epoch's real samples, over all phases and ranks, are the 101 samples
    exactly once (the sampler's padding is excluded by the loss weighting that the ids follow)."""
    first = phase(mpirun, tmp_path, 2, "a", "--stop-at", "5")
    second = phase(mpirun, tmp_path, 1, "b", "--stop-at", "31")
    third = phase(mpirun, tmp_path, 2, "c")
    assert second[0]["resumed_from"] == {"step": 5, "epoch": 0, "position": 40, "ranks": 2}
    assert third[0]["resumed_from"] == {"step": 31, "epoch": 1, "position": 40, "ranks": 1}
    for epoch in ("0", "1"):
        ids = [i for results in (first, second, third) for r in results for i in r["seen"].get(epoch, [])]
        assert sorted(ids) == list(range(101)), f"epoch {epoch}: samples skipped or repeated"
    assert {r["step"] for r in third} == {39}


# ---- bad input, nothing lost -------------------------------------------------------------------

def test_resuming_another_model_lists_the_mismatched_keys(tmp_path, capsys):
    common = ["train", "--epochs", "1", "--batch-size", "512", "--no-progress", "--checkpoint-dir", str(tmp_path)]
    assert cli.main(common + ["--model", "mlp"]) == 0
    saved = Checkpointer(tmp_path).steps()
    with pytest.raises(SystemExit) as exc:
        cli.main(common + ["--model", "cnn", "--resume"])
    message = str(exc.value)
    assert message.startswith(f"pyneural train: cannot resume from {Checkpointer(tmp_path).latest()}")
    assert "missing key(s): 0.weight, 0.bias, 2.weight, 2.bias, 6.weight" in message
    assert "unexpected key(s): 1.weight, 1.bias, 3.weight, 3.bias, 5.weight, 5.bias" in message
    assert Checkpointer(tmp_path).steps() == saved


def small_run(tmp_path, save_every, keep=2):
    pn.manual_seed(0)
    data = TensorDataset(np.random.default_rng(0).standard_normal((40, 1, 8, 8)).astype(np.float32),
                         np.arange(40) % 10)
    loader = DataLoader(data, batch_size=8, shuffle=True, seed=1)
    model = models.mlp(hidden=16)
    trainer = Trainer(model, optim.Adam(model.parameters(), lr=1e-2))
    ckpt = Checkpointer(tmp_path, keep=keep)
    trainer.callbacks.append(SaveEvery(ckpt, loader, every=save_every))
    return trainer, loader, ckpt


def test_a_save_failing_mid_write_during_training_keeps_the_last_checkpoint_resumable(tmp_path, monkeypatch):
    trainer, loader, ckpt = small_run(tmp_path, save_every=3)
    opened = []

    class FullDisk:
        def __init__(self, path):
            self._f = open(path, "wb")
            opened.append(path)

        def write(self, data):
            self._f.write(bytes(data[:len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self._f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._f.close()

    real_open = checkpoint._open_temp
    monkeypatch.setattr(checkpoint, "_open_temp", lambda path: FullDisk(path) if trainer.global_step == 6
                        else real_open(path))
    with pytest.raises(OSError, match="No space left"):
        trainer.fit(loader, epochs=2)
    assert opened and not os.path.exists(opened[0]), "the half-written temporary file is removed"
    assert ckpt.steps() == [3]
    monkeypatch.undo()
    again, loader2, _ = small_run(tmp_path, save_every=3)
    restore_training_state(ckpt.load(), again, loader2)
    assert again.global_step == 3 and loader2.state_dict()["position"] == 24


def test_restore_refuses_a_checkpoint_that_is_not_a_training_state(tmp_path):
    trainer, loader, _ = small_run(tmp_path, save_every=100)
    with pytest.raises(checkpoint.CheckpointError, match="does not hold a training run's state"):
        restore_training_state({"model": {}}, trainer, loader)
    state = training_state(trainer, loader, 0)
    state["model"]["1.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(RuntimeError, match=r"size mismatch for 1\.weight: checkpoint shape \(3, 3\)"):
        restore_training_state(state, trainer, loader)


def test_checkpoint_flags_need_a_directory(capsys):
    for flags in (["--resume"], ["--resume-from", "x.npz"], ["--save-every", "5"], ["--keep", "2"]):
        with pytest.raises(SystemExit) as exc:
            cli.main(["train", *flags])
        assert exc.value.code == 2
        assert "need(s) --checkpoint-dir DIR" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--checkpoint-dir", "d", "--resume", "--resume-from", "x.npz"])
    assert exc.value.code == 2 and "--resume and --resume-from exclude each other" in capsys.readouterr().err


# ---- a checkpoint directory that holds other files -----------------------------------------------

# 1437 digits / batch 64 = 23 steps: --save-every 10 writes steps 10, 20 and the final 23.
QUICK = ["train", "--model", "mlp", "--epochs", "1", "--batch-size", "64", "--seed", "3", "--no-progress"]


def test_a_directory_with_a_stray_file_keeps_it_and_the_newest_real_checkpoints(tmp_path):
    """The issue's case, through the real command line: a 5-byte ``ckpt-999999.npz`` and
    ``notes.txt`` beside the checkpoints. Training keeps both and the two newest real checkpoints;
    --resume names the stray file it skipped and resumes from the newest real one, no traceback."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "ckpt-999999.npz").write_bytes(b"hello")
    (run_dir / "notes.txt").write_text("baseline, seed 3\n")
    flags = ["--checkpoint-dir", "run", "--save-every", "10", "--keep", "2"]
    first = subprocess.run([sys.executable, "-m", "pyneural", *QUICK, *flags], capture_output=True, text=True,
                           cwd=tmp_path, env=subprocess_env(OMP_NUM_THREADS="1"), timeout=120)
    assert first.returncode == 0, first.stderr
    assert sorted(os.listdir(run_dir)) == ["ckpt-000000020.npz", "ckpt-000000023.npz", "ckpt-999999.npz",
                                           "notes.txt"]
    assert (run_dir / "ckpt-999999.npz").read_bytes() == b"hello"
    assert (run_dir / "notes.txt").read_text() == "baseline, seed 3\n"

    resumed = subprocess.run([sys.executable, "-m", "pyneural", *QUICK[:4], "2", *QUICK[5:], *flags, "--resume"],
                             capture_output=True, text=True, cwd=tmp_path, env=subprocess_env(OMP_NUM_THREADS="1"),
                             timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert "Traceback" not in resumed.stderr
    stray = os.path.join("run", "ckpt-999999.npz")
    assert f"skipped {stray}: is truncated or not a pyneural checkpoint (5 bytes" in resumed.stdout
    assert f"resumed from {os.path.join('run', 'ckpt-000000023.npz')}: step 23, epoch 2" in resumed.stdout
    assert sorted(os.listdir(run_dir)) == ["ckpt-000000040.npz", "ckpt-000000046.npz", "ckpt-999999.npz",
                                           "notes.txt"]


def three_checkpoints(directory):
    """Train 3 steps (1437 digits, batch 512), a checkpoint after each: steps 1, 2, 3."""
    assert cli.main(["train", "--model", "mlp", "--epochs", "1", "--batch-size", "512", "--no-progress",
                     "--checkpoint-dir", str(directory), "--save-every", "1", "--keep", "3"]) == 0
    assert Checkpointer(directory).steps() == [1, 2, 3]


def test_resume_skips_damaged_and_foreign_newer_files_saying_why(tmp_path, capsys):
    three_checkpoints(tmp_path)
    newest = Checkpointer(tmp_path).path_for(3)
    with open(newest, "r+b") as f:
        f.truncate(os.path.getsize(newest) // 2)
    pn.save({"weights": np.zeros(3)}, Checkpointer(tmp_path).path_for(4))  # a checkpoint, not a training state
    capsys.readouterr()
    assert cli.main(["train", "--model", "mlp", "--epochs", "1", "--batch-size", "512", "--no-progress",
                     "--checkpoint-dir", str(tmp_path), "--resume"]) == 0
    out = capsys.readouterr().out
    skipped = [line for line in out.splitlines() if line.startswith("skipped ")]
    assert skipped == [f"skipped {Checkpointer(tmp_path).path_for(4)}: does not hold a training run's state (it "
                       f"was not written by the trainer's checkpointing)", skipped[1]]
    assert skipped[1].startswith(f"skipped {newest}: is truncated or not a pyneural checkpoint")
    assert f"resumed from {Checkpointer(tmp_path).path_for(2)}: step 2" in out


def test_resume_with_no_valid_checkpoint_names_the_files_and_starts_afresh(tmp_path, capsys):
    (tmp_path / "ckpt-000000007.npz").write_text("not a checkpoint")
    assert cli.main(["train", "--model", "mlp", "--epochs", "1", "--batch-size", "512", "--no-progress",
                     "--checkpoint-dir", str(tmp_path), "--resume"]) == 0
    out = capsys.readouterr().out
    assert f"skipped {tmp_path / 'ckpt-000000007.npz'}: is truncated or not a pyneural checkpoint" in out
    assert f"no valid checkpoint in {tmp_path}: starting from scratch" in out
    assert (tmp_path / "ckpt-000000007.npz").read_text() == "not a checkpoint"
    assert Checkpointer(tmp_path).steps() == [3]


def test_resume_from_a_chosen_checkpoint_continues_to_the_same_bits(tmp_path, capsys):
    three_checkpoints(tmp_path / "first")
    chosen = tmp_path / "kept" / "step2.npz"
    chosen.parent.mkdir()
    os.replace(Checkpointer(tmp_path / "first").path_for(2), chosen)
    capsys.readouterr()
    assert cli.main(["train", "--model", "mlp", "--epochs", "1", "--batch-size", "512", "--no-progress",
                     "--checkpoint-dir", str(tmp_path / "second"), "--resume-from", str(chosen)]) == 0
    assert f"resumed from {chosen}: step 2, epoch 1" in capsys.readouterr().out
    again = Checkpointer(tmp_path / "second")
    assert again.steps() == [3], "the resumed run saves into --checkpoint-dir"
    straight, resumed = pn.load(Checkpointer(tmp_path / "first").path_for(3)), pn.load(again.path_for(3))
    for part in ("model", "optimizer", "scheduler", "loader", "rng"):
        assert_same(straight[part], resumed[part], part)


@pytest.mark.parametrize("bad", ["missing.npz", "stray.npz"])
def test_resume_from_a_bad_file_says_so_without_a_traceback(tmp_path, bad):
    (tmp_path / "stray.npz").write_bytes(b"hello")
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--model", "mlp", "--epochs", "1", "--no-progress", "--checkpoint-dir", str(tmp_path / "d"),
                  "--resume-from", str(tmp_path / bad)])
    message = str(exc.value)
    assert message.startswith(f"pyneural train: cannot resume from {tmp_path / bad}: pn.load: ")
    assert ("no checkpoint file" if bad == "missing.npz" else "is truncated or not a pyneural checkpoint") in message


def test_resume_without_a_checkpoint_starts_afresh(tmp_path, capsys):
    start = time.perf_counter()
    assert cli.main(["train", "--model", "mlp", "--epochs", "1", "--batch-size", "512", "--no-progress",
                     "--deterministic", "--checkpoint-dir", str(tmp_path / "new"), "--resume"]) == 0
    assert "starting from scratch" in capsys.readouterr().out
    assert Checkpointer(tmp_path / "new").steps() == [3]
    assert time.perf_counter() - start < 30
