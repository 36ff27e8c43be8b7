"""pyneural.distributed: the pieces that need no MPI run in this process; everything else runs
as real ``mpirun -np 2`` jobs (helper scripts in tests/mpi/), each under a hard subprocess
timeout, marked ``mpi`` and skipped when mpi4py or mpirun is missing. Jobs that succeed are
shared: one 2-rank job trains in every DDP mode and one runs the corner cases, and the tests
read their part of its JSON (each start-up costs about a second on two cores). The real command
line runs through tests/mpi/cli_train.py; the GPU paths run with CuPy faked (tests/mpi/fake_cupy.py).

Every job runs with OMP_NUM_THREADS=1 in every process: bitwise comparisons between processes
(ranks against each other, ranks against a single-process replay) are only meaningful when each
kernel runs with the same number of threads everywhere.
"""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import subprocess_env

from pyneural.data import DataLoader, TensorDataset
from pyneural.distributed import DistributedDataParallel, DistributedSampler, Timeline
from pyneural.distributed.bucket import GradReducer
from pyneural.distributed.compress import _sum_bf16, decode_bf16, encode_bf16
from pyneural.distributed.ddp import _interval_union
from pyneural.distributed.launch import find_mpirun, launcher_flags
from pyneural.distributed.sync import first_mismatch
from pyneural.distributed import ddp as ddp_module
from pyneural.distributed import init as dist_init
from pyneural.distributed.threads import get_threads, set_threads, threads_per_rank
from pyneural.distributed.transport import DeviceDirectWire, HostWire, StagedWire, make_wire
from pyneural.distributed.watchdog import FROZEN_SLACK_S, Peer, Watchdog, _ranks_text, _Watch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(REPO, "tests", "mpi")


# ---- DistributedSampler --------------------------------------------------------------------

