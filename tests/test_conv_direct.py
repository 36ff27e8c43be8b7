"""The direct stride-1 convolution (csrc/cpu/conv_direct*.cpp), which conv2d takes on the AVX2 path for
the forward and backward-data of layers with few channels, and their backward-weight with fewer still: against float64 numpy within the summation's
rounding bound, outputs poisoned with NaN, on widths that do not divide its 16-pixel tiles (and planes
of at most 8 columns, which it takes two rows at a time), channel counts that do not divide its 6-channel
blocks, padding below the kernel's reach, dilation, bias and ReLU; the same bits at 1 and 2 threads; and
the same answers as the GEMM path (parallel="gemm" forces that one). On other SIMD paths the same calls
run the GEMM path, so the float64 check holds there too."""
import subprocess
import sys

import numpy as np
import pytest
from conftest import assert_close_bound, poisoned, subprocess_env

from pyneural import _C
from pyneural.kernels import conv


def _case(N, C, H, W, Co, k, padding, dilation=1):
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    k = pair(k)
    return dict(N=N, C=C, H=H, W=W, Co=Co, kh=k[0], kw=k[1], stride=(1, 1), padding=pair(padding),
                dilation=pair(dilation), groups=1)


CASES = {
    "resnet-16ch-32x32": _case(2, 16, 32, 32, 16, 3, 1),
    "stem-3ch": _case(2, 3, 17, 19, 16, 3, 1),            # 19 columns: a 16-pixel tile and a 3-lane tail
    "digits-1ch-8x8": _case(3, 1, 8, 8, 32, 3, 1),        # 8 columns: two rows per tile
    "digits-32ch-8x8": _case(2, 32, 8, 8, 64, 3, 1),
    "odd-rows-7x7": _case(2, 13, 7, 7, 11, 3, 1),          # 7 rows: the last pair is one row
    "narrow-5-cols": _case(2, 5, 9, 5, 7, 3, 1),
    "co-not-multiple-of-6": _case(2, 8, 12, 10, 13, 3, 1),
    "5x5-pad2": _case(2, 4, 11, 23, 5, 5, 2),
    "valid-no-padding": _case(2, 6, 10, 12, 9, 3, 0),
    "pad-below-reach": _case(2, 4, 9, 14, 6, (3, 5), (0, 1)),
    "dilated": _case(2, 5, 13, 18, 8, 3, 2, dilation=2),
    "1x1": _case(2, 20, 6, 9, 17, 1, 0),
    "one-output-channel": _case(2, 7, 10, 33, 1, 3, 1),
    "wide-row-17": _case(1, 2, 3, 17, 6, 3, 1),            # a 16-pixel tile, then a 1-lane one
    "image-groups": _case(7, 16, 34, 34, 5, 3, 1),          # backward-weight: 3 padded images per group
}


def _hyper(c):
    return c["stride"], c["padding"], c["dilation"], c["groups"]


def _out_hw(c):
    return tuple(size + 2 * p - d * (k - 1) for size, k, p, d in
                 zip((c["H"], c["W"]), (c["kh"], c["kw"]), c["padding"], c["dilation"]))


def _operands(rng, c):
    x = rng.standard_normal((c["N"], c["C"], c["H"], c["W"])).astype(np.float32)
    w = rng.standard_normal((c["Co"], c["C"], c["kh"], c["kw"])).astype(np.float32)
    dy = rng.standard_normal((c["N"], c["Co"], *_out_hw(c))).astype(np.float32)
    bias = rng.standard_normal(c["Co"]).astype(np.float32)
    return x, w, dy, bias


def _run(x, w, dy, bias, c, relu, parallel="auto"):
    y = poisoned(dy.shape)
    _C.conv2d_forward(x, w, bias, y, *_hyper(c), relu, parallel)
    dx = poisoned(x.shape)
    _C.conv2d_backward_data(dy, w, dx, *_hyper(c), parallel)
    dw = poisoned(w.shape)
    _C.conv2d_backward_weight(dy, x, dw, *_hyper(c), parallel)
    return y, dx, dw


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_float64(isa, rng, name, relu):
    c = CASES[name]
    x, w, dy, bias = _operands(rng, c)
    y, dx, dw = _run(x, w, dy, bias, c, relu)
    x64, w64, dy64 = (a.astype(np.float64) for a in (x, w, dy))
    pre = conv.forward_numpy(x64, w64, *_hyper(c)) + bias[None, :, None, None]
    y_ref = np.maximum(pre, 0) if relu else pre
    y_mag = conv.forward_numpy(np.abs(x64), np.abs(w64), *_hyper(c)) + np.abs(bias)[None, :, None, None]
    taps = c["kh"] * c["kw"]
    assert_close_bound(y, y_ref, c["C"] * taps + 1, y_mag, what=f"forward ({name}, {isa})")
    assert_close_bound(dx, conv.backward_data_numpy(dy64, w64, x.shape, *_hyper(c)), c["Co"] * taps,
                       conv.backward_data_numpy(np.abs(dy64), np.abs(w64), x.shape, *_hyper(c)),
                       what=f"backward-data ({name}, {isa})")
    Ho, Wo = _out_hw(c)
    assert_close_bound(dw, conv.backward_weight_numpy(dy64, x64, w.shape, *_hyper(c)), c["N"] * Ho * Wo,
                       conv.backward_weight_numpy(np.abs(dy64), np.abs(x64), w.shape, *_hyper(c)),
                       what=f"backward-weight ({name}, {isa})")


@pytest.mark.parametrize("name", ["resnet-16ch-32x32", "odd-rows-7x7", "co-not-multiple-of-6", "dilated"])
def test_agrees_with_the_gemm_path(rng, name):
    c = CASES[name]
    x, w, dy, bias = _operands(rng, c)
    for what, a, b in zip(("forward", "backward-data", "backward-weight"), _run(x, w, dy, bias, c, True, "auto"),
                          _run(x, w, dy, bias, c, True, "gemm")):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * np.abs(b).max(), err_msg=what)


THREADS_SCRIPT = """
import sys, numpy as np
from pyneural import _C
rng = np.random.default_rng(int(sys.argv[1]))
x = rng.standard_normal((5, 16, 21, 19)).astype(np.float32)
w = rng.standard_normal((20, 16, 3, 3)).astype(np.float32)
dy = rng.standard_normal((5, 20, 21, 19)).astype(np.float32)
y = np.empty(dy.shape, np.float32); dx = np.empty(x.shape, np.float32)
hyper = ((1, 1), (1, 1), (1, 1), 1)
_C.conv2d_forward(x, w, None, y, *hyper, False, "auto")
_C.conv2d_backward_data(dy, w, dx, *hyper, "auto")
sys.stdout.buffer.write(y.tobytes() + dx.tobytes())
"""


def test_same_bits_at_one_and_two_threads(rng, tmp_path):
    """Each output element is summed by one task in one order, whatever the thread count."""
    seed = str(int(rng.integers(2**31)))
    outs = [subprocess.run([sys.executable, "-c", THREADS_SCRIPT, seed], cwd=tmp_path, capture_output=True,
                           env=subprocess_env(OMP_NUM_THREADS=str(t)), check=True).stdout for t in (1, 2)]
    assert len(outs[0]) > 0 and outs[0] == outs[1]
