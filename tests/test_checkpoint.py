"""pn.save / pn.load and Checkpointer: exact round trips, an open format, atomic writes, checksums
that catch every damaged byte, and a failed save that loses nothing."""
import errno
import json
import os
import pathlib
import re
import types
import zipfile

import numpy as np
import pytest

from conftest import assert_same
import pyneural as pn
from pyneural import checkpoint
from pyneural.checkpoint import CheckpointError, Checkpointer, CheckpointWarning


def sample_tree(rng):
    return {
        "weights": rng.standard_normal((7, 3)).astype(np.float32),
        "f64": rng.standard_normal(5),
        "ints": rng.integers(-5, 5, size=(2, 2)),
        "mask": rng.random(4) < 0.5,
        "empty": np.zeros((0, 3), dtype=np.float32),
        "fortran": np.asfortranarray(rng.standard_normal((3, 4))),
        "scalar32": np.float32(rng.standard_normal()),
        "tensor": pn.Tensor(rng.standard_normal((2, 3)).astype(np.float32), requires_grad=True),
        "by_index": {0: {"momentum": rng.standard_normal(3)}, 1: {"step": 4}},
        "tuple": (1, 2.5, "x"),
        "floats": [0.1, 1 / 3, float("nan"), float("inf"), -float("inf"), -0.0, 5e-324],
        "big": 2**127 + 12345,
        "flags": [True, False, None],
        "$odd": "a key that looks like a tag",
    }



def test_round_trip_is_exact(tmp_path, rng):
    tree = sample_tree(rng)
    path = pn.save(tree, tmp_path / "tree.npz")
    assert_same(tree, pn.load(path))


def test_file_is_an_open_npz_with_json_metadata(tmp_path, rng):
    tree = {"model": {"w": rng.standard_normal((4, 2)).astype(np.float32)}, "step": 7}
    path = pn.save(tree, tmp_path / "c.npz")
    with np.load(path) as npz:
        arrays = [k for k in npz.files if k.startswith("arrays/")]
        assert len(arrays) == 1
        np.testing.assert_array_equal(npz[arrays[0]], tree["model"]["w"])
    with zipfile.ZipFile(path) as zf:
        meta = json.loads(zf.read("metadata.json"))
        assert zf.comment.startswith(b"pyneural-checkpoint 1 sha256=")
    assert meta["tree"]["step"] == 7
    assert meta["arrays"][0]["path"] == "model.w" and meta["arrays"][0]["shape"] == [4, 2]


def test_every_damaged_byte_is_caught_or_harmless(tmp_path, rng):
    """Flip each byte of a small checkpoint in turn: loading must raise CheckpointError or return
    exactly the saved tree (bytes zip does not use), never a different tree or another error."""
    tree = {"w": rng.standard_normal(6).astype(np.float32), "meta": {"lr": 0.1, "step": 3}}
    good = tmp_path / "good.npz"
    pn.save(tree, good)
    data = good.read_bytes()
    bad = tmp_path / "bad.npz"
    caught = 0
    for i in range(len(data)):
        damaged = bytearray(data)
        damaged[i] ^= 0x5A
        bad.write_bytes(bytes(damaged))
        try:
            assert_same(tree, pn.load(bad), f"byte {i}")
        except CheckpointError:
            caught += 1
    assert caught > len(data) // 2


def test_corrupted_array_names_the_array(tmp_path, rng):
    path = tmp_path / "c.npz"
    pn.save({"model": {"layer.weight": rng.standard_normal(256).astype(np.float32)}}, path)
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"corrupted.*model\.layer\.weight"):
        pn.load(path)


@pytest.mark.parametrize("keep_fraction", [0.0, 0.3, 0.9, 0.999])
def test_truncated_file_raises_clear_error(tmp_path, rng, keep_fraction):
    path = tmp_path / "c.npz"
    pn.save({"w": rng.standard_normal(1000)}, path)
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep_fraction)])
    with pytest.raises(CheckpointError, match="truncated"):
        pn.load(path)


