"""bf16 convolution (pyneural.kernels.conv_bf16) against a float64 convolution of the same bf16 inputs,
on every bf16 GEMM path this CPU has (AMX, AVX512-BF16, portable, and the AMX path's code on the
software tile model), NCHW and channels_last; a finite-difference check of the backward passes;
torch's bf16 convolution; the CPU backend's conv under bf16 autocast against torch's autocast; and
one test per kind of bad input.

Products of two bf16 are exact in float32, so the error is the float32 summation, held to
``assert_close_bound`` with k = terms per output, and for a bf16 output its one final rounding."""
import ml_dtypes
import numpy as np
import pytest
from conftest import assert_close_bound, rel_err

import pyneural as pn
from pyneural import functional as F
from pyneural.backend import cpu as cpu_backend
from pyneural.kernels import bf16, conv, conv_bf16
from pyneural.kernels.conv_bf16 import conv2d_bf16_backward_data, conv2d_bf16_backward_weight, conv2d_bf16_forward

BF16 = np.dtype(ml_dtypes.bfloat16)
F32_EPS = float(np.finfo(np.float32).eps)
BF16_EPS = 2.0 ** -7


def _case(N, C, H, W, Co, kh, kw, stride=1, padding=0, dilation=1, groups=1):
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    return dict(N=N, C=C, H=H, W=W, Co=Co, kh=kh, kw=kw, stride=pair(stride), padding=pair(padding),
                dilation=pair(dilation), groups=groups)


# Odd sizes: nothing divides the C tiles (4 x 16 generic, 14 x 32 avx512bf16, 32 x 32 AMX), the K
# steps (2, 32) or the 64-deep staging chunks. Cache blocks kc/mc/nc: generic 512/128/2048,
# avx512bf16 4096/56/1024, amx 512/256/2048, amx_emulated 128/64/96; the last cases cross them.
CASES = {
    "3x3-s1-p1": _case(3, 5, 9, 11, 7, 3, 3, 1, 1),
    "3x3-s2-p1": _case(2, 6, 13, 10, 9, 3, 3, 2, 1),
    "3x3-s3-p2": _case(2, 4, 14, 17, 5, 3, 3, 3, 2),
    "3x3-s2x3-p2x0": _case(2, 3, 12, 15, 4, 3, 3, (2, 3), (2, 0)),
    "3x3-p0x1-d2": _case(2, 4, 11, 9, 6, 3, 3, 1, (0, 1), 2),
    "3x3-s2-p1-d2x1": _case(3, 4, 12, 11, 5, 3, 3, 2, 1, (2, 1)),
    "5x3-s2x1-p0x2-d1x2": _case(2, 5, 13, 8, 3, 5, 3, (2, 1), (0, 2), (1, 2)),
    "1x1": _case(3, 9, 7, 5, 11, 1, 1),
    "1x1-s2": _case(2, 6, 9, 8, 5, 1, 1, 2),
    "2x2-s3": _case(2, 3, 11, 10, 4, 2, 2, 3),
    "groups2": _case(2, 6, 9, 10, 8, 3, 3, 1, 1, 1, 2),
    "groups3-s2": _case(3, 9, 11, 8, 6, 3, 3, 2, 1, 1, 3),
    "depthwise": _case(2, 8, 10, 9, 8, 3, 3, 1, 1, 1, 8),
    "kernel-fills-input": _case(2, 3, 5, 4, 4, 5, 4),
    "N1": _case(1, 4, 12, 13, 6, 3, 3, 1, 1),
    # Co/g = 150 rows: past every path's mc (56, 64, 128); N*P = 5202 pixels past avx512bf16's kc.
    "wide-channels": _case(2, 20, 7, 6, 150, 3, 3, 1, 1),
    # K = 70*9 = 630 past generic's kc and AMX's, 2601 columns past the N panels.
    "deep-and-wide": _case(2, 70, 51, 51, 17, 3, 3, 1, 1),
}
LAYOUTS = ("nchw", "channels_last")


