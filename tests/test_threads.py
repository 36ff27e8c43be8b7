"""Running on a busy machine: the OpenMP wait policy pyneural sets before the runtime loads
(pyneural/_threads.py) and the kernels' team sizing (csrc/cpu/parallel_team.h). Logic only, no
timing: the policy is chosen before libgomp loads and gives way to the user's and to a runtime
loaded first; the team shrinks and probes as specified; and the kernels give the same bits whether a
full team, a shrunk team or an oversubscribed one (which makes threads steal each other's work) ran
them."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import assert_close_bound, poisoned, subprocess_env

from pyneural import _C, _threads
from pyneural.distributed.threads import get_threads, set_threads
from pyneural.kernels.gemm import gemm


# ---- the wait policy (pyneural/_threads.py) ----------------------------------------------------

def test_prepare_sets_the_policy_and_restore_removes_it():
    env = {"PATH": "/bin"}
    names = _threads.prepare(env, loaded=False)
    assert env["OMP_WAIT_POLICY"] == "passive"
    _threads.restore(names, env)
    assert env == {"PATH": "/bin"}


@pytest.mark.parametrize("setting", [("OMP_WAIT_POLICY", "active"), ("OMP_WAIT_POLICY", "passive"),
                                     ("GOMP_SPINCOUNT", "300000")])
def test_prepare_keeps_the_users_setting(setting):
    env = dict([setting])
    names = _threads.prepare(env, loaded=False)
    assert names == [] and env == dict([setting])
    assert f"{setting[0]}={setting[1]}" in _threads.describe()


def test_prepare_leaves_a_loaded_runtime_alone():
    env = {}
    assert _threads.prepare(env, loaded=True) == [] and env == {}
    assert "loaded before pyneural" in _threads.describe()


def test_runtime_loaded_reads_the_memory_map(tmp_path):
    maps = tmp_path / "maps"
    maps.write_text("7f00-7f01 r-xp 00000000 08:01 42    /usr/lib/x86_64-linux-gnu/libc.so.6\n")
    assert not _threads.runtime_loaded(str(maps))
    maps.write_text(maps.read_text() + "7f02-7f03 r-xp 00000000 08:01 43    /usr/lib/libgomp.so.1.0.0\n")
    assert _threads.runtime_loaded(str(maps))
    assert not _threads.runtime_loaded(str(tmp_path / "missing"))


_CHILD = """
import os, sys
{before}
import pyneural
from pyneural import _threads
print(_threads.describe())
print(os.environ.get("OMP_WAIT_POLICY", "-"))
print(pyneural._C.team_load_sampling())
"""


def _child(before="", **env_extra):
    env = subprocess_env(**env_extra)
    for name in _threads.USER_VARIABLES:
        if name not in env_extra:
            env.pop(name, None)
    done = subprocess.run([sys.executable, "-c", _CHILD.format(before=before)], env=env, capture_output=True,
                          text=True, timeout=120, cwd=os.path.expanduser("~"))
    assert done.returncode == 0, done.stderr
    return done.stdout.split("\n")[:3]


def test_import_sets_the_policy_before_the_runtime_loads_and_cleans_up():
    """In a fresh process libgomp is not loaded yet when pyneural prepares (else describe() would
    say so), and the variable is gone from the environment afterwards (children see the user's).
    Helpers sleep, so the load rule is on."""
    outcome, left, sampling = _child()
    assert outcome == "OMP_WAIT_POLICY=passive (set by pyneural)"
    assert left == "-" and sampling == "True"


def test_import_respects_the_users_policy():
    """And the load rule is on only where that policy lets the helpers sleep: spinning helpers of
    our own would be counted as another program's threads."""
    outcome, left, sampling = _child(OMP_WAIT_POLICY="active")
    assert outcome == "the user's OMP_WAIT_POLICY=active" and left == "active" and sampling == "False"
    outcome, left, sampling = _child(GOMP_SPINCOUNT="123")
    assert outcome == "the user's GOMP_SPINCOUNT=123" and left == "-" and sampling == "False"
    outcome, left, sampling = _child(OMP_WAIT_POLICY="PASSIVE")
    assert outcome == "the user's OMP_WAIT_POLICY=PASSIVE" and sampling == "True"


def test_import_after_torch_keeps_its_runtime():
    pytest.importorskip("torch")
    outcome, _, sampling = _child(before="import torch")
    assert "loaded before pyneural" in outcome and sampling == "False"


# ---- the team (csrc/cpu/parallel_team.h) -------------------------------------------------------

@pytest.fixture
def two_threads():
    """Two OpenMP threads for this thread's regions, adaptive team, clean history, a 20 us handoff
    estimate, the load rule off (so what else runs on the machine does not count); restored after."""
    before, adaptive, handoff = get_threads(), _C.team_adaptive(), _C.team_handoff_ns()
    sampling = _C.team_load_sampling()
    set_threads(2)
    _C.set_team_adaptive(True)
    _C.set_team_late_history(0)
    _C.set_team_handoff_ns(20_000)
    _C.set_team_load_sampling(False)
    yield
    _C.set_team_load_sampling(sampling)
    _C.set_team_late_history(0)
    _C.set_team_handoff_ns(handoff)
    _C.set_team_adaptive(adaptive)
    set_threads(before)


def test_team_is_full_on_a_quiet_history(two_threads):
    assert [_C.team_threads() for _ in range(40)] == [2] * 40


def test_team_shrinks_after_three_late_regions_and_probes(two_threads):
    _C.set_team_late_history(0b1011)
    teams = [_C.team_threads() for _ in range(64)]
    assert teams == ([1] * 31 + [2]) * 2  # every 32nd region probes with the full team


def test_big_regions_keep_the_team_while_shrunk(two_threads):
    """A region worth over 2 ms on one thread (a big GEMM) gets both threads even on a loaded
    history; small and unknown ones do not."""
    _C.set_team_late_history(0xFFFF)
    assert [_C.team_threads(5e6) for _ in range(40)] == [2] * 40
    assert _C.team_threads(1e6) == 1 and _C.team_threads() == 1


def test_a_region_worth_fewer_than_ten_handoffs_runs_alone(two_threads):
    """With a 20 us handoff estimate a region of an estimated 150 us runs on one thread, one of 250 us
    on both; unknown work (0) keeps the team."""
    assert _C.team_threads(150e3) == 1
    assert _C.team_threads(250e3) == 2 and _C.team_threads() == 2


def test_the_handoff_rule_holds_on_a_quiet_history_and_not_when_not_adaptive(two_threads):
    _C.set_team_handoff_ns(1_000_000)  # 1 ms handoffs: even a 5 ms region is not worth it
    assert _C.team_threads(5e6) == 1
    _C.set_team_adaptive(False)
    assert _C.team_threads(5e6) == 2


def test_handoff_estimate_averages_clamped_samples(two_threads):
    """Each region moves the estimate an eighth of the way to its sample, and a sample is clamped to
    4x the estimate + 20 us: one helper descheduled for 50 ms moves a 20 us estimate to 30 us."""
    _C.team_record_handoff(50_000_000)
    assert _C.team_handoff_ns() == 20_000 + (4 * 20_000 + 20_000 - 20_000) // 8
    for _ in range(200):
        _C.team_record_handoff(60_000)
    assert 59_000 <= _C.team_handoff_ns() <= 60_000


def test_handoff_estimate_is_capped_so_big_regions_keep_measuring(two_threads):
    """However slow the helpers, the estimate stops at 200 us: a region worth 2 ms (the big-region
    bound) still gets both threads and books its handoff."""
    for _ in range(100):
        _C.team_record_handoff(10**9)
    assert _C.team_handoff_ns() == 200_000
    assert _C.team_threads(2e6) == 2


def test_timed_regions_measure_the_handoff(two_threads):
    """A 2-thread GEMM books what its helper cost into the estimate (any positive value: it depends
    on the machine), and a small GEMM is then still correct on one thread."""
    _C.set_team_handoff_ns(0)
    a = np.ones((300, 300), np.float32)
    gemm(a, a)
    assert _C.team_handoff_ns() > 0
    _C.set_team_handoff_ns(10**9)
    np.testing.assert_array_equal(gemm(a, a), np.full((300, 300), 300, np.float32))


@pytest.mark.parametrize("lost_us, wall_us, late", [
    (100, 150, False),     # under 200 us lost: never late
    (300, 1000, True),     # a small region that lost 30%
    (900, 15000, False),   # a hypervisor hiccup in a 15 ms GEMM: 6%, not late
    (4000, 15000, True),   # a helper 4 ms late in the same GEMM: 27%
])
def test_late_means_a_quarter_of_the_region_lost(lost_us, wall_us, late):
    assert _C.team_region_late(lost_us * 1000, wall_us * 1000) is late


def test_two_late_regions_do_not_shrink(two_threads):
    _C.set_team_late_history(0b1001)
    assert _C.team_threads() == 2


def test_history_keeps_sixteen_regions(two_threads):
    _C.set_team_late_history(0xFFFFFFFF)
    assert _C.team_late_history() == 0xFFFF


def test_team_not_adaptive_is_always_full(two_threads):
    _C.set_team_adaptive(False)
    _C.set_team_late_history(0xFFFF)
    assert [_C.team_threads() for _ in range(40)] == [2] * 40


def test_probe_on_time_clears_the_history(two_threads):
    """A full-team region on time while shrunk (a probe): the machine is free, the history clears."""
    _C.set_team_late_history(0xFFFF)
    _C.team_record_region(False)
    assert _C.team_late_history() == 0


def test_late_probe_keeps_the_team_shrunk(two_threads):
    _C.set_team_late_history(0b1011)
    _C.team_record_region(True)
    assert _C.team_late_history() == 0b10111


def test_big_region_on_time_does_not_clear_the_history(two_threads):
    """A big region gets the full team while shrunk anyway; its being on time says nothing."""
    _C.set_team_late_history(0xFFFF)
    _C.team_record_region(False, 5e6)
    assert _C.team_late_history() == 0xFFFE


def test_quiet_history_shifts_in_each_region(two_threads):
    _C.set_team_late_history(0)
    _C.team_record_region(True)
    _C.team_record_region(False)
    assert _C.team_late_history() == 0b10


def test_a_probing_gemm_books_its_region(two_threads):
    """A small GEMM run while shrunk books its probe region: whether its helper was on time (the
    history clears) or late (a 1 shifts in) depends on the machine, but one of the two happens."""
    _C.set_team_late_history(0x5555)
    a = np.ones((300, 300), np.float32)  # 54 MFLOP: under the 2 ms big-region bound
    for _ in range(2 * 32):  # every 32nd region while shrunk is a probe
        gemm(a, a)
        if _C.team_late_history() != 0x5555:
            break
    assert _C.team_late_history() in (0, 0xAAAB)


# ---- the load rule: cores other runnable threads hold ------------------------------------------

def test_runnable_threads_are_read_from_the_kernel():
    """/proc/loadavg counts this thread itself: at least 1 on Linux, -1 (unknown) elsewhere."""
    n = _C.team_runnable_threads()
    assert n >= 1 if sys.platform.startswith("linux") else n == -1


def test_load_average_moves_half_way_per_sample_and_counts_a_core_from_three_quarters(two_threads):
    _C.set_team_load_sampling(True)  # fed samples below hold off the real reads for a second
    assert _C.team_busy_cores() == 0
    busy, teams = [], []
    for _ in range(6):
        _C.team_record_load_sample(2)  # this thread and one more
        busy.append(_C.team_busy_cores())
        teams.append(_C.team_threads(5e6))
    assert busy == [0.5, 0.75, 0.875, 0.9375, 1.0, 1.0]  # in 1/16ths
    if _C.num_procs() == 2:
        assert teams == [2] + [1] * 5  # one sample seeing a thread elsewhere is not enough
    _C.team_record_load_sample(0)  # unknown: ignored
    assert _C.team_busy_cores() == 1.0


def test_a_core_taken_elsewhere_leaves_the_rest(two_threads):
    """With one core counted busy a region gets the other cores (one, on a 2-core machine), even a
    big one; with the rule off, or once the samples say idle again, the full team."""
    _C.set_team_load_sampling(True)
    for _ in range(5):
        _C.team_record_load_sample(2)
    expected = min(2, max(1, _C.num_procs() - 1))
    assert _C.team_threads(5e6) == expected and _C.team_threads() == expected
    _C.team_record_load_sample(1)
    assert _C.team_busy_cores() < 0.75 and _C.team_threads(5e6) == 2
    _C.set_team_load_sampling(False)
    assert _C.team_busy_cores() == 0 and _C.team_threads(5e6) == 2


@pytest.mark.skipif(not sys.platform.startswith("linux") or _C.num_procs() != 2,
                    reason="the rule's effect is one thread on a 2-core machine")
def test_a_busy_process_on_one_of_two_cores_leaves_one_thread(two_threads):
    """A real busy process: within a few samples (5 ms apart) the team is one thread (more load from
    elsewhere only adds to the count, so this cannot pass by chance on a busy machine or fail on one)."""
    _C.set_team_load_sampling(True)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        deadline, team = time.monotonic() + 5.0, 2
        while time.monotonic() < deadline and team != 1:
            team = _C.team_threads(5e6)
            time.sleep(0.005)
        assert team == 1, f"busy cores {_C.team_busy_cores()}"
    finally:
        busy.kill()
        busy.wait()


# ---- the same bits from any team ---------------------------------------------------------------

def _with_team(threads, shrunk, fn):
    before, handoff = get_threads(), _C.team_handoff_ns()
    set_threads(threads)
    _C.set_team_late_history(0xFFFF if shrunk else 0)
    _C.set_team_handoff_ns(0)  # these small products would run alone otherwise
    sampling = _C.team_load_sampling()
    _C.set_team_load_sampling(False)  # and on a busy machine too
    try:
        return fn()
    finally:
        _C.set_team_load_sampling(sampling)
        _C.set_team_late_history(0)
        _C.set_team_handoff_ns(handoff)
        set_threads(before)


# Column slabs (M <= 1024: threads steal slivers), a shared panel (large M), strided operands, and a
# matrix-vector product; none of the sizes divides the 14 x 32 tile.
GEMM_SHAPES = [(3, 1500, 400), (96, 2111, 77), (333, 517, 290), (1100, 70, 600), (1, 4097, 300)]


@pytest.mark.parametrize("m,n,k", GEMM_SHAPES)
def test_gemm_same_bits_from_any_team(rng, m, n, k):
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    ref = a.astype(np.float64) @ b.astype(np.float64)

    def run():
        out = poisoned((m, n))
        gemm(a, b, out=out)
        return out
    one = _with_team(1, False, run)
    assert_close_bound(one, ref, k, np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64))
    for threads, shrunk in ((2, False), (2, True), (4, False)):  # 4 on 2 cores: threads steal
        for _ in range(3 if threads == 4 else 1):
            np.testing.assert_array_equal(_with_team(threads, shrunk, run), one, err_msg=f"{threads} {shrunk}")