def test_plain_npz_is_not_taken_for_a_checkpoint(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, a=np.arange(3))
    with pytest.raises(CheckpointError, match="not a pyneural checkpoint"):
        pn.load(path)


def test_newer_format_version_is_refused(tmp_path):
    path = tmp_path / "c.npz"
    pn.save({"a": 1}, path)
    with zipfile.ZipFile(path, "a") as zf:
        zf.comment = zf.comment.replace(b"checkpoint 1 ", b"checkpoint 9 ")
    with pytest.raises(CheckpointError, match="format version 9"):
        pn.load(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        pn.load(tmp_path / "nope.npz")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pn.save({"a": 1}, tmp_path / "no_dir" / "c.npz")


def test_unsupported_values_name_their_place(tmp_path):
    with pytest.raises(TypeError, match=r"cannot save a set at 'opt.groups\[1\]'"):
        pn.save({"opt": {"groups": [1, {2}]}}, tmp_path / "c.npz")
    with pytest.raises(TypeError, match="dtype object"):
        pn.save({"a": np.array([1, "x", None], dtype=object)}, tmp_path / "c.npz")
    assert not os.listdir(tmp_path)


class FailingFile:
    """A file that accepts ``limit`` bytes, then fails as a full disk does."""

    def __init__(self, path, limit):
        self._f = open(path, "wb")
        self._left = limit

    def write(self, data):
        if len(data) > self._left:
            self._f.write(bytes(data[:self._left]))
            self._left = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self._left -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


@pytest.mark.parametrize("limit", [0, 100, 3000, 10000])
def test_disk_full_mid_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch, rng, limit):
    ckpt = Checkpointer(tmp_path, keep=1)
    first = {"w": rng.standard_normal(4096).astype(np.float32), "step": 1}
    ckpt.save(1, first)
    monkeypatch.setattr(checkpoint, "_open_temp", lambda path: FailingFile(path, limit))
    with pytest.raises(OSError, match="No space left"):
        ckpt.save(2, {"w": rng.standard_normal(4096).astype(np.float32), "step": 2})
    monkeypatch.undo()
    assert ckpt.steps() == [1]
    assert os.listdir(tmp_path) == [os.path.basename(ckpt.path_for(1))]
    assert_same(first, ckpt.load())