@pytest.fixture(params=list(bf16.GEMM_ISAS))
def isa(request):
    if request.param not in bf16.available_gemm_isas():
        pytest.skip(f"bf16 GEMM path '{request.param}' is not available here")
    return request.param


def _hyper(c):
    return c["stride"], c["padding"], c["dilation"], c["groups"]


def _out_hw(c):
    return tuple((size + 2 * p - d * (k - 1) - 1) // s + 1
                 for size, k, s, p, d in zip((c["H"], c["W"]), (c["kh"], c["kw"]), c["stride"], c["padding"],
                                             c["dilation"]))


def _bf16(rng, shape):
    return rng.standard_normal(shape).astype(np.float32).astype(BF16)


def _in_layout(a, layout):
    """``a`` (logical N, C, H, W) in NCHW or channels_last memory."""
    return np.ascontiguousarray(a) if layout == "nchw" else np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(
        0, 3, 1, 2)


def _poisoned(shape, dtype, layout):
    return _in_layout(np.full(shape, np.nan, dtype=np.float32).astype(dtype), layout)


def _references(x, w, dy, c):
    """float64 forward, backward-data and backward-weight of the given (bf16) values."""
    x64, w64, dy64 = (np.asarray(a, dtype=np.float64) for a in (x, w, dy))
    return (conv.forward_numpy(x64, w64, *_hyper(c)),
            conv.backward_data_numpy(dy64, w64, x.shape, *_hyper(c)),
            conv.backward_weight_numpy(dy64, x64, w.shape, *_hyper(c)))


def _term_counts(c):
    """Products per output of forward, backward-data (at most: a stride skips some), backward-weight."""
    Ho, Wo = _out_hw(c)
    taps = c["kh"] * c["kw"]
    return c["C"] // c["groups"] * taps, c["Co"] // c["groups"] * taps, c["N"] * Ho * Wo


def _assert_bound(out, ref, k, magnitude, what):
    """float32 summation of k terms; a bf16 output adds its final rounding (half a bf16 ulp)."""
    if out.dtype == BF16:
        assert_close_bound(out, ref, k, magnitude, eps=BF16_EPS, c=F32_EPS / BF16_EPS, what=what)
    else:
        assert_close_bound(out, ref, k, magnitude, what=what)


