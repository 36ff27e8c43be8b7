"""Pipeline model parallelism and ZeRO-1 sharded optimizer state: real mpirun jobs against one
process training the same global batches (tests/mpi/pipeline_train.py, tests/mpi/zero_train.py).

Bitwise where the arithmetic is the same by construction (the pipeline's micro-batches accumulate
in order; deterministic mode sums replicas in rank order), 1e-5 relative against one full-batch
step otherwise (the summation order of the batch differs).
"""
import os

import numpy as np
import pytest

from test_distributed import job_result, mpirun, run_job  # noqa: F401  (the mpirun fixture)

from pyneural.distributed.pipeline import split_balanced

HERE = os.path.dirname(os.path.abspath(__file__))
PIPE = os.path.join(HERE, "mpi", "pipeline_train.py")
ZERO = os.path.join(HERE, "mpi", "zero_train.py")


def reference(script, *args):
    job = run_job(None, [script, "--reference", *args], np_=None, timeout=120)
    return job_result(job)


def close(a, b, rel=1e-5):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.all(np.abs(a - b) <= rel * np.maximum(np.abs(b), 1.0))


def test_split_balanced_minimises_the_largest_stage():
    assert split_balanced([1, 1, 1, 1], 2) == [2, 2]
    assert split_balanced([10, 1, 1, 1, 1, 10], 3) == [1, 4, 1]
    assert split_balanced([5, 1, 1, 1, 9], 2) == [4, 1]
    lengths = split_balanced([3, 1, 4, 1, 5, 9, 2, 6], 3)
    assert sum(lengths) == 8 and len(lengths) == 3 and min(lengths) >= 1
    with pytest.raises(ValueError, match="3 stages need at least 3 layers"):
        split_balanced([1, 2], 3)


@pytest.mark.mpi
def test_two_stage_pipeline_equals_one_process_accumulating_the_micro_batches(mpirun):
    got = job_result(run_job(mpirun, [PIPE, "--stages", "2", "--micro", "3"], np_=2, timeout=180))
    acc = reference(PIPE, "accumulate", "--micro", "3")
    assert got["losses"] == acc["losses"] and got["params"] == acc["params"]  # bitwise
    full = reference(PIPE, "full")
    assert close(got["losses"], full["losses"])
    assert all(close(got["params"][k], full["params"][k]) for k in full["params"])
    assert got["balance"] == [6, 3]  # the CNN's conv part, then its Linear layers (most parameters)
    assert 0.0 <= got["stats"]["bubble_fraction"] <= 1.0 and got["stats"]["ideal_bubble_fraction"] == 0.25


@pytest.mark.mpi
def test_pipeline_by_data_parallel_grid_is_bitwise_deterministic(mpirun):
    got = job_result(run_job(mpirun, [PIPE, "--stages", "2", "--micro", "3", "--deterministic"], np_=4,
                             timeout=240))
    acc = reference(PIPE, "accumulate", "--micro", "3", "--replicas", "2")
    assert got["losses"] == acc["losses"] and got["params"] == acc["params"]
    full = reference(PIPE, "full", "--replicas", "2")
    assert all(close(got["params"][k], full["params"][k]) for k in full["params"])


@pytest.mark.mpi
def test_four_stage_pipeline_matches_full_batch_training(mpirun):
    got = job_result(run_job(mpirun, [PIPE, "--stages", "4", "--micro", "4"], np_=4, timeout=240))
    full = reference(PIPE, "full")
    assert close(got["losses"], full["losses"]) and all(close(got["params"][k], full["params"][k])
                                                        for k in full["params"])
    assert len(got["balance"]) == 4


@pytest.mark.mpi
def test_a_stage_that_raises_aborts_the_pipeline(mpirun):
    job = run_job(mpirun, [PIPE, "--stages", "2", "--fail", "raise"], np_=2, timeout=120)
    assert job.rc != 0 and "planted failure in stage 1" in job.err