def test_failed_fsync_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    pn.save({"v": 1}, path)

    def broken_fsync(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(checkpoint.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="Input/output error"):
        pn.save({"v": 2}, path)
    monkeypatch.undo()
    assert pn.load(path) == {"v": 1}
    assert os.listdir(tmp_path) == ["c.npz"]


def test_checkpointer_keeps_the_last_k(tmp_path):
    ckpt = Checkpointer(tmp_path, keep=2)
    assert ckpt.latest() is None
    for step in (5, 10, 15, 20):
        ckpt.save(step, {"step": step})
    assert ckpt.steps() == [15, 20]
    assert ckpt.latest() == ckpt.path_for(20)
    assert ckpt.load() == {"step": 20}
    assert ckpt.load(15) == {"step": 15}
    with pytest.raises(FileNotFoundError, match=r"no checkpoint for step 5 .*available: \[15, 20\]"):
        ckpt.load(5)


def test_checkpointer_keep_none_keeps_all(tmp_path):
    ckpt = Checkpointer(tmp_path, keep=None)
    for step in range(4):
        ckpt.save(step, {"step": step})
    assert ckpt.steps() == [0, 1, 2, 3]


def test_checkpointer_corrupted_step_lists_fallbacks_and_the_default_falls_back(tmp_path):
    ckpt = Checkpointer(tmp_path, keep=3)
    for step in (1, 2):
        ckpt.save(step, {"w": np.arange(100.0) + step})
    path = ckpt.path_for(2)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    with pytest.raises(CheckpointError, match=r"truncated.*other checkpoints here: steps \[1\]"):
        ckpt.load(2)
    with pytest.warns(CheckpointWarning, match=rf"skipped {re.escape(path)}: is truncated"):
        assert_same(ckpt.load(), {"w": np.arange(100.0) + 1})
    assert ckpt.steps() == [1] and ckpt.latest() == ckpt.path_for(1)


def test_check_header_tells_checkpoints_from_other_files(tmp_path):
    good = pn.save({"w": np.arange(3.0)}, tmp_path / "good.npz")
    checkpoint.check_header(good)
    (tmp_path / "text.npz").write_bytes(b"hello")
    np.savez(tmp_path / "plain.npz", a=np.arange(3))
    for name, problem in (("text.npz", r"is truncated or not a pyneural checkpoint \(5 bytes"),
                          ("plain.npz", "is a zip/npz file but not a pyneural checkpoint"),
                          ("missing.npz", "cannot be read")):
        with pytest.raises(CheckpointError, match=problem) as e:
            checkpoint.check_header(tmp_path / name)
        assert e.value.problem.startswith(("is ", "cannot")), "the problem reads on after the file's name"


def stray_files(directory):
    """What an experiment directory holds besides checkpoints: the issue's stray 5-byte
    'checkpoint', notes, a plain npz and a directory named like checkpoints. Returns a snapshot."""
    (directory / "ckpt-999999.npz").write_bytes(b"hello")
    (directory / "notes.txt").write_text("lr sweep, run 3\n")
    np.savez(directory / "ckpt-000000007.npz", a=np.arange(3))
    (directory / "ckpt-000000005.npz").mkdir()
    return snapshot(directory)


def snapshot(directory):
    return {p.name: (p.read_bytes() if p.is_file() else "dir") for p in directory.iterdir()}


def test_pruning_counts_and_deletes_only_checkpoints(tmp_path):
    strays = stray_files(tmp_path)
    ckpt = Checkpointer(tmp_path, keep=2)
    for step in (10, 20, 30):
        ckpt.save(step, {"step": step})
    assert ckpt.steps() == [20, 30]
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k in strays} == strays, "every other file is untouched"
    assert sorted(set(after) - set(strays)) == [os.path.basename(ckpt.path_for(s)) for s in (20, 30)]
    assert ckpt.latest() == ckpt.path_for(30)
    with pytest.warns(CheckpointWarning, match="skipped .*ckpt-999999.npz: is truncated or not a pyneural"):
        assert ckpt.load() == {"step": 30}


def test_checkpoints_of_an_earlier_run_are_verified_and_then_rotated(tmp_path):
    strays = stray_files(tmp_path)
    earlier = Checkpointer(tmp_path, keep=None)
    for step in (1, 2, 3):
        earlier.save(step, {"step": step})
    ckpt = Checkpointer(tmp_path, keep=2)
    ckpt.save(4, {"step": 4})
    assert ckpt.steps() == [3, 4]
    assert {k: v for k, v in snapshot(tmp_path).items() if k in strays} == strays


