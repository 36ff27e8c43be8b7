"""channels_last (NHWC memory under NCHW shapes), as PyTorch users know it: the API, layouts that
propagate through conv / pooling / batch norm / ReLU and into the gradients, optimizers on
channels_last parameters, and the same numbers as NCHW to fp32 rounding, on the CPU and the CUDA
device alike: both run NHWC kernels on channels_last memory (no layout copies), which sum in another
order than the NCHW ones."""
import collections

import numpy as np
import pytest

import pyneural as pn
from pyneural import functional as F, models
from pyneural.backend import cpu as cpu_backend

from conftest import assert_close_bound, rel_err


def test_memory_format_api_matches_pytorch(rng):
    x = pn.tensor(rng.standard_normal((2, 3, 4, 5)).astype(np.float32), requires_grad=True)
    assert x.is_contiguous() and not x.is_contiguous(memory_format=pn.channels_last)
    y = x.to(memory_format=pn.channels_last)
    assert y.shape == (2, 3, 4, 5) and y.is_contiguous(memory_format=pn.channels_last) and not y.is_contiguous()
    assert y.data.strides == (240, 4, 60, 12)
    assert np.array_equal(y.detach().numpy(), x.detach().numpy())
    assert y.contiguous(memory_format=pn.channels_last) is not None and y.contiguous().is_contiguous()
    (y * 2).sum().backward()
    assert np.array_equal(x.grad.numpy(), np.full((2, 3, 4, 5), 2, np.float32))  # the gradient passes through
    assert x.to(memory_format=pn.preserve_format) is x
    with pytest.raises(RuntimeError, match="rank 4"):
        pn.randn(3, 4).contiguous(memory_format=pn.channels_last)
    m = models.cnn().to(memory_format=pn.channels_last)
    convs = [p for p in m.parameters() if p.data.ndim == 4]
    assert convs and all(p.is_contiguous(memory_format=pn.channels_last) for p in convs)
    assert all(p.is_contiguous() for p in m.parameters() if p.data.ndim != 4)


_MODELS = {"resnet_small": (models.resnet_small, 3, 16), "cnn": (lambda: models.cnn(in_channels=3), 3, 8)}


def _pair(device, seed=0, model="resnet_small"):
    pn.manual_seed(seed)
    a = _MODELS[model][0]().to(device)
    b = _MODELS[model][0]().to(device)
    b.load_state_dict(a.state_dict())
    return a, b.to(memory_format=pn.channels_last)


def _step_both(device, steps=3, model="resnet_small"):
    a, b = _pair(device, model=model)
    _, channels, size = _MODELS[model]
    opt_a = pn.optim.SGD(a.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    opt_b = pn.optim.SGD(b.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, channels, size, size)).astype(np.float32)
    y = rng.integers(0, 10, 6)
    losses = []
    for _ in range(steps):
        xa = pn.tensor(x, device=device)
        xb = xa.to(memory_format=pn.channels_last)
        la = F.cross_entropy(a(xa), pn.tensor(y, device=device))
        lb = F.cross_entropy(b(xb), pn.tensor(y, device=device))
        for opt, loss in ((opt_a, la), (opt_b, lb)):
            opt.zero_grad()
            loss.backward()
        for p in b.parameters():  # gradients come back in their parameter's layout
            if p.data.ndim == 4:
                assert p.grad.is_contiguous(memory_format=pn.channels_last)
        opt_a.step()
        opt_b.step()
        losses.append((la.item(), lb.item()))
    return a, b, losses


_KERNELS = {cpu_backend._conv: ("conv2d_forward", "conv2d_backward_data", "conv2d_backward_weight"),
            cpu_backend._pool: ("max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward",
                                "avg_pool2d_backward")}


@pytest.fixture
def cpu_kernel_calls(monkeypatch):
    """Counts the CPU backend's conv / pooling kernel calls by (name, layout) and its batch-norm calls
    by whether x came as channels_last rows, and records every operand the backend had to copy on
    its way to a kernel (a layout change: memory not shared with the array it was given)."""
    calls, copies = collections.Counter(), []
    for module, names in _KERNELS.items():
        for name in names:
            real = getattr(module, name)
            monkeypatch.setattr(module, name, lambda *a, _real=real, _name=name, **k: calls.update(
                [(_name, k.get("layout", "NCHW"))]) or _real(*a, **k))
    real_stats = cpu_backend._bn.channel_stats
    monkeypatch.setattr(cpu_backend._bn, "channel_stats",
                        lambda x: calls.update([("channel_stats", "rows" if x.ndim == 2 else "NCHW")]) or real_stats(x))
    for name in ("_in", "_channel_rows"):
        def prepared(a, *args, _real=getattr(cpu_backend, name)):
            out = _real(a, *args)
            if not np.shares_memory(out, a):
                copies.append(a.shape)
            return out
        monkeypatch.setattr(cpu_backend, name, prepared)
    return calls, copies


