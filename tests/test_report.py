"""The utilization report: the time split adds up to the wall time, FLOP counts equal the hand
count, the measured peak and the NVML sampler, and the report of a real ``pyneural train`` run."""
import json
import math
import sys
import time
import types

import numpy as np
import pytest

import pyneural as pn
import pyneural.functional as F
from pyneural import cli, nn, optim, report
from pyneural.data import DataLoader, TensorDataset
from pyneural.trainer import Trainer


def parts(r):
    return r.compute_s + r.data_wait_s + r.comm_wait_s + r.host_overhead_s


def test_time_split_adds_up_and_communication_is_taken_out_of_compute():
    r = report.build_report(wall_s=10.0, compute_s=7.0, data_wait_s=1.5, comm_wait_s=2.0, steps=100,
                            samples=6400, flops_per_sample=1e6, peak_gflops=50.0, details={"distributed": True})
    assert (r.compute_s, r.comm_wait_s, r.data_wait_s) == (5.0, 2.0, 1.5)
    assert r.host_overhead_s == pytest.approx(1.5)
    assert parts(r) == pytest.approx(r.wall_s)
    assert r.achieved_gflops == pytest.approx(6400 * 1e6 / 5.0 / 1e9)
    d = r.as_dict()
    assert sum(d["split_percent"].values()) == pytest.approx(100.0)
    assert d["fraction_of_peak"] == pytest.approx(r.achieved_gflops / 50.0)
    text = r.format()
    assert "communication wait" in text and "1.3 GFLOP/s during compute" in text
    assert "2.6% of the measured peak 50.0" in text


def test_time_split_rejects_negative_or_nan_times():
    for name in ("wall_s", "compute_s", "data_wait_s", "comm_wait_s"):
        kwargs = dict(wall_s=1.0, compute_s=0.5, data_wait_s=0.1, comm_wait_s=0.0)
        kwargs[name] = -1.0 if name != "comm_wait_s" else math.nan
        with pytest.raises(ValueError, match=f"{name} must be a time >= 0"):
            report.build_report(steps=1, samples=1, flops_per_sample=1.0, peak_gflops=1.0, **kwargs)


def test_flops_of_linear_and_conv_layers_equal_the_hand_count():
    n = 3
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),       # 5x6 -> 5x6
                          nn.Conv2d(4, 6, 3, stride=2, groups=2),         # 5x6 -> 2x2, 2 in-channels per group
                          nn.Flatten(), nn.Linear(6 * 2 * 2, 7))
    x = pn.Tensor(np.random.default_rng(0).standard_normal((n, 3, 5, 6)).astype(np.float32))
    y = pn.Tensor(np.arange(n) % 7)
    conv1 = 2 * n * 4 * 5 * 6 * 3 * 3 * 3
    conv2 = 2 * n * 6 * 2 * 2 * 2 * 3 * 3
    linear = 2 * n * 7 * 24
    forward = conv1 + conv2 + linear
    # Backward: a weight gradient for every layer, a data gradient for all but the first (its
    # input needs none).
    backward = conv1 + 2 * conv2 + 2 * linear
    flops = report.count_flops(model, F.cross_entropy, x, y)
    assert flops["forward_per_sample"] == forward / n
    assert flops["backward_per_sample"] == backward / n
    assert flops["train_per_sample"] == (forward + backward) / n


def test_flops_of_matmul_and_the_mlp():
    a = pn.Tensor(np.ones((2, 3, 4), np.float32), requires_grad=True)
    b = pn.Tensor(np.ones((4, 5), np.float32))
    assert report.graph_flops(pn.matmul(a, b).sum()) == (2 * 2 * 3 * 5 * 4, 2 * 2 * 3 * 5 * 4)
    from pyneural.models import mlp
    x, y = pn.Tensor(np.zeros((8, 1, 8, 8), np.float32)), pn.Tensor(np.zeros(8, np.int64))
    per_layer = [64 * 512, 512 * 512, 512 * 10]
    expected = 2 * sum(per_layer) + 2 * per_layer[0] + 4 * (per_layer[1] + per_layer[2])
    assert report.count_flops(mlp(), F.cross_entropy, x, y)["train_per_sample"] == expected