@pytest.mark.mpi
def test_a_stage_that_stalls_makes_its_neighbour_abort_naming_the_transfer(mpirun):
    job = run_job(mpirun, [PIPE, "--stages", "2", "--fail", "stall", "--timeout", "3"], np_=2, timeout=120)
    assert job.rc != 0
    assert "timeout: receive of the gradient of micro-batch 0 from pipeline stage 1 (rank 1)" in job.err, job.err
    assert "did not complete within 3 s" in job.err


@pytest.mark.mpi
def test_zero_deterministic_is_bitwise_and_its_checkpoint_resumes_in_one_process(mpirun, tmp_path):
    ckpt = str(tmp_path / "zero2.npz")
    got = job_result(run_job(mpirun, [ZERO, "--deterministic", "--save-at", "2", "--ckpt", ckpt], np_=2, timeout=180))
    ref = reference(ZERO, "--ranks", "2")
    assert got["losses"] == ref["losses"] and got["params"] == ref["params"]
    resumed = reference(ZERO, "--ranks", "2", "--load", ckpt, "--save-at", "2")  # plain AdamW from the shards
    assert resumed["losses"] == got["losses"][2:] and resumed["params"] == got["params"]


@pytest.mark.mpi
def test_zero_on_four_ranks_shards_the_state_and_resumes_a_two_rank_checkpoint(mpirun, tmp_path):
    from pyneural import models
    got = job_result(run_job(mpirun, [ZERO], np_=4, timeout=240))
    ref = reference(ZERO, "--ranks", "4")
    assert close(got["losses"], ref["losses"]) and close(got["params"], ref["params"])
    params = sum(p.data.size for p in models.mlp().parameters())
    unsharded = 2 * 4 * params  # AdamW: two float32 moments per parameter
    assert max(got["state_bytes"]) <= unsharded / 4 + 4 * 4 * 8  # 1/4 each, up to padding
    assert sum(got["state_bytes"]) >= unsharded

    ckpt = str(tmp_path / "zero2.npz")
    job_result(run_job(mpirun, [ZERO, "--save-at", "2", "--ckpt", ckpt], np_=2, timeout=180))
    four = job_result(run_job(mpirun, [ZERO, "--load", ckpt, "--save-at", "2"], np_=4, timeout=240))
    ref4 = reference(ZERO, "--ranks", "4", "--load", ckpt, "--save-at", "2")
    assert close(four["losses"], ref4["losses"]) and close(four["params"], ref4["params"])


@pytest.mark.mpi
def test_train_cli_runs_pipeline_stages_and_a_sharded_optimizer(mpirun, tmp_path):
    trace = str(tmp_path / "trace.json")
    job = run_job(mpirun, ["-m", "pyneural", "train", "--distributed", "--pipeline-stages", "2", "--epochs", "1",
                           "--no-progress", "--trace", trace], np_=2, timeout=240)
    assert job.rc == 0, job.err[-3000:]
    assert "2 pipeline stages x 1 replicas (global batch 32)" in job.out
    assert "pipeline stage 0:" in job.out and "pipeline stage 1:" in job.out and "final test accuracy" in job.out
    import json
    with open(trace) as f:
        names = {e["name"].split(" mb")[0] for e in json.load(f)["traceEvents"] if e.get("ph") == "X"}
    assert {"forward", "backward", "wait activations", "wait gradient"} <= names
    job = run_job(mpirun, ["-m", "pyneural", "train", "--distributed", "--shard-optimizer", "--optimizer", "adam",
                           "--model", "mlp", "--epochs", "1", "--no-progress"], np_=2, timeout=240)
    assert job.rc == 0, job.err[-3000:]
    assert "final test accuracy" in job.out
    job = run_job(None, ["-m", "pyneural", "train", "--pipeline-stages", "2"], np_=None, timeout=60)
    assert job.rc == 2 and "--pipeline-stages needs --distributed" in job.err