@pytest.mark.parametrize("model", ["resnet_small", "cnn"])
def test_channels_last_training_on_the_cpu_runs_nhwc_kernels_and_matches_nchw(cpu_kernel_calls, model):
    # The channels_last network runs the NHWC kernels on its own memory: every conv, pooling and
    # batch-norm call takes the NHWC path and no activation or gradient is copied to another layout.
    # The kernels sum in another order than the NCHW ones, so the two agree to fp32 rounding, not bit
    # for bit (PyTorch promises no more). The one layout change: in the CNN, Flatten's backward hands
    # the last max pool an NCHW-ordered gradient (a reshape of the linear layer's), once a step (in
    # PyTorch too).
    calls, copies = cpu_kernel_calls
    a, b, losses = _step_both("cpu", model=model)
    nhwc = {name for (name, layout) in calls if layout in ("NHWC", "rows")}
    nchw = {name for (name, layout) in calls if layout == "NCHW"}
    assert {"conv2d_forward", "conv2d_backward_data", "conv2d_backward_weight"} <= nhwc and nhwc == nchw
    assert ("channel_stats" in nhwc) == (model == "resnet_small") and ("max_pool2d_backward" in nhwc) == (model == "cnn")
    assert copies == ([] if model == "resnet_small" else [(6, 64, 4, 4)] * 3), f"layout copies of {copies}"
    for la, lb in losses:
        assert abs(la - lb) <= 1e-5 * abs(la)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert rel_err(pb.detach().numpy(), pa.detach().numpy()) < 1e-5
        if pb.data.ndim == 4:
            assert pb.is_contiguous(memory_format=pn.channels_last)


def test_layouts_propagate_through_the_layers(rng):
    x = pn.tensor(rng.standard_normal((2, 4, 9, 7)).astype(np.float32)).to(memory_format=pn.channels_last)
    w = pn.tensor(rng.standard_normal((5, 4, 3, 3)).astype(np.float32))
    y = F.conv2d(x, w, padding=1)
    assert y.is_contiguous(memory_format=pn.channels_last)
    ref = F.conv2d(x.contiguous(), w, padding=1)  # the NCHW kernel; the NHWC one sums in another order
    mag = F.conv2d(pn.tensor(np.abs(x.numpy())), pn.tensor(np.abs(w.numpy())), padding=1)
    assert_close_bound(y.numpy(), ref.numpy(), 2 * 4 * 9, mag.numpy(), what="NHWC vs NCHW conv")
    only_w = F.conv2d(x.contiguous(), w.to(memory_format=pn.channels_last), padding=1)
    assert only_w.is_contiguous(memory_format=pn.channels_last)  # PyTorch: either operand decides
    for out in (F.relu(y), F.max_pool2d(y, 2), F.avg_pool2d(y, 2),
                pn.nn.BatchNorm2d(5)(y)):
        assert out.is_contiguous(memory_format=pn.channels_last), out


@pytest.mark.cuda
def test_channels_last_on_the_device_runs_the_nhwc_kernels_and_matches_nchw(cuda_xp, monkeypatch):
    from pyneural.cuda import conv as cuda_conv
    layouts = []
    real = cuda_conv.conv2d_forward
    monkeypatch.setattr(cuda_conv, "conv2d_forward",
                        lambda *a, **k: layouts.append(k.get("layout")) or real(*a, **k))
    a, b, losses = _step_both("cuda", steps=2)
    assert "NHWC" in layouts and "NCHW" in layouts
    for la, lb in losses:
        assert abs(la - lb) <= 1e-5 * abs(la)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert rel_err(pb.detach().cpu().numpy(), pa.detach().cpu().numpy()) < 1e-5
        if pb.data.ndim == 4:
            assert pb.is_contiguous(memory_format=pn.channels_last)


@pytest.mark.cuda
def test_channels_last_adam_and_autocast_on_the_device(cuda_xp, rng):
    pn.manual_seed(0)
    model = models.cnn().to("cuda").to(memory_format=pn.channels_last)
    opt = pn.optim.Adam(model.parameters(), lr=1e-3)
    x = pn.tensor(rng.standard_normal((4, 1, 8, 8)).astype(np.float32), device="cuda")
    y = pn.tensor(rng.integers(0, 10, 4), device="cuda")
    with pn.autocast("cuda", dtype=pn.bfloat16):
        loss = F.cross_entropy(model(x.to(memory_format=pn.channels_last)), y)
    loss.backward()
    opt.step()
    assert np.isfinite(loss.item())
    assert all(p.is_contiguous(memory_format=pn.channels_last) for p in model.parameters() if p.data.ndim == 4)
    state = opt.state_dict()
    opt.load_state_dict(state)  # contiguous copies come back; the next step lays them out again
    opt.step()