@pytest.mark.parametrize("n,replicas", [(10, 1), (10, 2), (11, 2), (11, 3), (7, 5), (3, 4)])
def test_sampler_shards_are_disjoint_and_cover_the_epoch(n, replicas):
    shards = [DistributedSampler(n, replicas, r, seed=3).order(0) for r in range(replicas)]
    sizes = {len(s) for s in shards}
    assert sizes == {-(-n // replicas)}, "every rank must run the same number of samples"
    everything = np.concatenate(shards)
    assert set(everything.tolist()) == set(range(n))
    padding = len(everything) - n
    assert 0 <= padding < replicas
    first = DistributedSampler(n, replicas, 0, seed=3).global_order(0)[:padding]
    counts = np.bincount(everything, minlength=n)
    assert set(np.flatnonzero(counts == 2).tolist()) == set(first.tolist()) and counts.max() <= 2


@pytest.mark.parametrize("n,replicas", [(11, 2), (11, 3), (12, 5)])
def test_sampler_drop_last_drops_the_tail_consistently(n, replicas):
    shards = [DistributedSampler(n, replicas, r, seed=1, drop_last=True).order(2) for r in range(replicas)]
    assert {len(s) for s in shards} == {n // replicas}
    everything = np.concatenate(shards)
    assert len(set(everything.tolist())) == len(everything) == (n // replicas) * replicas


def test_sampler_reshuffles_per_epoch_from_the_shared_seed():
    a = [DistributedSampler(100, 2, r, seed=5) for r in range(2)]
    b = [DistributedSampler(100, 2, r, seed=5) for r in range(2)]
    assert all(np.array_equal(x.order(e), y.order(e)) for x, y in zip(a, b) for e in range(3))
    assert not np.array_equal(a[0].order(0), a[0].order(1))
    assert not np.array_equal(a[0].order(0), DistributedSampler(100, 2, 0, seed=6).order(0))
    sampler = a[1]
    sampler.set_epoch(4)
    assert list(sampler) == sampler.order(4).tolist()


def test_sampler_with_one_replica_matches_the_dataloaders_own_shuffle():
    data = TensorDataset(np.arange(37, dtype=np.float32))
    loader = DataLoader(data, batch_size=4, shuffle=True, seed=9, prefetch=0)
    sampler = DistributedSampler(37, 1, 0, seed=9)
    for epoch in range(3):
        assert np.array_equal(sampler.order(epoch), loader.order(epoch))


@pytest.mark.parametrize("replicas", [2, 3])
def test_sampler_step_k_of_all_ranks_is_step_k_of_one_process_with_the_global_batch(replicas):
    n, batch = 240, 8
    global_order = DataLoader(TensorDataset(np.zeros(n)), batch_size=batch * replicas, shuffle=True,
                              seed=4, prefetch=0).order(1)
    shards = [DistributedSampler(n, replicas, r, seed=4).order(1) for r in range(replicas)]
    for step in range(n // (batch * replicas)):
        union = np.concatenate([s[step * batch:(step + 1) * batch] for s in shards])
        expected = global_order[step * batch * replicas:(step + 1) * batch * replicas]
        assert np.array_equal(np.sort(union), np.sort(expected))


@pytest.mark.parametrize("n,replicas,batch", [(1437, 2, 32), (1437, 3, 50), (11, 3, 2), (3, 4, 1), (10, 5, 4)])
def test_weighted_rank_losses_average_to_the_single_process_mean_of_each_step(n, replicas, batch, rng):
    per_sample = rng.standard_normal(n)
    samplers = [DistributedSampler(n, replicas, r, seed=2) for r in range(replicas)]
    global_order = samplers[0].global_order(0)[:n]
    steps = -(-len(samplers[0]) // batch)
    assert steps == -(-n // (batch * replicas)), "same number of steps as one process with the global batch"
    for step in range(steps):
        rank_terms = []
        for s in samplers:
            mine = s.order(0)[step * batch:(step + 1) * batch]
            real, weight = s.step_loss_weight(step, batch)
            assert real <= len(mine)
            rank_terms.append(weight * per_sample[mine[:real]].mean() if real else 0.0)
        single = per_sample[global_order[step * batch * replicas:(step + 1) * batch * replicas]].mean()
        assert np.mean(rank_terms) == pytest.approx(single, rel=1e-12)


def test_only_the_last_step_can_need_weights():
    sampler = DistributedSampler(1437, 2, 1, seed=0)
    weights = [sampler.step_loss_weight(k, 32) for k in range(23)]
    assert weights[:22] == [(32, 1.0)] * 22
    assert weights[22] == (14, 2 * 14 / 29)


def test_sampler_plugs_into_the_dataloader():
    data = TensorDataset(np.arange(20, dtype=np.float32))
    sampler = DistributedSampler(data, 2, 1, seed=0)
    loader = DataLoader(data, batch_size=3, sampler=sampler, prefetch=0)
    seen = np.concatenate([x.data for (x,) in loader])
    assert np.array_equal(seen, sampler.order(0).astype(np.float32))
    assert len(loader) == 4


def test_sampler_rejects_rank_out_of_range():
    with pytest.raises(ValueError, match=r"rank must be an int in \[0, 2\), got 2"):
        DistributedSampler(10, 2, 2)


def test_sampler_rejects_zero_replicas():
    with pytest.raises(ValueError, match="num_replicas must be an int >= 1, got 0"):
        DistributedSampler(10, 0, 0)


def test_sampler_rejects_an_empty_dataset():
    with pytest.raises(ValueError, match="empty"):
        DistributedSampler(0, 2, 0)


def test_sampler_rejects_drop_last_that_leaves_ranks_empty():
    with pytest.raises(ValueError, match="drop_last with 2 samples and 3 ranks"):
        DistributedSampler(2, 3, 0, drop_last=True)


# ---- bf16 wire compression -----------------------------------------------------------------

def _bf16_reference(x):
    """Round-to-nearest-even to bfloat16 via PyTorch, as float32."""
    torch = pytest.importorskip("torch")
    return torch.from_numpy(x).to(torch.bfloat16).to(torch.float32).numpy()


def test_bf16_round_trip_matches_round_to_nearest_even(rng):
    x = (rng.standard_normal(100_003) * np.exp(rng.uniform(-30, 30, 100_003))).astype(np.float32)
    packed = np.full(x.size, 0xFFFF, dtype=np.uint16)
    out = np.full(x.size, np.nan, dtype=np.float32)
    decode_bf16(encode_bf16(x, packed), out)
    assert np.array_equal(out, _bf16_reference(x))


def test_bf16_ties_round_to_even_and_specials_survive():
    bits = np.array([0x3F808000, 0x3F818000, 0x7F7FFFFF, 0x7F800000, 0xFF800000, 0x7FC00001, 0x7FFFFFFF,
                     0x00000001, 0x80000000], dtype=np.uint32)
    x = bits.view(np.float32)
    packed = encode_bf16(x, np.empty(x.size, dtype=np.uint16))
    assert packed[0] == 0x3F80 and packed[1] == 0x3F82, "ties go to the even mantissa"
    assert packed[2] == 0x7F80, "the largest float32 rounds up to infinity"
    assert packed[3] == 0x7F80 and packed[4] == 0xFF80
    out = decode_bf16(packed, np.empty(x.size, dtype=np.float32))
    assert np.isnan(out[5]) and np.isnan(out[6]), "NaN must not round into infinity"
    assert out[7] == 0.0 and packed[8] == 0x8000


def test_bf16_sum_op_adds_in_float32_and_rounds_once(rng):
    a = rng.standard_normal(1001).astype(np.float32)
    b = rng.standard_normal(1001).astype(np.float32)
    pa = encode_bf16(a, np.empty(a.size, dtype=np.uint16))
    pb = encode_bf16(b, np.empty(b.size, dtype=np.uint16))
    _sum_bf16(pa, pb, None)
    expected = _bf16_reference(_bf16_reference(a) + _bf16_reference(b))
    assert np.array_equal(decode_bf16(pb, np.empty(b.size, dtype=np.float32)), expected)


# ---- model consistency messages ------------------------------------------------------------

def _sig(*entries):
    return [list(e) for e in entries]


def test_mismatch_names_the_parameter_whose_shape_differs():
    a = _sig(("parameter", "fc.weight", [10, 64], "float32"), ("parameter", "fc.bias", [10], "float32"))
    b = _sig(("parameter", "fc.weight", [10, 32], "float32"), ("parameter", "fc.bias", [10], "float32"))
    msg = first_mismatch(a, b, 1)
    assert "'fc.weight' differs in shape: (10, 64) float32 on rank 0, (10, 32) float32 on rank 1" in msg


def test_mismatch_names_the_parameter_whose_dtype_differs():
    a = _sig(("parameter", "w", [3], "float32"))
    b = _sig(("parameter", "w", [3], "float64"))
    assert "'w' differs in dtype: (3,) float32 on rank 0, (3,) float64 on rank 2" in first_mismatch(a, b, 2)


def test_mismatch_names_differently_named_entries():
    a = _sig(("parameter", "conv1.weight", [4], "float32"))
    b = _sig(("parameter", "conv2.weight", [4], "float32"))
    assert "entry 0 of the model is parameter 'conv1.weight'" in first_mismatch(a, b, 1)
    assert "parameter 'conv2.weight' (4,) float32 on rank 1" in first_mismatch(a, b, 1)


def test_mismatch_names_the_first_extra_entry():
    a = _sig(("parameter", "w", [3], "float32"), ("buffer", "running_mean", [3], "float32"))
    b = _sig(("parameter", "w", [3], "float32"))
    msg = first_mismatch(a, b, 1)
    assert "rank 0 has 2 parameters and buffers, rank 1 has 1" in msg and "buffer 'running_mean'" in msg


def test_identical_signatures_have_no_mismatch():
    a = _sig(("parameter", "w", [3], "float32"))
    assert first_mismatch(a, [list(e) for e in a], 1) is None


def test_missing_ranks_are_listed_as_ranges():
    assert _ranks_text([1]) == "1"
    assert _ranks_text([1, 2, 3, 7, 9, 10]) == "1-3, 7, 9-10"


def test_reports_name_ranks_with_pid_and_host_then_ranges_past_a_few():
    peers = [Peer(world_rank=10 + r, pid=100 + r, host=f"node{r // 4}") for r in range(40)]
    who = lambda ranks: Watchdog._who(SimpleNamespace(peers=peers), ranks)  # noqa: E731
    assert who([1, 5]) == "11 (pid 101 on node0), 15 (pid 105 on node1)"
    assert who(list(range(9))) == "10-18 on node0, node1, node2"
    assert who(list(range(40))) == "10-49 on " + ", ".join(f"node{i}" for i in range(8)) + " and 2 more hosts"


def test_time_this_process_spent_frozen_does_not_count_against_its_deadline():
    watch = _Watch([(None, 1, "x")], deadline=time.monotonic() + 10)
    deadline, started = watch.deadline, watch.started
    watch.tick(watch.last_tick + 0.5 + FROZEN_SLACK_S * 0.9, due=0.5)  # late, but only by scheduling noise
    assert watch.deadline == deadline and watch.started == started
    watch.tick(watch.last_tick + 0.5 + 30.0, due=0.5)  # SIGSTOP'ed for 30 s
    assert watch.deadline == pytest.approx(deadline + 30.0) and watch.started == pytest.approx(started + 30.0)


# ---- bucket planning -----------------------------------------------------------------------

WORLD_OF_ONE = SimpleNamespace(rank=0, size=1)


def test_buckets_follow_reverse_parameter_order_within_the_cap():
    params = [(f"p{i}", np.zeros(n, dtype=np.float32)) for i, n in enumerate([100, 300, 50, 400, 10])]
    reducer = GradReducer(WORLD_OF_ONE, params, cap_bytes=1800)
    layout = [[s.name for s in b.slots] for b in reducer.buckets]
    assert layout == [["p4", "p3"], ["p2", "p1", "p0"]]
    for bucket in reducer.buckets:
        assert bucket.nbytes <= 1800
        offsets = [s.offset for s in bucket.slots]
        assert offsets == list(np.cumsum([0] + [s.size for s in bucket.slots[:-1]]))


def test_a_parameter_larger_than_the_cap_gets_its_own_bucket():
    params = [("small", np.zeros(4, dtype=np.float32)), ("huge", np.zeros(1000, dtype=np.float32)),
              ("tail", np.zeros(4, dtype=np.float32))]
    reducer = GradReducer(WORLD_OF_ONE, params, cap_bytes=64)
    assert [[s.name for s in b.slots] for b in reducer.buckets] == [["tail"], ["huge"], ["small"]]


def test_dtypes_never_share_a_bucket():
    params = [("a", np.zeros(4, dtype=np.float32)), ("b", np.zeros(4, dtype=np.float64)),
              ("c", np.zeros(4, dtype=np.float32))]
    reducer = GradReducer(WORLD_OF_ONE, params, cap_bytes=2**20)
    assert sorted((str(b.dtype), [s.name for s in b.slots]) for b in reducer.buckets) == \
        [("float32", ["c", "a"]), ("float64", ["b"])]


def test_bf16_compression_refuses_float64_gradients():
    with pytest.raises(TypeError, match=r"bf16 compression needs float32 gradients, got w \(float64\)"):
        GradReducer(WORLD_OF_ONE, [("w", np.zeros(3))], cap_bytes=100, compress="bf16")


def test_reducer_rejects_unknown_compression():
    with pytest.raises(ValueError, match="compress must be None or 'bf16', got 'fp8'"):
        GradReducer(WORLD_OF_ONE, [("w", np.zeros(3, dtype=np.float32))], cap_bytes=100, compress="fp8")


def test_ddp_rejects_a_bad_bucket_cap():
    with pytest.raises(ValueError, match="bucket_cap_mb must be a number > 0, got 0"):
        DistributedDataParallel(object(), bucket_cap_mb=0)


def test_ddp_rejects_unknown_compression():
    with pytest.raises(ValueError, match="compress must be None or 'bf16', got 'int8'"):
        DistributedDataParallel(object(), compress="int8")


def test_ddp_rejects_something_that_is_not_a_module():
    with pytest.raises(TypeError, match="module must have named_parameters"):
        DistributedDataParallel(object())


# ---- timeline and summary arithmetic ---------------------------------------------------------

def test_interval_union_counts_overlap_once():
    assert _interval_union([(0, 2), (1, 3), (5, 6), (5.5, 5.7)]) == pytest.approx(4.0)
    assert _interval_union([]) == 0.0


def test_timeline_writes_chrome_trace_events(tmp_path):
    tl = Timeline(world=None)
    tl.start()
    with tl.span("forward"):
        time.sleep(0.001)
    tl.record("allreduce bucket 0", tl.origin + 0.002, tl.origin + 0.005, lane=1, args={"wire_bytes": 8})
    path = tmp_path / "trace.json"
    tl.write(str(path), summary={"hidden_fraction": 0.5})
    trace = json.loads(path.read_text())
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert [e["name"] for e in spans] == ["forward", "allreduce bucket 0"]
    assert spans[1]["ts"] == pytest.approx(2000, abs=1) and spans[1]["dur"] == pytest.approx(3000, abs=1)
    assert spans[0]["dur"] >= 1000 and spans[1]["tid"] == 1 and spans[1]["args"] == {"wire_bytes": 8}
    assert trace["otherData"] == {"hidden_fraction": 0.5}


def test_disabled_timeline_records_nothing():
    tl = Timeline(world=None, enabled=False)
    with tl.span("forward"):
        pass
    tl.record("x", 0.0, 1.0)
    assert tl.events == []


# ---- threads per rank, device transport (CuPy faked) --------------------------------------------

@pytest.mark.parametrize("cores,local_size,expected", [((2, 2), 2, 1), ((2, 2), 1, 2), ((16, 16), 4, 4),
                                                       ((16, 16), 3, 5), ((4, 4), 8, 1), ((4, 16), 4, 4),
                                                       ((1, 16), 2, 1)])
def test_threads_per_rank_divides_the_cores_unless_the_launcher_bound_the_rank(cores, local_size, expected):
    assert threads_per_rank(local_size, cores=cores) == expected


def test_set_threads_reaches_the_openmp_runtime():
    before = get_threads()
    if before is None:
        pytest.skip("no OpenMP runtime found in this process")
    try:
        assert set_threads(1) is not None and get_threads() == 1
        set_threads(3)
        assert get_threads() == 3
    finally:
        set_threads(before)


@pytest.fixture
def fake_cupy():
    sys.path.insert(0, SCRIPTS)
    try:
        import fake_cupy
    finally:
        sys.path.remove(SCRIPTS)
    with fake_cupy.installed() as cupy:
        yield cupy, fake_cupy.COUNTS


def test_host_arrays_are_their_own_wire():
    flat = np.arange(5, dtype=np.float32)
    wire = make_wire(flat, device_direct=True)
    assert isinstance(wire, HostWire) and wire.to_wire() is flat


def test_device_arrays_are_staged_through_pinned_host_memory(fake_cupy):
    cupy, counts = fake_cupy
    flat = cupy.full(7, 2.0)
    wire = make_wire(flat, device_direct=False)
    assert isinstance(wire, StagedWire)
    host = wire.to_wire()
    assert type(host) is np.ndarray and np.all(host == 2.0)
    host += 1
    wire.from_wire()
    assert np.all(cupy.asnumpy(flat) == 3.0)
    assert counts["pinned_allocations"] == 1 and counts["device_to_host"] == counts["host_to_device"] == 1


def test_cuda_aware_wire_synchronises_the_stream_and_copies_nothing(fake_cupy):
    cupy, counts = fake_cupy
    flat = cupy.full(7, 2.0)
    wire = make_wire(flat, device_direct=True)
    assert isinstance(wire, DeviceDirectWire) and wire.to_wire() is flat
    assert counts["synchronize"] == 1 and counts["device_to_host"] == 0


def test_device_direct_follows_the_library_unless_disabled(fake_cupy, monkeypatch):
    cupy, _ = fake_cupy
    device, host = [SimpleNamespace(data=cupy.full(3, 1.0))], [SimpleNamespace(data=np.ones(3))]
    monkeypatch.setattr(ddp_module, "cuda_aware", lambda: (True, "fake"))
    assert ddp_module._device_direct_default(device) is True
    assert ddp_module._device_direct_default(host) is False, "host gradients never go 'direct'"
    monkeypatch.setenv("PYNEURAL_MPI_CUDA_AWARE", "0")
    assert ddp_module._device_direct_default(device) is False
    monkeypatch.delenv("PYNEURAL_MPI_CUDA_AWARE")
    for answer in (False, None):
        monkeypatch.setattr(ddp_module, "cuda_aware", lambda answer=answer: (answer, "fake"))
        assert ddp_module._device_direct_default(device) is False


def test_device_gradients_get_device_buckets(fake_cupy):
    cupy, _ = fake_cupy
    params = [("w", cupy.full(10, 1.0)), ("b", cupy.full(3, 1.0))]
    reducer = GradReducer(WORLD_OF_ONE, params, cap_bytes=2**20)
    (bucket,) = reducer.buckets
    assert type(bucket.data) is cupy.ndarray and isinstance(bucket.wire, StagedWire)
    bf16 = GradReducer(WORLD_OF_ONE, params, cap_bytes=2**20, compress="bf16", device_direct=True).buckets[0]
    assert isinstance(bf16.wire, StagedWire), "the bf16 sum is a host-only MPI op: always staged"


def test_init_rejects_a_bad_thread_count():
    with pytest.raises(ValueError, match="threads must be an int >= 1 or None, got 0"):
        dist_init(threads=0)


# ---- real MPI jobs --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mpirun():
    """The launcher argv prefix (its flags included); skips without mpi4py or a launcher."""
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install 'pyneural[mpi]')")
    launcher = find_mpirun()
    if launcher is None:
        pytest.skip("no mpirun/mpiexec found")
    return [launcher] + launcher_flags(launcher)


def run_job(mpirun, args, np_=2, timeout=60):
    """Run ``python ARGS`` on ``np_`` ranks (None: one process, no launcher); kill the whole job
    if it outlives ``timeout``."""
    env = subprocess_env(OMP_NUM_THREADS="1")
    launcher = [] if np_ is None else mpirun + ["-np", str(np_)]
    cmd = launcher + [sys.executable] + list(args)
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=os.path.expanduser("~"),
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"mpirun job did not finish within {timeout} s: {' '.join(cmd)}\n{out[-2000:]}\n{err[-4000:]}")
    return SimpleNamespace(rc=proc.returncode, out=out, err=err, seconds=time.monotonic() - start,
                           cmd=" ".join(cmd))


def job_result(job):
    assert job.rc == 0, f"{job.cmd} failed with {job.rc}:\n{job.out[-2000:]}\n{job.err[-4000:]}"
    return json.loads(job.out.strip().splitlines()[-1])


def is_open_mpi(mpirun):
    return "--oversubscribe" in mpirun  # launcher_flags adds it for Open MPI only


# Open MPI's TCP transport, as between machines: ob1 with the tcp BTL only ("self" is a rank
# talking to itself), so neither shared memory nor UCX can carry the job.
TRANSPORTS = {"sm": [], "tcp": ["--mca", "pml", "ob1", "--mca", "btl", "tcp,self"]}


@pytest.fixture(scope="module", params=sorted(TRANSPORTS))
def two_rank_training(request, mpirun, tmp_path_factory):
    """One 2-rank job per transport trains in every DDP mode (one start-up for all); results by
    mode."""
    if request.param != "sm" and not is_open_mpi(mpirun):
        pytest.skip(f"forcing the {request.param} transport needs Open MPI's --mca flags")
    trace_path = tmp_path_factory.mktemp("trace") / "trace.json"
    modes = "allreduce,no_sync,bf16,deterministic"
    result = job_result(run_job(mpirun + TRANSPORTS[request.param], [os.path.join(SCRIPTS, "ddp_train.py"),
                                                                     "--modes", modes, "--trace", str(trace_path)],
                                timeout=90))
    result["trace"] = json.loads(trace_path.read_text())
    return result


@pytest.mark.mpi
def test_two_ranks_match_one_process_with_the_global_batch_and_write_a_trace(two_rank_training):
    result = two_rank_training["allreduce"]
    assert result["ranks_bitwise_identical"]
    assert result["rel_err_vs_reference"] < 1e-5
    assert result["buckets"] > 1, "the test must exercise several buckets"
    trace = two_rank_training["trace"]
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert {e["pid"] for e in spans} == {0, 1}
    names = {e["name"] for e in spans}
    for expected in ("data wait", "forward", "backward", "grad sync wait", "optimizer step", "allreduce bucket 0"):
        assert expected in names
    assert 0.0 <= trace["otherData"]["hidden_fraction"] <= 1.0 and trace["otherData"]["steps"] == 12


@pytest.mark.mpi
def test_no_sync_accumulation_matches_one_process_with_the_whole_batch(two_rank_training):
    result = two_rank_training["no_sync"]
    assert result["ranks_bitwise_identical"]
    assert result["rel_err_vs_reference"] < 1e-5


@pytest.mark.mpi
def test_bf16_compression_halves_the_wire_and_stays_close(two_rank_training):
    result = two_rank_training["bf16"]
    assert result["ranks_bitwise_identical"]
    assert result["wire_bytes_per_step"] * 2 == result["param_bytes"]
    assert 0 < result["rel_err_vs_reference"] < 1e-2


@pytest.mark.mpi
def test_deterministic_mode_is_bitwise_one_process_accumulating_the_micro_batches(two_rank_training):
    result = two_rank_training["deterministic"]
    assert result["ranks_bitwise_identical"]
    assert result["bitwise_equal_reference"], f"rel. error {result['rel_err_vs_reference']:.2e}"


@pytest.mark.mpi
def test_deterministic_mode_on_three_ranks_sums_in_rank_order(mpirun):
    # Three ranks: the order of the sum matters (a + b + c), and no MPI algorithm is trivially ordered.
    job = run_job(mpirun, [os.path.join(SCRIPTS, "ddp_train.py"), "--modes", "deterministic", "--steps", "6",
                                    "--model", "mlp"], np_=3)
    result = job_result(job)["deterministic"]
    assert result["ranks_bitwise_identical"]
    assert result["bitwise_equal_reference"], f"rel. error {result['rel_err_vs_reference']:.2e}"


# ---- the real command line -----------------------------------------------------------------

CLI_TRAIN = ["train", "--model", "mlp", "--epochs", "1", "--seed", "3", "--no-progress"]


def cli_params(tmp_path, name, mpirun, cli_args, ranks):
    """Run the CLI (through tests/mpi/cli_train.py, which saves the parameters) on ``ranks``
    processes (1: no mpirun); returns (job, [parameters of each rank])."""
    prefix = str(tmp_path / name)
    args = [os.path.join(SCRIPTS, "cli_train.py"), prefix] + CLI_TRAIN + cli_args
    if ranks == 1:
        job = run_job([], args, np_=None)
    else:
        job = run_job(mpirun, args, np_=ranks)
    assert job.rc == 0, f"{job.cmd} failed with {job.rc}:\n{job.out[-2000:]}\n{job.err[-4000:]}"
    return job, [np.load(f"{prefix}.rank{r}.npy") for r in range(ranks)]


def rel_to(a, ref):
    return float(np.linalg.norm(a.astype(np.float64) - ref) / np.linalg.norm(ref))


@pytest.mark.mpi
def test_cli_distributed_training_matches_one_process_with_the_global_batch(mpirun, tmp_path):
    # 1437 digits on 2 ranks of batch 16: the epoch ends in a padded step split 15/14, which
    # only the loss weighting turns back into the single-process step over 29 samples.
    _, (single,) = cli_params(tmp_path, "single", mpirun, ["--batch-size", "32"], ranks=1)
    trace = tmp_path / "cli_trace.json"
    job, ranks = cli_params(tmp_path, "ddp", mpirun, ["--batch-size", "16", "--distributed",
                                                      "--bucket-cap-mb", "0.05", "--trace", str(trace)], ranks=2)
    assert np.array_equal(ranks[0], ranks[1]), "parameters must be bitwise identical on all ranks"
    assert rel_to(ranks[0], single) < 1e-5
    assert job.out.count("training mlp on digits") == 1, "only rank 0 prints"
    assert "on 2 ranks (global batch 32)" in job.out and "not hidden behind backward" in job.out
    spans = [e for e in json.loads(trace.read_text())["traceEvents"] if e["ph"] == "X"]
    assert {e["pid"] for e in spans} == {0, 1} and any(e["name"] == "allreduce bucket 3" for e in spans)

    job, ranks = cli_params(tmp_path, "det", mpirun, ["--batch-size", "16", "--distributed", "--deterministic"],
                            ranks=2)
    assert np.array_equal(ranks[0], ranks[1])
    assert rel_to(ranks[0], single) < 1e-5


@pytest.mark.mpi
def test_cli_doctor_in_one_process_and_on_two_ranks(mpirun):
    alone = run_job([], ["-m", "pyneural", "doctor"], np_=None)
    assert alone.rc == 0, alone.err[-4000:]
    assert "1 rank(s) on 1 host(s)" in alone.out and "FAIL" not in alone.out
    job = run_job(mpirun, ["-m", "pyneural", "doctor"])
    assert job.rc == 0, job.err[-4000:]
    assert "2 rank(s) on 1 host(s)" in job.out and job.out.count("MPI library:") == 1, "only rank 0 prints"
    assert job.out.count("PASS") >= 4 and "FAIL" not in job.out
    assert "CUDA-aware:" in job.out and "threads:" in job.out


# ---- jobs that go wrong on purpose, and corner cases -------------------------------------------

def edge_case_job(mpirun, mode, *extra, timeout=45):
    return run_job(mpirun, [os.path.join(SCRIPTS, "ddp_edge_cases.py"), "--mode", mode, *extra], timeout=timeout)


@pytest.fixture(scope="module")
def corner_cases(mpirun):
    return job_result(edge_case_job(mpirun, "ok"))


@pytest.mark.mpi
def test_shape_mismatch_fails_naming_the_first_differing_parameter(mpirun):
    job = edge_case_job(mpirun, "mismatch")
    assert job.rc != 0
    assert "parameter '1.weight' differs in shape: (64, 64) float32 on rank 0, (32, 64) float32 on rank 1" in job.err


@pytest.mark.mpi
@pytest.mark.parametrize("thread_level", ["multiple", "funneled"])
def test_a_rank_that_stops_participating_aborts_the_job_naming_bucket_and_rank(mpirun, thread_level):
    job = edge_case_job(mpirun, "hang", "--thread-level", thread_level)
    assert job.rc != 0
    assert "timeout: allreduce of gradient bucket 0 (step 3;" in job.err
    assert "did not complete within 2 s" in job.err
    assert re.search(r"ranks that had not arrived: 1 \(pid \d+ on \S+\)", job.err), job.err
    assert "not responding" not in job.err, "rank 1 sleeps: its watchdog thread answers the probes"
    if thread_level == "multiple":  # the liveness probes need a thread that may call MPI
        assert "running but elsewhere in the program (they answer liveness probes): 1" in job.err
    assert job.seconds < 30, "the watchdog must end the job soon after its 2 s timeout"


@pytest.mark.mpi
def test_an_exception_on_one_rank_aborts_every_rank(mpirun):
    job = edge_case_job(mpirun, "raise")
    ended = time.time()
    assert job.rc != 0
    assert re.search(r"\[rank 1\] uncaught exception on rank 1 \(pid \d+ on \S+\), aborting all ranks", job.err)
    assert "[rank 1] RuntimeError: deliberate failure on rank 1" in job.err
    assert "completed all steps" not in job.out
    raised = float(re.search(r"rank 1 raising at ([\d.]+)", job.out).group(1))
    assert ended - raised < 2 + SLACK_S, "the job must end right after the exception (its timeout is 2 s)"


class LiveJob:
    """An mpirun job whose output the test reads while it runs (to signal one of its ranks)."""

    def __init__(self, mpirun, args):
        cmd = mpirun + ["-np", "2", sys.executable] + list(args)
        self.cmd = " ".join(cmd)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=subprocess_env(OMP_NUM_THREADS="1"), cwd=os.path.expanduser("~"),
                                     start_new_session=True)
        self.out, self.err = [], []
        self._readers = [threading.Thread(target=lambda s=s, d=d: d.extend(s), daemon=True)
                         for s, d in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for reader in self._readers:
            reader.start()

    def wait_for_line(self, pattern, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            for line in list(self.out):
                match = re.match(pattern, line)
                if match:
                    return match
            time.sleep(0.05)
        self.kill()
        pytest.fail(f"no line matching {pattern!r} from {self.cmd}:\n{''.join(self.out)[-2000:]}\n"
                    f"{''.join(self.err)[-4000:]}")

    def finish(self, timeout):
        """Wait for the job's end; returns its exit code."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.cmd} did not end within {timeout} s:\n{''.join(self.err)[-4000:]}")
        self._close()
        return self.proc.returncode

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self._close()

    def _close(self):
        for reader in self._readers:
            reader.join(timeout=10)
        self.proc.stdout.close()
        self.proc.stderr.close()


SLACK_S = 8  # "the timeout plus a few seconds": the launcher's teardown on a busy 2-core machine


def signal_rank_1(mpirun, sig, timeout):
    """Train on 2 ranks, send ``sig`` to rank 1 mid-training; returns (exit code, stderr with its
    lines joined, rank 1's pid, seconds from the signal to the end of the job)."""
    job = LiveJob(mpirun, [os.path.join(SCRIPTS, "ddp_edge_cases.py"), "--mode", "victim",
                           "--timeout", str(timeout)])
    pid = int(job.wait_for_line(r"pid 1 (\d+)$").group(1))
    job.wait_for_line(r"rank 1 training$")
    try:
        sent = time.monotonic()
        os.kill(pid, sig)
        rc = job.finish(timeout=timeout + 60)
        seconds = time.monotonic() - sent
    finally:
        _kill_if_still_ours(pid)
    return rc, "".join(job.err), pid, seconds


def _kill_if_still_ours(pid):
    """A stopped rank the launcher failed to end would stay behind: end it, if it is still it."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"ddp_edge_cases.py" in f.read():
                os.kill(pid, signal.SIGKILL)
    except (FileNotFoundError, ProcessLookupError):
        pass


@pytest.mark.mpi
def test_a_stopped_rank_is_named_with_its_host_not_taken_for_a_stalled_transfer(mpirun):
    rc, err, pid, seconds = signal_rank_1(mpirun, signal.SIGSTOP, timeout=3)
    assert rc != 0
    assert "did not complete within 3 s on rank 0" in err, err
    assert re.search(rf"\[rank 0\] not responding: 1 \(pid {pid} on \S+\): sent nothing in the last", err), err
    assert "the transfer itself stalled" not in err, "a stopped rank is not a stalled transfer"
    assert "[rank 1] pyneural.distributed: timeout" not in err, "rank 1 was the one stopped: it blames no peer"
    assert seconds < 3 + SLACK_S, f"the job took {seconds:.1f} s to end after rank 1 stopped"


@pytest.mark.mpi
def test_a_killed_rank_ends_the_job_naming_it(mpirun):
    rc, err, pid, seconds = signal_rank_1(mpirun, signal.SIGKILL, timeout=3)
    assert rc != 0
    if is_open_mpi(mpirun):  # the launcher sees the exit before any watchdog could
        assert f"process rank 1 with PID {pid} on node" in " ".join(err.split()), err
        assert "signal 9 (Killed)" in " ".join(err.split())
    assert seconds < 3 + SLACK_S, f"the job took {seconds:.1f} s to end after rank 1 was killed"


@pytest.mark.mpi
def test_a_parameter_unused_on_one_rank_is_completed_by_finish_gradient_sync(corner_cases):
    assert corner_cases["unused"] == {"ranks_bitwise_identical": True, "extra_changed": True}


@pytest.mark.mpi
def test_forgetting_finish_gradient_sync_with_unused_parameters_raises(mpirun):
    job = edge_case_job(mpirun, "unused_no_finish")
    assert job.rc != 0
    assert "produced no gradient for extra.bias, extra.weight" in job.err


@pytest.mark.mpi
def test_buffers_follow_rank_0_so_the_whole_state_stays_identical(corner_cases):
    assert corner_cases["buffers"] == {"state_bitwise_identical": True, "buffers": 3}


@pytest.mark.mpi
@pytest.mark.parametrize("mode,staged", [("staged", True), ("direct", False), ("deterministic_staged", True),
                                         ("deterministic_direct", False), ("bf16_direct_requested", True)])
def test_device_gradients_reduce_staged_or_direct(corner_cases, mode, staged):
    # CuPy faked (tests/mpi/fake_cupy.py): staging copies each bucket to its pinned host buffer
    # and back once per step; the direct path synchronises the stream and copies nothing.
    r = corner_cases["fake_gpu"][mode]
    assert r["correct"]
    transfers = r["buckets"] * r["steps"]
    counts = r["counts"]
    if staged:
        assert counts == {"device_to_host": transfers, "host_to_device": transfers, "synchronize": 0,
                          "pinned_allocations": r["buckets"]}
    else:
        assert counts == {"device_to_host": 0, "host_to_device": 0, "synchronize": transfers,
                          "pinned_allocations": 0}


@pytest.mark.mpi
def test_doctor_falls_back_to_staging_when_cuda_aware_transfer_fails(corner_cases):
    works, broken = corner_cases["fake_gpu"]["doctor_cuda_aware"], corner_cases["fake_gpu"]["doctor_cuda_aware_broken"]
    assert works["path"] == "direct" and all(passed for _, passed, _ in works["tests"])
    assert broken["path"] == "staged"
    (direct, staged) = broken["tests"]
    assert direct[1] is None and "BufferError" in direct[2] and "falling back to host staging" in direct[2]
    assert staged[1] is True and "staged through pinned host memory" in staged[0]