def test_a_checkpoint_that_fails_a_full_load_is_never_counted_or_deleted(tmp_path):
    ckpt = Checkpointer(tmp_path, keep=2)
    ckpt.save(5, {"w": np.arange(1000.0)})
    path = ckpt.path_for(5)
    damaged = bytearray(pathlib.Path(path).read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF  # inside the array's bytes: the header still checks out
    pathlib.Path(path).write_bytes(bytes(damaged))
    checkpoint.check_header(path)
    found = ckpt.newest_valid()
    assert found.path is None and [p for p, _ in found.skipped] == [path]
    assert found.skipped[0][1].startswith("is corrupted: cannot read arrays/0.npy (the array at 'w')")
    for step in (6, 7, 8):
        ckpt.save(step, {"step": step})
    assert ckpt.steps() == [7, 8] and pathlib.Path(path).read_bytes() == bytes(damaged)


def test_newest_valid_skips_newer_files_and_says_why(tmp_path):
    ckpt = Checkpointer(tmp_path, keep=None)
    for step in (1, 2):
        ckpt.save(step, {"format": "pyneural-training", "step": step})
    ckpt.save(3, {"something": "else"})
    stray_files(tmp_path)
    found = ckpt.newest_valid(accept=checkpoint.check_training_state)
    assert (found.step, found.path, found.state["step"]) == (2, ckpt.path_for(2), 2)
    problems = [(os.path.basename(p), why) for p, why in found.skipped]
    assert [name for name, _ in problems] == ["ckpt-999999.npz", "ckpt-000000007.npz", "ckpt-000000005.npz",
                                              "ckpt-000000003.npz"], "newest first"
    assert problems[0][1].startswith("is truncated or not a pyneural checkpoint (5 bytes")
    assert problems[1][1].startswith("is a zip/npz file but not a pyneural checkpoint")
    assert problems[2][1].startswith("cannot be read")
    assert problems[3][1].startswith("does not hold a training run's state")


def test_a_checkpoint_under_another_name_for_its_step_is_found(tmp_path):
    ckpt = Checkpointer(tmp_path)
    source = pn.save({"step": 42}, tmp_path / "elsewhere.npz")
    os.replace(source, tmp_path / "ckpt-42.npz")
    assert ckpt.steps() == [42] and ckpt.load(42) == {"step": 42} and ckpt.load() == {"step": 42}


def test_checkpointer_removes_temporaries_of_dead_processes(tmp_path):
    dead_pid = 2**22 + 12345  # above the default pid_max: never a live process
    stale = tmp_path / f".ckpt-000000010.npz.tmp-{dead_pid}"
    stale.write_bytes(b"half a checkpoint")
    live = tmp_path / f".ckpt-000000010.npz.tmp-{os.getpid()}"
    live.write_bytes(b"being written")
    Checkpointer(tmp_path)
    assert not stale.exists() and live.exists()


@pytest.mark.parametrize("keep", [0, -1, 1.5, True, "2"])
def test_checkpointer_rejects_bad_keep(tmp_path, keep):
    with pytest.raises(ValueError, match="keep must be an int >= 1 or None"):
        Checkpointer(tmp_path, keep=keep)


@pytest.mark.parametrize("step", [-1, 1.0, None, True])
def test_checkpointer_rejects_bad_step(tmp_path, step):
    with pytest.raises(ValueError, match="step must be an int >= 0"):
        Checkpointer(tmp_path).save(step, {})


def test_rng_state_round_trip_through_a_file(tmp_path):
    pn.manual_seed(3)
    np.random.seed(4)
    pn.randn(5)
    np.random.standard_normal(3)
    state = checkpoint.rng_state()
    pn.save(state, tmp_path / "rng.npz")
    expected = (pn.randn(8).data.copy(), np.random.standard_normal(8))
    pn.randn(100)
    np.random.standard_normal(100)
    checkpoint.set_rng_state(pn.load(tmp_path / "rng.npz"))
    np.testing.assert_array_equal(pn.randn(8).data, expected[0])
    np.testing.assert_array_equal(np.random.standard_normal(8), expected[1])


def test_cupy_generator_is_reseeded_at_each_checkpoint(monkeypatch):
    """CuPy cannot export its generator state: the capture reseeds it from a value derived from
    pyneural's state and the step, and restoring applies the same seed."""
    seeds = []
    fake = types.SimpleNamespace(random=types.SimpleNamespace(seed=seeds.append))
    monkeypatch.setitem(__import__("sys").modules, "cupy", fake)
    pn.manual_seed(0)
    a = checkpoint.rng_state(step=10)
    b = checkpoint.rng_state(step=11)
    assert a["cupy"]["seed"] != b["cupy"]["seed"]
    assert seeds == [a["cupy"]["seed"], b["cupy"]["seed"]]
    checkpoint.set_rng_state(a)
    assert seeds[-1] == a["cupy"]["seed"]
