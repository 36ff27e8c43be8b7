"""pyneural.recsys: MovieLens readers, the synthetic generator, MF/NCF training, the CLI, and
row-sparse gradient sync under a real ``mpirun -np 2``."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import pyneural as pn
from conftest import subprocess_env
from pyneural.functions.embedding import RowSparseGrad
from pyneural.recsys import (NCF, MatrixFactorization, evaluate, fit, read_ratings, synthetic,
                             train_test_split)
from pyneural.recsys.data import synthetic_shape

SCRIPTS = os.path.join(os.path.dirname(__file__), "mpi")


# ---- readers --------------------------------------------------------------------------------------

def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("name,text", [
    ("u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t377\t1\t878887116\n"),
    ("ratings.dat", "196::242::3::978300760\n186::302::3::978302109\n196::377::1::978301968\n"),
    ("ratings.csv", "userId,movieId,rating,timestamp\n196,242,3.0,1\n186,302,3.0,2\n196,377,1.0,3\n\n"),
])
def test_readers_parse_each_movielens_format_and_remap_ids(tmp_path, name, text):
    r = read_ratings(write(tmp_path, name, text))
    assert (r.n_users, r.n_items, len(r)) == (2, 3, 3)
    assert r.users.dtype == np.int32 and r.items.dtype == np.int32 and r.ratings.dtype == np.float32
    assert r.users.tolist() == [1, 0, 1]  # raw 186 < 196
    assert r.items.tolist() == [0, 1, 2]
    assert r.ratings.tolist() == [3.0, 3.0, 1.0]


def test_reader_handles_half_stars_crlf_and_chunk_boundaries(tmp_path, monkeypatch):
    from pyneural.recsys import data
    monkeypatch.setattr(data, "CHUNK_BYTES", 7)  # many chunks, boundaries inside lines
    lines = [f"{u},{i},{(u + i) % 10 / 2 + 0.5},99" for u in range(30) for i in range(0, 60, 7)]
    r = read_ratings(write(tmp_path, "ratings.csv", "userId,movieId,rating,timestamp\r\n" + "\r\n".join(lines)))
    assert len(r) == len(lines) and r.n_users == 30 and r.n_items == 9
    assert np.allclose(r.ratings, [float(line.split(",")[2]) for line in lines])


@pytest.mark.parametrize("name,text,line,why", [
    ("u.data", "1\t2\t3\t4\n1\t2\t3\n", 2, "3 fields"),
    ("ratings.dat", "1::2::3::4\n1::x::3::4\n", 2, "not a number"),
    ("ratings.csv", "userId,movieId,rating,timestamp\n1,2,3,4\n5,6,7,8\n-1,2,3,4\n", 4, "non-negative"),
    ("ratings.csv", "userId,movieId,rating,timestamp\n1,2.5,3,4\n", 2, "integers"),
    ("ratings.dat", "1::2::3::4\n\n1::2::3::4\n", 2, "fields"),
    ("u.data", "1\t2\tnan\t4\n", 1, "not finite"),
])
def test_malformed_lines_are_reported_with_file_line_number_and_content(tmp_path, name, text, line, why):
    path = write(tmp_path, name, text)
    with pytest.raises(ValueError) as e:
        read_ratings(path)
    message = str(e.value)
    assert f"{path}:{line}:" in message and why in message
    assert repr(text.split("\n")[line - 1]) in message


def test_reader_rejects_a_wrong_header_and_an_empty_file(tmp_path):
    with pytest.raises(ValueError, match="unexpected header"):
        read_ratings(write(tmp_path, "ratings.csv", "user,item,stars\n1,2,3\n"))
    with pytest.raises(ValueError, match="empty"):
        read_ratings(write(tmp_path, "u.data", ""))
    with pytest.raises(FileNotFoundError):
        read_ratings(tmp_path / "missing.csv")


def test_split_is_seeded_disjoint_and_complete():
    data = synthetic(5000, seed=3)
    a_train, a_test = train_test_split(data, 0.2, seed=7)
    b_train, b_test = train_test_split(data, 0.2, seed=7)
    assert np.array_equal(a_test.ratings, b_test.ratings) and len(a_test) == 1000 and len(a_train) == 4000
    c_train, c_test = train_test_split(data, 0.2, seed=8)
    assert not np.array_equal(a_test.users, c_test.users)
    pairs = lambda d: sorted(zip(d.users.tolist(), d.items.tolist(), d.ratings.tolist()))  # noqa: E731
    assert sorted(pairs(a_train) + pairs(a_test)) == pairs(data)


# ---- synthetic --------------------------------------------------------------------------------------

def test_synthetic_has_movielens_shape_dtypes_and_seeded_content():
    assert synthetic_shape(25_000_000) == (162_541, 59_047)
    d = synthetic(200_000, seed=5)
    assert (d.n_users, d.n_items) == synthetic_shape(200_000)
    assert d.users.dtype == np.int32 and d.ratings.dtype == np.float32 and d.truth.dtype == np.float32
    assert d.users.min() >= 0 and d.users.max() < d.n_users and d.items.max() < d.n_items
    assert d.ratings.min() >= 0.5 and d.ratings.max() <= 5.0 and np.all(d.ratings * 2 == np.round(d.ratings * 2))
    counts = np.sort(np.bincount(d.items, minlength=d.n_items))[::-1]
    assert counts[: d.n_items // 100].sum() > 5 * counts[-d.n_items // 10:].sum()  # a heavy head, a long tail
    again = synthetic(200_000, seed=5)
    assert np.array_equal(d.ratings, again.ratings) and np.array_equal(d.items, again.items)
    assert not np.array_equal(d.ratings, synthetic(200_000, seed=6).ratings)
    assert 0.5 < d.noise_floor() < 0.7


# ---- models and training --------------------------------------------------------------------------

def test_mf_reaches_near_the_noise_floor_on_a_small_synthetic_set():
    data = synthetic(150_000, seed=0)
    train, test = train_test_split(data, shuffled=True)
    pn.manual_seed(0)
    model = MatrixFactorization(data.n_users, data.n_items, 16, l2=0.03)
    opt = pn.optim.Adam(model.parameters(), lr=0.01)
    history = fit(model, opt, train, test, epochs=10, batch_size=8192)
    floor = test.noise_floor()
    baseline = float(np.sqrt(np.mean((test.ratings - train.ratings.mean()) ** 2)))
    assert history[-1]["test_rmse"] < 1.12 * floor < baseline
    assert isinstance(model.user_factors.weight.grad, RowSparseGrad)


def test_mf_with_sparse_sgd_learns():
    data = synthetic(50_000, seed=2)
    train, test = train_test_split(data, shuffled=True)
    pn.manual_seed(0)
    model = MatrixFactorization(data.n_users, data.n_items, 8, l2=0.03)
    before = evaluate(model, test)
    fit(model, pn.optim.SGD(model.parameters(), lr=0.5), train, test, epochs=5, batch_size=4096)
    assert evaluate(model, test) < before - 0.05


def test_ncf_learns_and_its_embeddings_get_sparse_gradients():
    data = synthetic(50_000, seed=2)
    train, test = train_test_split(data, shuffled=True)
    pn.manual_seed(0)
    model = NCF(data.n_users, data.n_items, 8, hidden=(16, 8))
    before = evaluate(model, test)
    fit(model, pn.optim.Adam(model.parameters(), lr=0.01), train, test, epochs=3, batch_size=4096)
    assert evaluate(model, test) < before - 0.1
    assert isinstance(model.user_embedding.weight.grad, RowSparseGrad)
    assert not isinstance(model.out.weight.grad, RowSparseGrad)


def test_models_reject_bad_sizes():
    with pytest.raises(ValueError, match="factors"):
        MatrixFactorization(10, 10, 0)
    with pytest.raises(ValueError, match="hidden"):
        NCF(10, 10, 4, hidden=())


# ---- CLI ---------------------------------------------------------------------------------------------

def test_cli_trains_on_a_ratings_file_and_prints_rmse(tmp_path):
    rng = np.random.default_rng(0)
    lines = [f"{u}::{i}::{rng.integers(1, 6)}::0" for u, i in zip(rng.integers(0, 50, 3000), rng.integers(0, 40, 3000))]
    path = write(tmp_path, "ratings.dat", "\n".join(lines) + "\n")
    out = subprocess.run([sys.executable, "-m", "pyneural", "recsys", "--ratings", str(path), "--epochs", "2",
                          "--batch-size", "512", "--json", str(tmp_path / "r.json")],
                         capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "test RMSE" in out.stdout and "s/epoch" in out.stdout and "train RMSE" in out.stdout
    summary = json.loads((tmp_path / "r.json").read_text())["summary"]
    assert 0 < summary["test_rmse"] < 3


def test_cli_reports_a_malformed_file(tmp_path):
    path = write(tmp_path, "u.data", "1\t2\t3\t4\n1\t2\n")
    out = subprocess.run([sys.executable, "-m", "pyneural", "recsys", "--ratings", str(path)],
                         capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path, timeout=60)
    assert out.returncode == 1 and f"{path}:2:" in out.stderr


# ---- distributed -------------------------------------------------------------------------------------

@pytest.mark.mpi
def test_sparse_sync_keeps_two_ranks_identical_and_averages_gradients(tmp_path):
    pytest.importorskip("mpi4py", reason="mpi4py is not installed")
    from pyneural.distributed.launch import find_mpirun, launcher_flags
    launcher = find_mpirun()
    if launcher is None:
        pytest.skip("no mpirun/mpiexec found")
    cmd = [launcher] + launcher_flags(launcher) + ["-np", "2", sys.executable,
                                                    os.path.join(SCRIPTS, "recsys_sparse_sync.py")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(OMP_NUM_THREADS="1"),
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, r in result.items():
        assert r["identical"] and r["grads_match"], (name, r)
        assert r["after"] < r["before"] and r["rows_moved"] > 0
    assert result["mf"]["sparse_params"] == 4 and result["ncf"]["sparse_params"] == 2


def test_noise_floor_is_the_expected_stored_rating():
    from pyneural.recsys.data import expected_rating_table
    grid, expected = expected_rating_table(0.6)
    rng = np.random.default_rng(0)
    for score in (0.2, 1.1, 3.5, 4.8, 5.6):
        r = np.clip(np.rint(2 * (score + 0.6 * rng.standard_normal(400_000))) / 2, 0.5, 5.0)
        assert abs(np.interp(score, grid, expected) - r.mean()) < 3e-3, score
    d = synthetic(100_000, seed=1)
    assert d.noise_floor() < float(np.sqrt(np.mean((np.clip(d.truth, 1.0, 4.5) - d.ratings) ** 2)))


def test_mf_prior_regularizes_rows_by_their_counts():
    data = synthetic(150_000, seed=0)
    train, test = train_test_split(data, shuffled=True)
    pn.manual_seed(0)
    model = MatrixFactorization(data.n_users, data.n_items, 8, prior=2.0)
    history = fit(model, pn.optim.Adam(model.parameters(), lr=0.02), train, test, epochs=10, batch_size=8192)
    assert history[-1]["test_rmse"] < 1.1 * test.noise_floor()
    assert history[-1]["lr"] < 0.02 * 0.05  # cosine-annealed
    with pytest.raises(RuntimeError, match="set_counts"):
        m = MatrixFactorization(10, 10, 2, prior=1.0)
        m(np.array([1]), np.array([2])).sum().backward()
        m.regularize()
