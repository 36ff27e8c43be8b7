"""2-D convolution kernels (pyneural.kernels.conv): float32 C++ against the float64 numpy path on
every ISA path and every way of sharing the threads, in NCHW and in channels_last (NHWC memory, OHWI
weights); the numpy path itself against a naive direct convolution, finite differences and the
adjoint identity; torch when it is installed (channels_last too); and one test per kind of bad input."""
import itertools

import numpy as np
import pytest
from conftest import assert_close_bound, poisoned, rel_err

from pyneural import _C
from pyneural.kernels import conv
from pyneural.kernels.conv import conv2d_backward_data, conv2d_backward_weight, conv2d_forward

TOL = 1e-5
PARALLEL = ("auto", "images", "gemm")


def _case(N, C, H, W, Co, kh, kw, stride=1, padding=0, dilation=1, groups=1):
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    return dict(N=N, C=C, H=H, W=W, Co=Co, kh=kh, kw=kw, stride=pair(stride), padding=pair(padding),
                dilation=pair(dilation), groups=groups)


# Sizes are odd on purpose: nothing divides the microkernel tiles (14 x 32, 6 x 16, 4 x 8) or the
# packers' 512-column chunks.
CASES = {
    "3x3-s1-p1": _case(3, 5, 9, 11, 7, 3, 3, 1, 1),
    "3x3-s2-p1": _case(2, 6, 13, 10, 9, 3, 3, 2, 1),
    "3x3-s3-p2": _case(2, 4, 14, 17, 5, 3, 3, 3, 2),
    "3x3-s2x3-p2x0": _case(2, 3, 12, 15, 4, 3, 3, (2, 3), (2, 0)),
    "3x3-p0x1-d2": _case(2, 4, 11, 9, 6, 3, 3, 1, (0, 1), 2),
    "3x3-s2-p1-d2x1": _case(3, 4, 12, 11, 5, 3, 3, 2, 1, (2, 1)),
    "5x3-s1-p2x1": _case(2, 3, 10, 9, 8, 5, 3, 1, (2, 1)),
    "5x3-s2x1-p0x2-d1x2": _case(2, 5, 13, 8, 3, 5, 3, (2, 1), (0, 2), (1, 2)),
    "1x1": _case(3, 9, 7, 5, 11, 1, 1),
    "1x1-s2": _case(2, 6, 9, 8, 5, 1, 1, 2),
    "1x1-p1": _case(2, 5, 6, 7, 4, 1, 1, 1, 1),
    "2x2-s3": _case(2, 3, 11, 10, 4, 2, 2, 3),
    "groups2": _case(2, 6, 9, 10, 8, 3, 3, 1, 1, 1, 2),
    "groups3-s2": _case(3, 9, 11, 8, 6, 3, 3, 2, 1, 1, 3),
    "depthwise": _case(2, 8, 10, 9, 8, 3, 3, 1, 1, 1, 8),
    "depthwise-x2-s2": _case(2, 5, 11, 12, 10, 3, 3, 2, 1, 1, 5),
    "N1": _case(1, 4, 12, 13, 6, 3, 3, 1, 1),
    "kernel-fills-input": _case(2, 3, 5, 4, 4, 5, 4),
    "small-images-batch": _case(37, 3, 6, 5, 7, 3, 3, 1, 1),
    # K = 70*9 > the GEMM's K block, Ho*Wo = 2601 > its N panel and several packer chunks.
    "deep-and-wide": _case(2, 70, 51, 51, 17, 3, 3, 1, 1),
    # Backward-data's weight transpose (conv_tasks.h) in its 8 x 8 tiles of channels: 91 x 83 x 9
    # weights take the threaded path, and 21 -> 19 channels per group end in partial tiles.
    "many-channels": _case(2, 91, 6, 7, 83, 3, 3, 1, 1),
    "groups2-s2-partial-tiles": _case(2, 42, 7, 9, 38, 3, 3, 2, 1, 1, 2),
}