def test_counting_flops_changes_nothing():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    before = {k: v.copy() for k, v in model.state_dict().items()}
    rng_before = pn.get_rng_state()
    x = pn.Tensor(np.random.default_rng(1).standard_normal((4, 1, 6, 6)).astype(np.float32))
    report.count_flops(model, F.cross_entropy, x, pn.Tensor(np.arange(4) % 3))
    assert model.training
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())
    assert pn.get_rng_state() == rng_before
    assert all(p.grad is None for p in model.parameters())


def test_measured_peak_is_positive_and_cached():
    first = report.measured_peak_gflops("cpu", size=256, repeats=2)
    assert first > 0
    assert report.measured_peak_gflops("cpu", size=256, repeats=2) == first
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda'"):
        report.measured_peak_gflops("tpu")


def fake_pynvml():
    calls = {"init": 0, "shutdown": 0}
    util = iter(range(10, 1000, 10))

    def init():
        calls["init"] += 1

    def shutdown():
        calls["shutdown"] += 1

    module = types.SimpleNamespace(
        nvmlInit=init, nvmlShutdown=shutdown, nvmlDeviceGetHandleByIndex=lambda i: ("handle", i),
        nvmlDeviceGetName=lambda h: b"Fake GPU",
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(total=8 * 2**30, used=2**30),
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=next(util)))
    return module, calls


def test_nvml_sampler_samples_and_shuts_down(monkeypatch):
    module, calls = fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", module)
    sampler = report.NvmlSampler(interval=0.01).start()
    time.sleep(0.05)
    summary = sampler.stop()
    assert calls == {"init": 1, "shutdown": 1}
    assert summary["name"] == "Fake GPU" and summary["samples"] >= 3
    assert summary["utilization_max_percent"] == 10 * summary["samples"]
    assert summary["memory_used_max_bytes"] == 2**30 and summary["memory_total_bytes"] == 8 * 2**30
    r = report.build_report(wall_s=1, compute_s=1, data_wait_s=0, steps=1, samples=1, flops_per_sample=1,
                            peak_gflops=1, device="cuda", gpu=summary)
    assert "GPU Fake GPU: utilization mean" in r.format() and "1,024 / 8,192 MiB" in r.format()


def test_nvml_sampler_without_the_package_raises_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with pytest.raises(ImportError):
        report.NvmlSampler().start()
    with pytest.raises(ValueError, match="interval must be > 0"):
        report.NvmlSampler(interval=0)


class SlowBatches(TensorDataset):
    def get_batch(self, indices):
        time.sleep(0.02)
        return super().get_batch(indices)


def test_trainer_measures_compute_and_data_wait():
    data = SlowBatches(np.zeros((12, 4), np.float32), np.zeros(12, np.int64))
    model = nn.Linear(4, 2)
    trainer = Trainer(model, optim.SGD(model.parameters(), lr=0.1))
    trainer.fit(DataLoader(data, batch_size=2, prefetch=0), epochs=2)
    assert trainer.data_wait_time >= 12 * 0.02 * 0.9
    assert 0 < trainer.compute_time < trainer.data_wait_time
    assert (trainer.steps_run, trainer.samples_trained) == (12, 24)


def test_train_prints_the_report_and_writes_json(tmp_path, capsys):
    path = tmp_path / "r.json"
    assert cli.main(["train", "--model", "mlp", "--epochs", "1", "--batch-size", "512", "--no-progress",
                     "--checkpoint-dir", str(tmp_path / "ck"), "--report", str(path)]) == 0
    out = capsys.readouterr().out
    assert "utilization report (cpu, 3 steps, 1437 samples)" in out
    for line in ("training wall time", "compute", "data wait", "host overhead", "of which evaluation",
                 "MFLOP/sample", "of the measured peak"):
        assert line in out
    assert "communication wait" not in out
    data = json.loads(path.read_text())
    total = data["compute_s"] + data["data_wait_s"] + data["comm_wait_s"] + data["host_overhead_s"]
    assert total == pytest.approx(data["wall_s"], rel=1e-9)
    assert data["compute_s"] > 0 and data["peak_gflops"] > 0 and data["comm_wait_s"] == 0
    assert data["flops_per_sample"] == 2 * (64 * 512 + 512 * 512 + 512 * 10) + 2 * 64 * 512 + 4 * (512 * 512 + 512 * 10)
    assert data["achieved_gflops"] == pytest.approx(data["flops_per_sample"] * 1437 / data["compute_s"] / 1e9)
    assert data["details"]["checkpoint_s"] > 0 and data["details"]["eval_s"] > 0
    assert data["gpu"] is None