@pytest.mark.parametrize("parallel", ["images", "gemm"])
def test_conv_same_bits_from_any_team(rng, parallel):
    """Forward and backward-data at 1 and 2 threads; backward-weight (its partial sums are cut by the
    nominal thread count) at 2 nominal threads whether the full or a shrunk team ran it."""
    x = rng.standard_normal((37, 5, 9, 7)).astype(np.float32)
    w = rng.standard_normal((11, 5, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((37, 11, 9, 7)).astype(np.float32)

    hyper = ((1, 1), (1, 1), (1, 1), 1)  # stride, padding, dilation, groups

    def passes():
        y, dx, dw = poisoned(dy.shape), poisoned(x.shape), poisoned(w.shape)
        _C.conv2d_forward(x, w, None, y, *hyper, False, parallel)
        _C.conv2d_backward_data(dy, w, dx, *hyper, parallel)
        _C.conv2d_backward_weight(dy, x, dw, *hyper, parallel)
        return y, dx, dw
    one = _with_team(1, False, passes)
    full = _with_team(2, False, passes)
    for out, ref in zip(full[:2], one[:2]):
        np.testing.assert_array_equal(out, ref)
    for threads, shrunk in ((2, True), (2, False)):
        for out, ref in zip(_with_team(threads, shrunk, passes), full):
            np.testing.assert_array_equal(out, ref)
    assert not np.isnan(full[2]).any()


# ---- MPI ranks' wait (pyneural/distributed/_mpi.py) --------------------------------------------

_MPI_CHILD = """
import os
from pyneural.distributed._mpi import import_mpi
import_mpi()
print(os.environ.get("OMPI_MCA_mpi_yield_when_idle", "-"))
"""


@pytest.mark.parametrize("user,expected", [(None, "1"), ("0", "0")])
def test_mpi_ranks_yield_while_waiting_unless_told_otherwise(user, expected):
    pytest.importorskip("mpi4py")
    env = subprocess_env()
    env.pop("OMPI_MCA_mpi_yield_when_idle", None)
    if user is not None:
        env["OMPI_MCA_mpi_yield_when_idle"] = user
    done = subprocess.run([sys.executable, "-c", _MPI_CHILD], env=env, capture_output=True, text=True, timeout=120,
                          cwd=os.path.expanduser("~"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [expected]
