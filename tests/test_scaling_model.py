"""The scaling model of bench/scaling.py --predict (bench/scaling_model.py): ring allreduce cost,
overlap with backward, the alpha-beta fit and the pipeline bubble, against hand-computed values."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "bench"))
import scaling_model as sm  # noqa: E402


def test_ring_allreduce_hand_values():
    # 2 ranks: 2 hops of 10 us, each rank moves 2 * 1/2 * 1 MB at 1 GB/s = 1 ms
    assert sm.ring_allreduce_seconds(1e6, 2, 10e-6, 1e9) == pytest.approx(20e-6 + 1e-3, rel=1e-12)
    # 4 ranks: 6 hops of 5 us; 2 * 3/4 * 8 MB at 10 GB/s = 1.2 ms
    assert sm.ring_allreduce_seconds(8e6, 4, 5e-6, 1e10) == pytest.approx(30e-6 + 1.2e-3, rel=1e-12)
    # one rank moves nothing; many ranks approach twice the bytes
    assert sm.ring_allreduce_seconds(8e6, 1, 5e-6, 1e10) == 0.0
    assert sm.ring_allreduce_seconds(1e9, 10**6, 0.0, 1e9) == pytest.approx(2.0, rel=1e-5)


def test_ring_allreduce_rejects_bad_arguments():
    with pytest.raises(ValueError, match="beta > 0"):
        sm.ring_allreduce_seconds(1e6, 2, 1e-6, 0.0)
    with pytest.raises(ValueError, match="ranks >= 1"):
        sm.ring_allreduce_seconds(1e6, 0, 1e-6, 1e9)


def test_overlap_queues_buckets_on_one_link():
    # bucket 0 runs 1 -> 3; bucket 1, ready at 2, waits for the link: 3 -> 4; bucket 2 starts when
    # ready at 5 (the end of backward) and ends at 6: 1 s exposed
    out = sm.overlap([1.0, 2.0, 5.0], [2.0, 1.0, 1.0], backward_seconds=5.0)
    assert out["ends"] == pytest.approx([3.0, 4.0, 6.0])
    assert out["busy"] == pytest.approx(4.0)
    assert out["exposed"] == pytest.approx(1.0)
    # bandwidth-bound: every bucket ready early, the link is the bottleneck
    out = sm.overlap([0.1, 0.2, 0.3], [1.0, 1.0, 1.0], backward_seconds=0.3)
    assert out["ends"] == pytest.approx([1.1, 2.1, 3.1])
    assert out["exposed"] == pytest.approx(2.8)
    # everything done before backward ends: nothing exposed
    assert sm.overlap([0.0, 1.0], [0.5, 0.5], backward_seconds=3.0)["exposed"] == 0.0
    with pytest.raises(ValueError, match="2 ready times for 1 buckets"):
        sm.overlap([0.0, 1.0], [0.5], backward_seconds=1.0)


def test_uniform_ready_times_follow_the_bytes():
    assert sm.uniform_ready_times([1, 1, 2], 4.0) == pytest.approx([1.0, 2.0, 4.0])
    assert sm.uniform_ready_times([5], 0.25) == pytest.approx([0.25])


def test_data_parallel_step_hand_computed():
    compute = {"forward": 1.0, "backward": 2.0, "step": 0.5}
    # 2 ranks, alpha 0, 1 MB/s: each 1 MB bucket takes 2 * 1/2 * 1 s = 1 s; ends 2 and 3, backward
    # ends at 2: 1 s exposed
    out = sm.data_parallel_step(compute, [(1e6, 1.0), (1e6, 2.0)], ranks=2, alpha=0.0, beta=1e6, batch=8)
    assert out["exposed"] == pytest.approx(1.0)
    assert out["busy"] == pytest.approx(2.0)
    assert out["step"] == pytest.approx(4.5)
    assert out["images_per_s"] == pytest.approx(16 / 4.5)
    assert out["efficiency"] == pytest.approx(3.5 / 4.5)
    # one rank: no communication at all
    one = sm.data_parallel_step(compute, [(1e6, 1.0), (1e6, 2.0)], ranks=1, alpha=1e-3, beta=1e6, batch=8)
    assert one["step"] == pytest.approx(3.5) and one["efficiency"] == 1.0


@pytest.mark.parametrize("ranks", [2, 4, 8])
def test_fit_recovers_known_constants(ranks):
    alpha, beta = 7e-6, 3.5e9
    sizes = [4096 * 4**i for i in range(8)]  # 4 KiB .. 64 MiB, as the benchmark measures
    exact = [(b, sm.ring_allreduce_seconds(b, ranks, alpha, beta)) for b in sizes]
    a, b, rms = sm.fit_alpha_beta(exact, ranks)
    assert a == pytest.approx(alpha, rel=1e-9) and b == pytest.approx(beta, rel=1e-9) and rms < 1e-9
    rng = np.random.default_rng(ranks)
    noisy = [(b, t * (1 + 0.02 * rng.standard_normal())) for b, t in exact]  # 2% timing noise
    a, b, rms = sm.fit_alpha_beta(noisy, ranks)
    assert a == pytest.approx(alpha, rel=0.1) and b == pytest.approx(beta, rel=0.05)
    assert 0.005 < rms < 0.05


def test_fit_rejects_what_it_cannot_fit():
    with pytest.raises(ValueError, match="ranks >= 2"):
        sm.fit_alpha_beta([(1, 1.0), (2, 2.0)], 1)
    with pytest.raises(ValueError, match="distinct sizes"):
        sm.fit_alpha_beta([(1024, 1e-5), (1024, 2e-5)], 2)
    with pytest.raises(ValueError, match="do not grow"):
        sm.fit_alpha_beta([(1024, 2e-3), (2**20, 1e-3), (2**24, 5e-4)], 2)


def test_bubble_formula():
    assert sm.bubble_fraction(1, 8) == 0.0
    assert sm.bubble_fraction(2, 4) == pytest.approx(1 / 5)
    assert sm.bubble_fraction(4, 4) == pytest.approx(3 / 7)
    assert sm.bubble_fraction(8, 1) == pytest.approx(7 / 8)  # one micro-batch: stages take turns
    with pytest.raises(ValueError):
        sm.bubble_fraction(0, 4)


def test_pipeline_step_equal_stages_match_the_bubble_formula():
    for stages, micro in ((2, 4), (4, 4), (4, 16)):
        out = sm.pipeline_step([0.01] * stages, micro, [0.0] * (stages - 1))
        assert out["step"] == pytest.approx((micro + stages - 1) * 0.01)
        assert out["bubble"] == pytest.approx([sm.bubble_fraction(stages, micro)] * stages)


def test_pipeline_step_uneven_stages_and_transfers():
    # stages 1, 3, 2 ms, M = 4, boundaries 0.5 and 0.25 ms: 3 * 3 + 6 + 2 * 0.75 = 16.5 ms
    out = sm.pipeline_step([1e-3, 3e-3, 2e-3], 4, [0.5e-3, 0.25e-3])
    assert out["step"] == pytest.approx(16.5e-3)
    assert out["bubble"] == pytest.approx([1 - 4 / 16.5, 1 - 12 / 16.5, 1 - 8 / 16.5])
    with pytest.raises(ValueError, match="3 stages need 2 boundary"):
        sm.pipeline_step([1e-3, 3e-3, 2e-3], 4, [0.5e-3])


def test_resnet50_parameter_count():
    shapes = sm.resnet50_parameter_shapes()
    assert sum(int(np.prod(s)) for s in shapes) == 25_557_032  # torchvision's resnet50
    assert shapes[-2] == (1000, 2048)
