"""channels_last (NHWC memory under NCHW shapes), as PyTorch users know it: the API, layouts that
propagate through conv / pooling / batch norm / ReLU and into the gradients, optimizers on
channels_last parameters, and the same numbers as NCHW: bitwise on the CPU (its kernels run on NCHW
copies) for a convolution, to fp32 rounding for whole networks (reductions sum in memory order) and on
the CUDA device (whose NHWC kernels sum in another order)."""
import numpy as np
import pytest

import pyneural as pn
from pyneural import functional as F, models

from conftest import rel_err


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


def _pair(device, seed=0):
    pn.manual_seed(seed)
    a = models.resnet_small().to(device)
    b = models.resnet_small().to(device)
    b.load_state_dict(a.state_dict())
    return a, b.to(memory_format=pn.channels_last)


def _step_both(device, steps=3, size=16):
    a, b = _pair(device)
    opt_a = pn.optim.SGD(a.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    opt_b = pn.optim.SGD(b.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 3, size, size)).astype(np.float32)
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


def test_channels_last_training_on_the_cpu_matches_nchw():
    # The conv / pool / batch-norm kernels run on NCHW copies (bitwise the same); the whole-array
    # reductions in between (the global average pool, the bias sums) sum in memory order, so the
    # two layouts agree to fp32 rounding, not bit for bit (PyTorch promises no more).
    a, b, losses = _step_both("cpu")
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
    ref = F.conv2d(x.contiguous(), w, padding=1)
    assert np.array_equal(y.numpy(), ref.numpy())  # the CPU kernel runs on an NCHW copy: the same bits
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
    a, b, losses = _step_both("cuda", steps=2, size=8)
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