# ---- against float64 ------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_float64(isa, rng, name, layout):
    """Every pass, float32 and bf16 outputs, bias and ReLU, outputs poisoned with NaN before the call."""
    c = CASES[name]
    Ho, Wo = _out_hw(c)
    x = _in_layout(_bf16(rng, (c["N"], c["C"], c["H"], c["W"])), layout)
    w = _bf16(rng, (c["Co"], c["C"] // c["groups"], c["kh"], c["kw"]))
    dy = _in_layout(_bf16(rng, (c["N"], c["Co"], Ho, Wo)), layout)
    bias = rng.standard_normal(c["Co"]).astype(np.float32)
    y_ref, dx_ref, dw_ref = _references(x, w, dy, c)
    y_mag, dx_mag, dw_mag = _references(np.abs(x), np.abs(w), np.abs(dy), c)  # the same sums of |terms|
    k_y, k_dx, k_dw = _term_counts(c)
    y_ref = y_ref + bias[None, :, None, None]
    y_mag = y_mag + np.abs(bias)[None, :, None, None]

    for dtype, relu in ((np.float32, False), (BF16, True), (np.float32, True)):
        y = _poisoned(y_ref.shape, dtype, layout)
        got = conv2d_bf16_forward(x, w, bias, *_hyper(c), relu=relu, out=y, isa=isa)
        assert got is y
        _assert_bound(y, np.maximum(y_ref, 0) if relu else y_ref, k_y + 1, y_mag, f"forward {dtype} relu={relu}")
    for dtype in (np.float32, BF16):
        dx = _poisoned(x.shape, dtype, layout)
        conv2d_bf16_backward_data(dy, w, x.shape, *_hyper(c), out=dx, isa=isa)
        _assert_bound(dx, dx_ref, k_dx, dx_mag, f"backward_data {dtype}")
    dw = np.full(w.shape, np.nan, dtype=np.float32)
    conv2d_bf16_backward_weight(dy, x, w.shape, *_hyper(c), out=dw, isa=isa)
    _assert_bound(dw, dw_ref, k_dw, dw_mag, "backward_weight")


def test_allocated_outputs_take_the_layout_and_dtype_asked_for(rng):
    c = CASES["3x3-s2-p1"]
    x = _bf16(rng, (c["N"], c["C"], c["H"], c["W"]))
    w = _bf16(rng, (c["Co"], c["C"] // c["groups"], c["kh"], c["kw"]))
    y = conv2d_bf16_forward(x, w, None, *_hyper(c))
    assert y.dtype == np.float32 and y.flags.c_contiguous
    x_cl = _in_layout(x, "channels_last")
    y16 = conv2d_bf16_forward(x_cl, w, None, *_hyper(c), out_dtype=BF16)
    assert y16.dtype == BF16 and pn.backend.is_channels_last(y16)
    # One rounding of the same float32 sums (the same layout sums in the same order).
    y_cl = conv2d_bf16_forward(x_cl, w, None, *_hyper(c))
    np.testing.assert_array_equal(y16.astype(np.float32), y_cl.astype(BF16).astype(np.float32))
    dx = conv2d_bf16_backward_data(y.astype(BF16), w, x.shape, *_hyper(c), out_dtype=BF16)
    assert dx.dtype == BF16 and dx.flags.c_contiguous
    # dy in the other layout than x: taken in x's.
    dw = conv2d_bf16_backward_weight(_in_layout(y.astype(BF16), "channels_last"), x, w.shape, *_hyper(c))
    np.testing.assert_array_equal(dw, conv2d_bf16_backward_weight(y.astype(BF16), x, w.shape, *_hyper(c)))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_backward_passes_match_finite_differences(rng, layout):
    """The float64 forward's directional derivatives (central differences, exact for a linear map up to
    float64 rounding) against the kernels' gradients of sum(conv(x, w) * dy)."""
    c = CASES["3x3-s2-p1-d2x1"]
    Ho, Wo = _out_hw(c)
    x = _in_layout(_bf16(rng, (c["N"], c["C"], c["H"], c["W"])), layout)
    w = _bf16(rng, (c["Co"], c["C"] // c["groups"], c["kh"], c["kw"]))
    dy = _in_layout(_bf16(rng, (c["N"], c["Co"], Ho, Wo)), layout)
    x64, w64, dy64 = (np.asarray(a, dtype=np.float64) for a in (x, w, dy))

    def loss(xv, wv):
        return float(np.sum(conv.forward_numpy(xv, wv, *_hyper(c)) * dy64))

    h = 1e-3
    vx, vw = rng.standard_normal(x.shape), rng.standard_normal(w.shape)
    fd_x = (loss(x64 + h * vx, w64) - loss(x64 - h * vx, w64)) / (2 * h)
    fd_w = (loss(x64, w64 + h * vw) - loss(x64, w64 - h * vw)) / (2 * h)
    dx = conv2d_bf16_backward_data(dy, w, x.shape, *_hyper(c))
    dw = conv2d_bf16_backward_weight(dy, x, w.shape, *_hyper(c))
    assert abs(np.sum(dx * vx) - fd_x) <= 1e-5 * np.sum(np.abs(dx * vx))
    assert abs(np.sum(dw * vw) - fd_w) <= 1e-5 * np.sum(np.abs(dw * vw))


def test_matches_torch_bf16_conv(rng):
    torch = pytest.importorskip("torch")
    c = CASES["groups3-s2"]
    x = _bf16(rng, (c["N"], c["C"], c["H"], c["W"]))
    w = _bf16(rng, (c["Co"], c["C"] // c["groups"], c["kh"], c["kw"]))
    ours = conv2d_bf16_forward(x, w, None, *_hyper(c), out_dtype=BF16).astype(np.float32)
    (sh, sw), (ph, pw), (dh, dw), g = _hyper(c)
    theirs = torch.nn.functional.conv2d(torch.from_numpy(x.astype(np.float32)).bfloat16(),
                                        torch.from_numpy(w.astype(np.float32)).bfloat16(),
                                        stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw), groups=g)
    assert rel_err(ours, theirs.float().numpy()) < 2 * BF16_EPS  # both round the fp32 sums once


# ---- the CPU backend under autocast ---------------------------------------------------------------

def _autocast_step(model_inputs, channels_last):
    """One SGD step of conv(3->8, 3x3, p1, bias) -> ReLU -> conv(8->6, 3x3, s2, groups 2, bias) ->
    sum(y * t) under bf16 autocast: the loss, the gradients of x and every fp32 parameter, and the
    parameters after the step."""
    x, w1, b1, w2, b2, t = model_inputs
    params = [pn.tensor(a, requires_grad=True) for a in (w1, b1, w2, b2)]
    xt = pn.tensor(x, requires_grad=True)
    xt_in = xt.to(memory_format=pn.channels_last) if channels_last else xt
    opt = pn.optim.SGD(params, lr=0.1)
    with pn.autocast("cpu", dtype=pn.bfloat16):
        h = F.relu(F.conv2d(xt_in, params[0], params[1], padding=1))
        y = F.conv2d(h, params[2], params[3], stride=2, groups=2)
        loss = (y * pn.tensor(t)).sum()
    opt.zero_grad()
    loss.backward()
    grads = [xt.grad.numpy()] + [p.grad.numpy() for p in params]
    opt.step()
    return float(loss.item()), grads, [p.detach().numpy() for p in params]


def _torch_step(torch, model_inputs, channels_last):
    """_autocast_step's loss and gradients in torch under its CPU autocast."""
    x, w1, b1, w2, b2, t = (torch.from_numpy(a) for a in model_inputs)
    params = [a.clone().requires_grad_() for a in (w1, b1, w2, b2)]
    xt = x.clone().requires_grad_()
    xt_in = xt.to(memory_format=torch.channels_last) if channels_last else xt
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = torch.relu(torch.nn.functional.conv2d(xt_in, params[0], params[1], padding=1))
        y = torch.nn.functional.conv2d(h, params[2], params[3], stride=2, groups=2)
        loss = (y.float() * t).sum()
    loss.backward()
    return float(loss.item()), [xt.grad.numpy()] + [p.grad.numpy() for p in params]


def _autocast_reference(model_inputs):
    """The same step in float64 with bf16 rounding exactly where autocast rounds: each conv's two
    operands, and the fp32 gradient entering each conv's backward; bias gradients and the ReLU mask
    from the unrounded fp32 values. (loss, sum of |y * t|, [gx, gw1, gb1, gw2, gb2])."""
    r = lambda a: np.asarray(a, dtype=np.float32).astype(BF16).astype(np.float64)  # noqa: E731
    x, w1, b1, w2, b2, t = (a.astype(np.float64) for a in model_inputs)
    conf1, conf2 = ((1, 1), (1, 1), (1, 1), 1), ((2, 2), (0, 0), (1, 1), 2)
    z = conv.forward_numpy(r(x), r(w1), *conf1) + b1[None, :, None, None]
    h = r(np.maximum(z, 0))
    y = conv.forward_numpy(h, r(w2), *conf2) + b2[None, :, None, None]
    gy = r(t)
    dz = conv.backward_data_numpy(gy, r(w2), h.shape, *conf2) * (z > 0)
    grads = [conv.backward_data_numpy(r(dz), r(w1), x.shape, *conf1),
             conv.backward_weight_numpy(r(dz), r(x), w1.shape, *conf1), dz.sum((0, 2, 3)),
             conv.backward_weight_numpy(gy, h, w2.shape, *conf2), t.sum((0, 2, 3))]
    return float(np.sum(y * t)), float(np.sum(np.abs(y * t))), grads


@pytest.mark.parametrize("channels_last", [False, True])
def test_autocast_training_step_runs_the_bf16_kernel_and_matches_torch(rng, monkeypatch, channels_last):
    """The backend's conv under bf16 autocast on the bf16 convolution (forced where the CPU's bf16 GEMM
    path would not be chosen for speed), forward and both backwards: fp32 gradients of the fp32
    weights, equal to the float64 step with autocast's roundings up to fp32 summation (1e-3 is a
    quarter of one bf16 rounding of every element), and to torch's CPU autocast at bf16 resolution.
    torch also rounds each conv's output and the gradients between the layers to bf16; the bias and
    input gradients sum hundreds of such terms of both signs, so the relative difference in norm
    reaches 0.11 (the worst of 40 seeds, the first layer's bias) where the sums cancel: the torch
    check catches a wrong tap, layout or sign (an error of order 1), the float64 one the rest."""
    torch = pytest.importorskip("torch")
    calls = []
    for name in ("conv2d_bf16_forward", "conv2d_bf16_backward_data", "conv2d_bf16_backward_weight"):
        original = getattr(conv_bf16, name)
        monkeypatch.setattr(conv_bf16, name, lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    monkeypatch.setattr(cpu_backend, "_bf16_kernel", lambda: True)
    inputs = (rng.standard_normal((2, 3, 11, 10)).astype(np.float32),
              (0.3 * rng.standard_normal((8, 3, 3, 3))).astype(np.float32),
              rng.standard_normal(8).astype(np.float32),
              (0.3 * rng.standard_normal((6, 4, 3, 3))).astype(np.float32),
              rng.standard_normal(6).astype(np.float32),
              rng.standard_normal((2, 6, 5, 4)).astype(np.float32))
    loss, grads, stepped = _autocast_step(inputs, channels_last)
    assert sorted(set(calls)) == ["conv2d_bf16_backward_data", "conv2d_bf16_backward_weight", "conv2d_bf16_forward"]
    assert all(g.dtype == np.float32 for g in grads) and all(p.dtype == np.float32 for p in stepped)
    ref_loss, loss_mag, ref_grads = _autocast_reference(inputs)
    assert abs(loss - ref_loss) <= 1e-4 * loss_mag
    for ours, ref in zip(grads, ref_grads):
        assert rel_err(ours, ref) < 1e-3
    for ours, p0, ref in zip(stepped, inputs[1:5], ref_grads[1:]):
        assert rel_err(ours, p0 - 0.1 * ref) < 1e-5
    t_loss, t_grads = _torch_step(torch, inputs, channels_last)
    assert abs(loss - t_loss) <= 2.0 ** -6 * loss_mag
    for ours, theirs in zip(grads, t_grads):
        assert rel_err(ours, theirs) < 0.25


def test_autocast_conv_takes_the_widened_fp32_kernels_where_the_bf16_gemm_is_slow(rng, monkeypatch):
    monkeypatch.setattr(cpu_backend, "_bf16_kernel", lambda: False)
    monkeypatch.setattr(conv_bf16, "conv2d_bf16_forward", lambda *a, **k: pytest.fail("bf16 kernel called"))
    x = rng.standard_normal((2, 3, 6, 5)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    with pn.autocast("cpu", dtype=pn.bfloat16):
        assert F.conv2d(pn.tensor(x), pn.tensor(w)).dtype == np.float32


# ---- bad input -----------------------------------------------------------------------------------

@pytest.fixture
def operands(rng):
    x = _bf16(rng, (2, 4, 7, 6))
    w = _bf16(rng, (6, 2, 3, 3))
    dy = _bf16(rng, (2, 6, 5, 4))
    return x, w, dy


def test_rejects_float32_input(operands):
    x, w, _ = operands
    shape = r"\(shape \(2, 4, 7, 6\)\)"
    with pytest.raises(TypeError, match=rf"input must have dtype bfloat16, got float32 {shape}.*to_bf16"):
        conv2d_bf16_forward(x.astype(np.float32), w, groups=2)


def test_rejects_float32_weight_and_dy(operands):
    x, w, dy = operands
    with pytest.raises(TypeError, match="weight must have dtype bfloat16, got float32"):
        conv2d_bf16_forward(x, w.astype(np.float32), groups=2)
    with pytest.raises(TypeError, match="dy must have dtype bfloat16, got float32"):
        conv2d_bf16_backward_data(dy.astype(np.float32), w, x.shape, groups=2)
    with pytest.raises(TypeError, match="dy must have dtype bfloat16, got float64"):
        conv2d_bf16_backward_weight(dy.astype(np.float64), x, w.shape, groups=2)


def test_rejects_bf16_bias(operands):
    x, w, _ = operands
    with pytest.raises(TypeError, match=r"bias must be a float32 numpy.ndarray of shape \(6,\), got bfloat16"):
        conv2d_bf16_forward(x, w, np.zeros(6, dtype=BF16), groups=2)


def test_rejects_bias_of_wrong_shape(operands):
    x, w, _ = operands
    with pytest.raises(ValueError, match=r"bias must have shape \(6,\)"):
        conv2d_bf16_forward(x, w, np.zeros(5, dtype=np.float32), groups=2)


def test_rejects_channel_mismatch(operands):
    x, w, _ = operands
    with pytest.raises(ValueError, match=r"input has 4 channels, weight expects 2 \(groups=1\)"):
        conv2d_bf16_forward(x, w)


def test_rejects_wrong_rank(operands):
    x, w, _ = operands
    with pytest.raises(ValueError, match=r"input must have 4 dimensions, got shape \(2, 4, 42\)"):
        conv2d_bf16_forward(x.reshape(2, 4, 42), w, groups=2)


def test_rejects_dy_of_wrong_shape(operands):
    x, w, dy = operands
    with pytest.raises(ValueError, match=r"dy must have shape \(2, 6, 5, 4\)"):
        conv2d_bf16_backward_data(dy[:, :, :4], w, x.shape, groups=2)
    with pytest.raises(ValueError, match=r"dy must have shape \(2, 6, 5, 4\)"):
        conv2d_bf16_backward_weight(dy[:1], x, w.shape, groups=2)


def test_rejects_bad_outputs(operands):
    x, w, dy = operands
    with pytest.raises(TypeError, match="out_dtype must be float32 or bfloat16, got float16"):
        conv2d_bf16_forward(x, w, groups=2, out_dtype=np.float16)
    with pytest.raises(TypeError, match="out must be a numpy.ndarray of float32 or bfloat16, got float64"):
        conv2d_bf16_forward(x, w, groups=2, out=np.empty((2, 6, 5, 4)))
    with pytest.raises(ValueError, match=r"out must have shape \(2, 6, 5, 4\), got \(2, 6, 5, 5\)"):
        conv2d_bf16_forward(x, w, groups=2, out=np.empty((2, 6, 5, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="out must be C-contiguous"):
        conv2d_bf16_forward(x, w, groups=2, out=_in_layout(np.empty((2, 6, 5, 4), np.float32), "channels_last"))
    with pytest.raises(ValueError, match="out must be channels_last"):
        conv2d_bf16_backward_data(_in_layout(dy, "channels_last"), w, x.shape, groups=2,
                                  out=np.empty(x.shape, np.float32))
    with pytest.raises(TypeError, match="out must be a numpy.ndarray of float32, got bfloat16"):
        conv2d_bf16_backward_weight(dy, x, w.shape, groups=2, out=np.empty(w.shape, BF16))


def test_rejects_unknown_and_unavailable_isa(operands):
    x, w, _ = operands
    with pytest.raises(ValueError, match="isa must be one of"):
        conv2d_bf16_forward(x, w, groups=2, isa="avx2")
    missing = [name for name in bf16.GEMM_ISAS if name not in bf16.available_gemm_isas()]
    if not missing:
        pytest.skip("every bf16 GEMM path is available here")
    with pytest.raises(ValueError, match=f"path '{missing[0]}' is not available"):
        conv2d_bf16_forward(x, w, groups=2, isa=missing[0])