def _inputs(rng, c, dtype=np.float32):
    x = rng.standard_normal((c["N"], c["C"], c["H"], c["W"])).astype(dtype)
    w = rng.standard_normal((c["Co"], c["C"] // c["groups"], c["kh"], c["kw"])).astype(dtype)
    return x, w


def _hyper(c):
    return c["stride"], c["padding"], c["dilation"], c["groups"]


def _out_hw(c):
    return tuple((size + 2 * p - d * (k - 1) - 1) // s + 1
                 for size, k, s, p, d in zip((c["H"], c["W"]), (c["kh"], c["kw"]), c["stride"], c["padding"],
                                             c["dilation"]))


def _references(x, w, dy, c):
    """float64 numpy forward, backward-data and backward-weight of float32 inputs."""
    x64, w64, dy64 = (a.astype(np.float64) for a in (x, w, dy))
    return (conv.forward_numpy(x64, w64, *_hyper(c)),
            conv.backward_data_numpy(dy64, w64, x.shape, *_hyper(c)),
            conv.backward_weight_numpy(dy64, x64, w.shape, *_hyper(c)))


def _term_counts(c):
    """How many products each output element of forward, backward-data and backward-weight sums
    (backward-data: at most; a stride skips some): the k of their rounding bounds."""
    Ho, Wo = _out_hw(c)
    taps = c["kh"] * c["kw"]
    return c["C"] // c["groups"] * taps, c["Co"] // c["groups"] * taps, c["N"] * Ho * Wo


# ---- float32 C++ against float64 numpy -------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CASES))
def test_float32_kernels_match_numpy(isa, rng, name):
    """Every pass, every thread-sharing strategy, outputs poisoned with NaN before the call."""
    c = CASES[name]
    x, w = _inputs(rng, c)
    Ho, Wo = _out_hw(c)
    dy = rng.standard_normal((c["N"], c["Co"], Ho, Wo)).astype(np.float32)
    y_ref, dx_ref, dw_ref = _references(x, w, dy, c)
    y_mag, dx_mag, dw_mag = _references(np.abs(x), np.abs(w), np.abs(dy), c)  # the same sums of |terms|
    k_y, k_dx, k_dw = _term_counts(c)
    for parallel in PARALLEL:
        y = poisoned(y_ref.shape)
        _C.conv2d_forward(x, w, None, y, *_hyper(c), False, parallel)
        assert rel_err(y, y_ref) < TOL, ("forward", parallel)
        assert_close_bound(y, y_ref, k_y, y_mag, what=f"forward ({parallel})")
        dx = poisoned(x.shape)
        _C.conv2d_backward_data(dy, w, dx, *_hyper(c), parallel)
        assert rel_err(dx, dx_ref) < TOL, ("backward_data", parallel)
        assert_close_bound(dx, dx_ref, k_dx, dx_mag, what=f"backward_data ({parallel})")
        dw = poisoned(w.shape)
        _C.conv2d_backward_weight(dy, x, dw, *_hyper(c), parallel)
        assert rel_err(dw, dw_ref) < TOL, ("backward_weight", parallel)
        assert_close_bound(dw, dw_ref, k_dw, dw_mag, what=f"backward_weight ({parallel})")


@pytest.mark.parametrize("name", ["3x3-s2-p1", "groups2", "small-images-batch"])
def test_public_functions_float32(rng, name):
    """The entry points the framework calls, ints and pairs for the hyper-parameters."""
    c = CASES[name]
    x, w = _inputs(rng, c)
    Ho, Wo = _out_hw(c)
    dy = rng.standard_normal((c["N"], c["Co"], Ho, Wo)).astype(np.float32)
    y_ref, dx_ref, dw_ref = _references(x, w, dy, c)
    kw = dict(stride=c["stride"], padding=list(c["padding"]), dilation=c["dilation"], groups=c["groups"])
    y = conv2d_forward(x, w, **kw)
    assert y.dtype == np.float32 and y.shape == y_ref.shape
    assert rel_err(y, y_ref) < TOL
    dx = conv2d_backward_data(dy, w, x.shape, **kw)
    assert dx.dtype == np.float32 and rel_err(dx, dx_ref) < TOL
    dw = conv2d_backward_weight(dy, x, w.shape, **kw)
    assert dw.dtype == np.float32 and rel_err(dw, dw_ref) < TOL


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("name", ["3x3-s1-p1", "small-images-batch", "groups3-s2"])
def test_bias_and_relu_epilogue(isa, rng, name, relu):
    c = CASES[name]
    x, w = _inputs(rng, c)
    bias = rng.standard_normal(c["Co"]).astype(np.float32)
    ref = conv.forward_numpy(x.astype(np.float64), w.astype(np.float64), *_hyper(c)) + bias[None, :, None, None]
    if relu:
        ref = np.maximum(ref, 0)
    for parallel in PARALLEL:
        y = poisoned(ref.shape)
        _C.conv2d_forward(x, w, bias, y, *_hyper(c), relu, parallel)
        assert rel_err(y, ref) < TOL, parallel
    if relu:
        assert np.all(y >= 0)
    y64 = conv2d_forward(x.astype(np.float64), w.astype(np.float64), bias.astype(np.float64), *_hyper(c), relu=relu)
    assert y64.dtype == np.float64 and rel_err(y64, ref) < 1e-12


def test_digits_layer_shapes(rng):
    """The framework's digits CNN: 8x8 images, 1->32 and 32->64 channels, 3x3, pad 1."""
    for N, C, Co in [(33, 1, 32), (65, 32, 64)]:
        c = _case(N, C, 8, 8, Co, 3, 3, 1, 1)
        x, w = _inputs(rng, c)
        dy = rng.standard_normal((N, Co, 8, 8)).astype(np.float32)
        y_ref, dx_ref, dw_ref = _references(x, w, dy, c)
        assert rel_err(conv2d_forward(x, w, padding=1), y_ref) < TOL
        assert rel_err(conv2d_backward_data(dy, w, x.shape, padding=1), dx_ref) < TOL
        assert rel_err(conv2d_backward_weight(dy, x, w.shape, padding=1), dw_ref) < TOL


def test_repeatable(rng):
    """Same inputs, same bits: backward-weight's per-thread partial sums are reduced in a fixed order."""
    c = CASES["small-images-batch"]
    x, w = _inputs(rng, c)
    dy = rng.standard_normal((c["N"], c["Co"], *_out_hw(c))).astype(np.float32)
    first = conv2d_backward_weight(dy, x, w.shape, padding=1)
    for _ in range(3):
        np.testing.assert_array_equal(conv2d_backward_weight(dy, x, w.shape, padding=1), first)


# ---- the float64 numpy path itself -----------------------------------------------------------

def _direct_conv(x, w, stride, padding, dilation, groups):
    """The definition, one output element at a time (the seven loops, the group picking c)."""
    N, C, H, W = x.shape
    Co, Cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((N, Co, Ho, Wo))
    for n, co, oh, ow in itertools.product(range(N), range(Co), range(Ho), range(Wo)):
        g = co // (Co // groups)
        acc = 0.0
        for c, i, j in itertools.product(range(Cg), range(kh), range(kw)):
            ih, iw = oh * sh - ph + i * dh, ow * sw - pw + j * dw
            if 0 <= ih < H and 0 <= iw < W:
                acc += x[n, g * Cg + c, ih, iw] * w[co, c, i, j]
        y[n, co, oh, ow] = acc
    return y


TINY = {
    "3x3-s1-p1": _case(2, 2, 4, 5, 3, 3, 3, 1, 1),
    "3x2-s2x1-p1x0-d1x2": _case(1, 3, 6, 7, 2, 3, 2, (2, 1), (1, 0), (1, 2)),
    "groups2-s2-p2": _case(2, 4, 5, 5, 4, 2, 3, 2, 2, 1, 2),
    "depthwise-d2": _case(1, 3, 6, 5, 3, 2, 2, 1, 1, 2, 3),
    "1x1-s3-p1": _case(1, 2, 5, 4, 3, 1, 1, 3, 1),
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_numpy_forward_matches_direct_loops(rng, name):
    c = TINY[name]
    x, w = _inputs(rng, c, np.float64)
    want = _direct_conv(x, w, *_hyper(c))
    got = conv2d_forward(x, w, None, *_hyper(c))
    assert got.dtype == np.float64
    assert rel_err(got, want) < 1e-12


@pytest.mark.parametrize("name", sorted(TINY))
def test_numpy_backward_matches_finite_differences(rng, name):
    """The convolution is linear, so f(x + e_i) - f(x) with f = <conv(x, w), dy> is exactly
    d f / d x_i (likewise for w): the full gradients, element by element, from the forward alone."""
    c = TINY[name]
    x, w = _inputs(rng, c, np.float64)
    dy = rng.standard_normal((c["N"], c["Co"], *_out_hw(c)))
    f = lambda xx, ww: np.sum(conv.forward_numpy(xx, ww, *_hyper(c)) * dy)  # noqa: E731
    base = f(x, w)
    dx_fd, dw_fd = np.zeros_like(x), np.zeros_like(w)
    for idx in np.ndindex(*x.shape):
        e = np.zeros_like(x)
        e[idx] = 1.0
        dx_fd[idx] = f(x + e, w) - base
    for idx in np.ndindex(*w.shape):
        e = np.zeros_like(w)
        e[idx] = 1.0
        dw_fd[idx] = f(x, w + e) - base
    assert rel_err(conv2d_backward_data(dy, w, x.shape, *_hyper(c)), dx_fd) < 1e-9
    assert rel_err(conv2d_backward_weight(dy, x, w.shape, *_hyper(c)), dw_fd) < 1e-9


@pytest.mark.parametrize("name", sorted(CASES))
def test_numpy_adjoint_identity(rng, name):
    """<conv(x, w), dy> = <x, bwd_data(dy, w)> = <w, bwd_weight(dy, x)> in float64, on the larger
    cases too (finite differences would be too slow there)."""
    c = CASES[name]
    x, w = _inputs(rng, c, np.float64)
    dy = rng.standard_normal((c["N"], c["Co"], *_out_hw(c)))
    y = conv2d_forward(x, w, None, *_hyper(c))
    lhs = np.vdot(y, dy)
    scale = np.linalg.norm(y) * np.linalg.norm(dy)
    assert abs(np.vdot(x, conv2d_backward_data(dy, w, x.shape, *_hyper(c))) - lhs) < 1e-12 * scale
    assert abs(np.vdot(w, conv2d_backward_weight(dy, x, w.shape, *_hyper(c))) - lhs) < 1e-12 * scale


# ---- torch, when installed -------------------------------------------------------------------

@pytest.mark.parametrize("name", ["3x3-s2-p1", "5x3-s2x1-p0x2-d1x2", "groups3-s2", "depthwise-x2-s2", "1x1-p1"])
def test_against_torch(rng, name):
    torch = pytest.importorskip("torch")
    c = CASES[name]
    x, w = _inputs(rng, c)
    bias = rng.standard_normal(c["Co"]).astype(np.float32)
    dy = rng.standard_normal((c["N"], c["Co"], *_out_hw(c))).astype(np.float32)
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    tw = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    ty = torch.nn.functional.conv2d(tx, tw, torch.tensor(bias, dtype=torch.float64), c["stride"], c["padding"],
                                    c["dilation"], c["groups"])
    ty.backward(torch.tensor(dy, dtype=torch.float64))
    assert rel_err(conv2d_forward(x, w, bias, *_hyper(c)), ty.detach().numpy()) < TOL
    assert rel_err(conv2d_backward_data(dy, w, x.shape, *_hyper(c)), tx.grad.numpy()) < TOL
    assert rel_err(conv2d_backward_weight(dy, x, w.shape, *_hyper(c)), tw.grad.numpy()) < TOL


# ---- channels_last: NHWC tensors, OHWI weights ------------------------------------------------

def _nhwc(a):
    """NCHW (OIHW) -> the C-contiguous NHWC (OHWI) array of the same values."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def _nchw(a):
    return a.transpose(0, 3, 1, 2)


@pytest.mark.parametrize("name", sorted(CASES))
def test_nhwc_kernels_match_the_nchw_reference(isa, rng, name):
    """The NHWC kernels against the float64 NCHW reference: every pass, every thread-sharing
    strategy, the bias + ReLU epilogue, outputs poisoned with NaN before the call."""
    c = CASES[name]
    x, w = _inputs(rng, c)
    Ho, Wo = _out_hw(c)
    dy = rng.standard_normal((c["N"], c["Co"], Ho, Wo)).astype(np.float32)
    bias = rng.standard_normal(c["Co"]).astype(np.float32)
    y_ref, dx_ref, dw_ref = _references(x, w, dy, c)
    y_mag, dx_mag, dw_mag = _references(np.abs(x), np.abs(w), np.abs(dy), c)
    k_y, k_dx, k_dw = _term_counts(c)
    b = bias[None, :, None, None].astype(np.float64)
    yb_ref, yb_mag = np.maximum(y_ref + b, 0), y_mag + np.abs(b)  # ReLU is 1-Lipschitz: the bound holds
    xn, wn, dyn = _nhwc(x), _nhwc(w), _nhwc(dy)
    for parallel in PARALLEL:
        y = poisoned((c["N"], Ho, Wo, c["Co"]))
        _C.conv2d_forward(xn, wn, None, y, *_hyper(c), False, parallel, nhwc=True)
        assert_close_bound(_nchw(y), y_ref, k_y, y_mag, what=f"NHWC forward ({parallel})")
        y = poisoned((c["N"], Ho, Wo, c["Co"]))
        _C.conv2d_forward(xn, wn, bias, y, *_hyper(c), True, parallel, nhwc=True)
        assert_close_bound(_nchw(y), yb_ref, k_y + 1, yb_mag, what=f"NHWC forward + bias + ReLU ({parallel})")
        dx = poisoned(xn.shape)
        _C.conv2d_backward_data(dyn, wn, dx, *_hyper(c), parallel, nhwc=True)
        assert_close_bound(_nchw(dx), dx_ref, k_dx, dx_mag, what=f"NHWC backward_data ({parallel})")
        dw = poisoned(wn.shape)
        _C.conv2d_backward_weight(dyn, xn, dw, *_hyper(c), parallel, nhwc=True)
        assert_close_bound(_nchw(dw), dw_ref, k_dw, dw_mag, what=f"NHWC backward_weight ({parallel})")


@pytest.mark.parametrize("name", ["3x3-s2-p1", "groups3-s2", "1x1", "5x3-s2x1-p0x2-d1x2"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nhwc_public_functions(rng, name, dtype):
    """layout="NHWC" through pyneural.kernels.conv, float32 (the kernels) and float64 (numpy on NCHW views)."""
    c = CASES[name]
    x, w = (a.astype(dtype) for a in _inputs(rng, c))
    dy = rng.standard_normal((c["N"], c["Co"], *_out_hw(c))).astype(dtype)
    tol = TOL if dtype == np.float32 else 1e-12
    y = conv2d_forward(_nhwc(x), _nhwc(w), None, *_hyper(c), layout="NHWC")
    assert y.dtype == dtype and y.flags.c_contiguous
    assert rel_err(_nchw(y), conv2d_forward(x, w, None, *_hyper(c))) < tol
    dx = conv2d_backward_data(_nhwc(dy), _nhwc(w), _nhwc(x).shape, *_hyper(c), layout="NHWC")
    assert rel_err(_nchw(dx), conv2d_backward_data(dy, w, x.shape, *_hyper(c))) < tol
    dw = conv2d_backward_weight(_nhwc(dy), _nhwc(x), _nhwc(w).shape, *_hyper(c), layout="NHWC")
    assert rel_err(_nchw(dw), conv2d_backward_weight(dy, x, w.shape, *_hyper(c))) < tol


@pytest.mark.parametrize("name", ["3x3-s2-p1", "groups2", "1x1-s2"])
def test_nhwc_against_torch_channels_last(rng, name):
    torch = pytest.importorskip("torch")
    c = CASES[name]
    x, w = _inputs(rng, c)
    bias = rng.standard_normal(c["Co"]).astype(np.float32)
    dy = rng.standard_normal((c["N"], c["Co"], *_out_hw(c))).astype(np.float32)
    cl = torch.channels_last
    tx = torch.tensor(x, dtype=torch.float64).to(memory_format=cl).requires_grad_()
    tw = torch.tensor(w, dtype=torch.float64).to(memory_format=cl).requires_grad_()
    ty = torch.nn.functional.conv2d(tx, tw, torch.tensor(bias, dtype=torch.float64), c["stride"], c["padding"],
                                    c["dilation"], c["groups"])
    ty.backward(torch.tensor(dy, dtype=torch.float64).to(memory_format=cl))
    y = conv2d_forward(_nhwc(x), _nhwc(w), bias, *_hyper(c), layout="NHWC")
    assert rel_err(_nchw(y), ty.detach().numpy()) < TOL
    dx = conv2d_backward_data(_nhwc(dy), _nhwc(w), _nhwc(x).shape, *_hyper(c), layout="NHWC")
    assert rel_err(_nchw(dx), tx.grad.numpy()) < TOL
    dw = conv2d_backward_weight(_nhwc(dy), _nhwc(x), _nhwc(w).shape, *_hyper(c), layout="NHWC")
    assert rel_err(_nchw(dw), tw.grad.numpy()) < TOL


def test_nhwc_rejects_bad_layout_and_shapes(xw):
    x, w = xw
    with pytest.raises(ValueError, match="layout must be 'NCHW' or 'NHWC'"):
        conv2d_forward(x, w, layout="NWHC")
    with pytest.raises(ValueError, match="input has 6 channels, weight expects 4"):  # NCHW x read as NHWC
        conv2d_forward(x, _nhwc(w), layout="NHWC")
    with pytest.raises(ValueError, match=r"expected shape \(2, 4, 4, 5\)"):
        _C.conv2d_forward(_nhwc(x), _nhwc(w), None, np.empty((2, 5, 4, 4), np.float32), (1, 1), (0, 0), (1, 1), 1,
                          nhwc=True)
    with pytest.raises(ValueError, match="dy must have shape"):
        conv2d_backward_data(np.zeros((2, 5, 4, 4), np.float32), _nhwc(w), (2, 6, 6, 4), layout="NHWC")


# ---- bad input: one test per case ------------------------------------------------------------

@pytest.fixture
def xw(rng):
    return (rng.standard_normal((2, 4, 6, 6)).astype(np.float32),
            rng.standard_normal((5, 4, 3, 3)).astype(np.float32))


def test_rejects_integer_input(xw):
    x, w = xw
    with pytest.raises(TypeError, match="input must have dtype"):
        conv2d_forward(x.astype(np.int32), w)


def test_rejects_mixed_dtypes(xw):
    x, w = xw
    with pytest.raises(TypeError, match="input=float32, weight=float64"):
        conv2d_forward(x, w.astype(np.float64))


def test_rejects_mixed_bias_dtype(xw):
    x, w = xw
    with pytest.raises(TypeError, match="bias=float64"):
        conv2d_forward(x, w, np.zeros(5))


def test_rejects_wrong_rank(xw):
    x, w = xw
    with pytest.raises(ValueError, match=r"input must have 4 dimensions, got shape \(4, 6, 6\)"):
        conv2d_forward(x[0], w)


def test_rejects_channel_mismatch(xw):
    x, w = xw
    with pytest.raises(ValueError, match=r"conv2d: input has 3 channels, weight expects 4 \(groups=1\)"):
        conv2d_forward(np.ascontiguousarray(x[:, :3]), w)


def test_rejects_input_channels_not_divisible_by_groups(rng):
    x = rng.standard_normal((1, 5, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    with pytest.raises(ValueError, match=r"input channels \(5\) are not divisible by groups=2"):
        conv2d_forward(x, w, groups=2)


def test_rejects_output_channels_not_divisible_by_groups(xw):
    x, w = xw
    with pytest.raises(ValueError, match=r"output channels \(5\) are not divisible by groups=2"):
        conv2d_forward(x, np.ascontiguousarray(w[:, :2]), groups=2)


def test_rejects_negative_padding(xw):
    with pytest.raises(ValueError, match="padding must be >= 0"):
        conv2d_forward(*xw, padding=(1, -1))


def test_rejects_zero_stride(xw):
    with pytest.raises(ValueError, match="stride must be >= 1"):
        conv2d_forward(*xw, stride=0)


def test_rejects_zero_dilation(xw):
    with pytest.raises(ValueError, match="dilation must be >= 1"):
        conv2d_forward(*xw, dilation=(1, 0))


def test_rejects_bad_pair(xw):
    with pytest.raises(ValueError, match="stride must be an int or a pair"):
        conv2d_forward(*xw, stride=(1, 2, 3))


def test_rejects_bad_groups(xw):
    with pytest.raises(ValueError, match="groups must be >= 1"):
        conv2d_forward(*xw, groups=0)


def test_rejects_non_int_groups(xw):
    with pytest.raises(TypeError, match="groups must be an int"):
        conv2d_forward(*xw, groups=1.0)


def test_rejects_kernel_larger_than_padded_input(xw):
    x, w = xw
    with pytest.raises(ValueError, match="dilated kernel height 5 .* larger than the padded input height 4"):
        conv2d_forward(np.ascontiguousarray(x[:, :, :4]), w, dilation=2)


def test_rejects_zero_size_dimension(xw):
    x, w = xw
    with pytest.raises(ValueError, match="zero-size"):
        conv2d_forward(x[:0], w)


def test_rejects_non_contiguous_input(xw):
    x, w = xw
    with pytest.raises(ValueError, match="input must be C-contiguous"):
        conv2d_forward(x[:, :, :, ::-1], w)


def test_rejects_bias_of_wrong_shape(xw):
    with pytest.raises(ValueError, match=r"bias must have shape \(5,\)"):
        conv2d_forward(*xw, np.zeros(4, np.float32))


def test_backward_data_rejects_wrong_dy_shape(xw):
    x, w = xw
    with pytest.raises(ValueError, match=r"dy must have shape \(2, 5, 4, 4\)"):
        conv2d_backward_data(np.zeros((2, 5, 6, 6), np.float32), w, x.shape)


def test_backward_data_rejects_bad_x_shape(xw):
    _, w = xw
    with pytest.raises(ValueError, match="x_shape must have 4 entries"):
        conv2d_backward_data(np.zeros((2, 5, 4, 4), np.float32), w, (2, 4, 6))


def test_backward_weight_rejects_wrong_dy_shape(xw):
    x, w = xw
    with pytest.raises(ValueError, match=r"dy must have shape \(2, 5, 2, 2\)"):
        conv2d_backward_weight(np.zeros((2, 5, 4, 4), np.float32), x, w.shape, stride=2)


def test_backward_weight_rejects_channel_mismatch(xw):
    x, w = xw
    with pytest.raises(ValueError, match="input has 4 channels, weight expects 6"):
        conv2d_backward_weight(np.zeros((2, 5, 4, 4), np.float32), x, (5, 6, 3, 3))


# The binding checks for itself, whatever Python hands it: never an out-of-bounds access.

def test_binding_rejects_output_of_wrong_shape(xw):
    x, w = xw
    with pytest.raises(ValueError, match=r"y: expected shape \(2, 5, 4, 4\), got \(2, 5, 4, 5\)"):
        _C.conv2d_forward(x, w, None, np.empty((2, 5, 4, 5), np.float32), (1, 1), (0, 0), (1, 1), 1)


def test_binding_rejects_output_of_wrong_dtype(xw):
    x, w = xw
    with pytest.raises(ValueError, match="y: expected dtype float32"):
        _C.conv2d_forward(x, w, None, np.empty((2, 5, 4, 4)), (1, 1), (0, 0), (1, 1), 1)


def test_binding_rejects_read_only_output(xw):
    x, w = xw
    y = np.empty((2, 5, 4, 4), np.float32)
    y.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        _C.conv2d_forward(x, w, None, y, (1, 1), (0, 0), (1, 1), 1)


def test_binding_rejects_non_contiguous_output(xw):
    x, w = xw
    y = np.empty((2, 5, 4, 8), np.float32)[..., ::2]
    with pytest.raises(ValueError, match="C-contiguous"):
        _C.conv2d_forward(x, w, None, y, (1, 1), (0, 0), (1, 1), 1)


def test_binding_rejects_output_overlapping_input(rng):
    x = rng.standard_normal((1, 4, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 4, 1, 1)).astype(np.float32)
    with pytest.raises(ValueError, match="must not overlap"):
        _C.conv2d_forward(x, w, None, x, (1, 1), (0, 0), (1, 1), 1)


def test_binding_rejects_inconsistent_backward_shapes(xw):
    x, w = xw
    with pytest.raises(ValueError, match=r"dy: expected shape \(2, 5, 4, 4\)"):
        _C.conv2d_backward_data(np.zeros((2, 5, 5, 5), np.float32), w, np.empty_like(x), (1, 1), (0, 0), (1, 1), 1)
    with pytest.raises(ValueError, match="input has 4 channels, weight expects 8"):
        _C.conv2d_backward_weight(np.zeros((2, 5, 4, 4), np.float32), x, np.empty((5, 8, 3, 3), np.float32),
                                  (1, 1), (0, 0), (1, 1), 1)


def test_binding_rejects_bad_hyper_parameters(xw):
    x, w = xw
    y = np.empty((2, 5, 4, 4), np.float32)
    for stride, padding, dilation, groups, match in [
            ((0, 1), (0, 0), (1, 1), 1, "stride"), ((1, 1), (-1, 0), (1, 1), 1, "padding"),
            ((1, 1), (0, 0), (1, -2), 1, "dilation"), ((1, 1), (0, 0), (1, 1), 0, "groups"),
            ((1, 1), (1 << 40, 0), (1, 1), 1, "below 2\\^30")]:
        with pytest.raises(ValueError, match=match):
            _C.conv2d_forward(x, w, None, y, stride, padding, dilation, groups)


def test_binding_rejects_bias_of_wrong_shape(xw):
    x, w = xw
    with pytest.raises(ValueError, match=r"bias: expected shape \(5,\)"):
        _C.conv2d_forward(x, w, np.zeros(6, np.float32), np.empty((2, 5, 4, 4), np.float32), (1, 1), (0, 0),
                          (1, 1), 1)


def test_binding_rejects_unknown_parallel_mode(xw):
    x, w = xw
    with pytest.raises(ValueError, match="parallel must be 'auto', 'images' or 'gemm'"):
        _C.conv2d_forward(x, w, None, np.empty((2, 5, 4, 4), np.float32), (1, 1), (0, 0), (1, 1), 1, False,
                          "threads")
