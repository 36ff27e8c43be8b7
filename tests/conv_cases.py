"""Shared by the tests of the direct convolution kernels (test_conv_depthwise.py, test_conv_direct.py):
a case is a dict of one convolution's sizes and hyper-parameters; these run its three passes through
_C into NaN-poisoned outputs and hold each to float64 numpy within the summation's rounding bound."""
import subprocess
import sys

import numpy as np
from conftest import assert_close_bound, poisoned, subprocess_env

from pyneural import _C
from pyneural.kernels import conv


PASSES = ("forward", "backward-data", "backward-weight")


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def case(N, C, H, W, Co, kh, kw, stride=1, padding=0, dilation=1, groups=1):
    return dict(N=N, C=C, H=H, W=W, Co=Co, kh=kh, kw=kw, stride=pair(stride), padding=pair(padding),
                dilation=pair(dilation), groups=groups)


def hyper(c):
    return c["stride"], c["padding"], c["dilation"], c["groups"]


def out_hw(c):
    return tuple((size + 2 * p - d * (k - 1) - 1) // s + 1
                 for size, k, s, p, d in zip((c["H"], c["W"]), (c["kh"], c["kw"]), c["stride"], c["padding"],
                                             c["dilation"]))


def operands(rng, c):
    """x, w, dy and a bias of the case, standard normal float32."""
    x = rng.standard_normal((c["N"], c["C"], c["H"], c["W"])).astype(np.float32)
    w = rng.standard_normal((c["Co"], c["C"] // c["groups"], c["kh"], c["kw"])).astype(np.float32)
    dy = rng.standard_normal((c["N"], c["Co"], *out_hw(c))).astype(np.float32)
    bias = rng.standard_normal(c["Co"]).astype(np.float32)
    return x, w, dy, bias


def run_passes(x, w, dy, bias, c, relu, parallel="auto"):
    """(y, dx, dw): forward with bias (and ReLU), backward-data, backward-weight."""
    y = poisoned(dy.shape)
    _C.conv2d_forward(x, w, bias, y, *hyper(c), relu, parallel)
    dx = poisoned(x.shape)
    _C.conv2d_backward_data(dy, w, dx, *hyper(c), parallel)
    dw = poisoned(w.shape)
    _C.conv2d_backward_weight(dy, x, dw, *hyper(c), parallel)
    return y, dx, dw


def check_float64(outputs, x, w, dy, bias, c, relu, what):
    """Each pass against float64 numpy: a forward output sums C/groups * kh*kw products and the bias,
    a dx element Co/groups * kh*kw, a dw element N*Ho*Wo."""
    y, dx, dw = outputs
    x64, w64, dy64 = (a.astype(np.float64) for a in (x, w, dy))
    taps, (Ho, Wo) = c["kh"] * c["kw"], out_hw(c)
    pre = conv.forward_numpy(x64, w64, *hyper(c)) + bias[None, :, None, None]
    y_mag = conv.forward_numpy(np.abs(x64), np.abs(w64), *hyper(c)) + np.abs(bias)[None, :, None, None]
    assert_close_bound(y, np.maximum(pre, 0) if relu else pre, c["C"] // c["groups"] * taps + 1, y_mag,
                       what=f"forward ({what})")
    assert_close_bound(dx, conv.backward_data_numpy(dy64, w64, x.shape, *hyper(c)), c["Co"] // c["groups"] * taps,
                       conv.backward_data_numpy(np.abs(dy64), np.abs(w64), x.shape, *hyper(c)),
                       what=f"backward-data ({what})")
    assert_close_bound(dw, conv.backward_weight_numpy(dy64, x64, w.shape, *hyper(c)), c["N"] * Ho * Wo,
                       conv.backward_weight_numpy(np.abs(dy64), np.abs(x64), w.shape, *hyper(c)),
                       what=f"backward-weight ({what})")


def assert_agrees_with_the_gemm_path(rng, c, atol=1e-5):
    """The three passes as conv2d chooses them ("auto": a direct kernel where one applies) and on the
    GEMM path agree within atol of the largest output."""
    x, w, dy, bias = operands(rng, c)
    auto, gemm = (run_passes(x, w, dy, bias, c, True, parallel) for parallel in ("auto", "gemm"))
    for what, a, b in zip(PASSES, auto, gemm):
        np.testing.assert_allclose(a, b, rtol=0, atol=atol * np.abs(b).max(), err_msg=what)


_THREADS_SCRIPT = """
import sys, numpy as np
from pyneural import _C
_C.set_team_handoff_ns(0)  # small test regions still get both threads (parallel_team.h),
_C.set_team_load_sampling(False)  # also on a busy machine
x_shape, w_shape, dy_shape, hyper, passes = eval(sys.argv[2])
rng = np.random.default_rng(int(sys.argv[1]))
x, w, dy = (rng.standard_normal(s).astype(np.float32) for s in (x_shape, w_shape, dy_shape))
out = b""
if "forward" in passes:
    y = np.empty(dy.shape, np.float32); _C.conv2d_forward(x, w, None, y, *hyper, False, "auto"); out += y.tobytes()
if "backward-data" in passes:
    dx = np.empty(x.shape, np.float32); _C.conv2d_backward_data(dy, w, dx, *hyper, "auto"); out += dx.tobytes()
if "backward-weight" in passes:
    dw = np.empty(w.shape, np.float32); _C.conv2d_backward_weight(dy, x, dw, *hyper, "auto"); out += dw.tobytes()
sys.stdout.buffer.write(out)
"""


def assert_same_bits_at_one_and_two_threads(c, passes, rng, cwd):
    """The passes of case c, run in fresh processes at OMP_NUM_THREADS 1 and 2, give the same bytes."""
    w_shape = (c["Co"], c["C"] // c["groups"], c["kh"], c["kw"])
    spec = repr(((c["N"], c["C"], c["H"], c["W"]), w_shape, (c["N"], c["Co"], *out_hw(c)), hyper(c), tuple(passes)))
    seed = str(int(rng.integers(2**31)))
    outs = [subprocess.run([sys.executable, "-c", _THREADS_SCRIPT, seed, spec], cwd=cwd, capture_output=True,
                           env=subprocess_env(OMP_NUM_THREADS=str(t)), check=True).stdout for t in (1, 2)]
    assert len(outs[0]) > 0 and outs[0] == outs[1]
