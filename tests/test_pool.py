"""2-D max and average pooling: float32 C++ on every SIMD path against the float64 numpy path, in NCHW
and in channels_last (NHWC memory), and the float64 path against plain loops written straight from
the definitions (small sizes)."""
import numpy as np
import pytest

from conftest import poisoned, rel_err
from pyneural import _C
from pyneural.kernels.pool import avg_pool2d_backward, avg_pool2d_forward, max_pool2d_backward, max_pool2d_forward



# (x shape, kernel_size, stride, padding): odd planes, 1x1 planes, stride > kernel, padding at
# the borders, rectangular kernels, strides and paddings.
CASES = [
    ((2, 3, 8, 8), 2, None, 0),
    ((2, 3, 7, 9), 3, 2, 1),
    ((1, 2, 7, 9), 3, 1, 1),
    ((2, 2, 9, 7), (3, 2), (2, 3), (1, 1)),
    ((1, 3, 10, 11), 2, 3, 0),
    ((2, 3, 5, 6), 1, 1, 0),
    ((1, 2, 6, 5), 1, 2, 0),
    ((2, 2, 1, 1), 1, None, 0),
    ((2, 2, 1, 1), 2, 2, 1),
    ((1, 1, 12, 13), 5, 4, 2),
    ((3, 5, 17, 19), (4, 3), 3, (2, 1)),
]
LARGER = [((4, 19, 23, 21), 3, 2, 1), ((8, 16, 8, 8), 2, None, 0), ((3, 7, 33, 17), (2, 5), (1, 2), (1, 2))]


def as_pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def geometry(shape, k, s, p):
    k = as_pair(k)
    s = k if s is None else as_pair(s)
    p = as_pair(p)
    out = ((shape[2] + 2 * p[0] - k[0]) // s[0] + 1, (shape[3] + 2 * p[1] - k[1]) // s[1] + 1)
    return k, s, p, out


def window(shape, k, s, p, oh, ow):
    """In-plane (h, w) of one window, row-major, padding left out."""
    h0, w0 = oh * s[0] - p[0], ow * s[1] - p[1]
    return [(h, w) for h in range(h0, h0 + k[0]) for w in range(w0, w0 + k[1])
            if 0 <= h < shape[2] and 0 <= w < shape[3]]


def naive_max(x, k, s, p):
    k, s, p, out = geometry(x.shape, k, s, p)
    y = np.empty(x.shape[:2] + out)
    am = np.empty(x.shape[:2] + out, np.int64)
    for n, c, oh, ow in np.ndindex(y.shape):
        best = None
        for h, w in window(x.shape, k, s, p, oh, ow):
            if best is None or x[n, c, h, w] > best:  # strict: the first of equal values wins
                best, am[n, c, oh, ow] = x[n, c, h, w], h * x.shape[3] + w
        y[n, c, oh, ow] = best
    return y, am


def naive_avg(x, k, s, p, count_include_pad):
    k, s, p, out = geometry(x.shape, k, s, p)
    y = np.empty(x.shape[:2] + out)
    for n, c, oh, ow in np.ndindex(y.shape):
        cells = window(x.shape, k, s, p, oh, ow)
        y[n, c, oh, ow] = sum(x[n, c, h, w] for h, w in cells) / (k[0] * k[1] if count_include_pad else len(cells))
    return y


def naive_avg_backward(dy, x_shape, k, s, p, count_include_pad):
    k, s, p, _ = geometry(x_shape, k, s, p)
    dx = np.zeros(x_shape)
    for n, c, oh, ow in np.ndindex(dy.shape):
        cells = window(x_shape, k, s, p, oh, ow)
        for h, w in cells:
            dx[n, c, h, w] += dy[n, c, oh, ow] / (k[0] * k[1] if count_include_pad else len(cells))
    return dx


def naive_max_backward(dy, argmax, x_shape):
    dx = np.zeros(x_shape)
    for n, c, oh, ow in np.ndindex(dy.shape):
        a = argmax[n, c, oh, ow]
        dx[n, c, a // x_shape[3], a % x_shape[3]] += dy[n, c, oh, ow]
    return dx


# ---- the float64 path against the definitions ------------------------------------------------------

@pytest.mark.parametrize("shape,k,s,p", CASES)
def test_max_pool_float64_matches_loops(rng, shape, k, s, p):
    x = rng.standard_normal(shape)
    y, am = max_pool2d_forward(x, k, s, p)
    ref_y, ref_am = naive_max(x, k, s, p)
    assert am.dtype == np.int32
    assert np.array_equal(y, ref_y) and np.array_equal(am, ref_am)
    dy = rng.standard_normal(y.shape)
    assert rel_err(max_pool2d_backward(dy, am, shape), naive_max_backward(dy, am, shape)) < 1e-14


@pytest.mark.parametrize("shape,k,s,p", CASES)
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool_float64_matches_loops(rng, shape, k, s, p, count_include_pad):
    x = rng.standard_normal(shape)
    y = avg_pool2d_forward(x, k, s, p, count_include_pad)
    assert rel_err(y, naive_avg(x, k, s, p, count_include_pad)) < 1e-14
    dy = rng.standard_normal(y.shape)
    dx = avg_pool2d_backward(dy, shape, k, s, p, count_include_pad)
    assert rel_err(dx, naive_avg_backward(dy, shape, k, s, p, count_include_pad)) < 1e-14


# ---- float32 C++ against the float64 path -----------------------------------------------------------

@pytest.mark.parametrize("shape,k,s,p", CASES + LARGER)
def test_max_pool_float32_matches_float64(isa, rng, shape, k, s, p):
    x = rng.standard_normal(shape)
    x32 = x.astype(np.float32)
    ref_y, ref_am = max_pool2d_forward(x32.astype(np.float64), k, s, p)
    y, am = poisoned(ref_y.shape), np.full(ref_y.shape, -7, np.int32)
    _C.max_pool2d_forward(x32, y, am, *geometry(shape, k, s, p)[:3])
    assert np.array_equal(y, ref_y) and np.array_equal(am, ref_am)
    assert rel_err(max_pool2d_forward(x32, k, s, p)[0], ref_y) == 0

    dy = rng.standard_normal(y.shape).astype(np.float32)
    ref_dx = max_pool2d_backward(dy.astype(np.float64), am, shape)
    dx = poisoned(shape)
    _C.max_pool2d_backward(dy, am, dx)
    assert rel_err(dx, ref_dx) < 1e-6
    assert rel_err(max_pool2d_backward(dy, am, shape), ref_dx) < 1e-6


@pytest.mark.parametrize("shape,k,s,p", CASES + LARGER)
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool_float32_matches_float64(isa, rng, shape, k, s, p, count_include_pad):
    x = rng.standard_normal(shape).astype(np.float32)
    ref_y = avg_pool2d_forward(x.astype(np.float64), k, s, p, count_include_pad)
    kp, sp, pp, _ = geometry(shape, k, s, p)
    y = poisoned(ref_y.shape)
    _C.avg_pool2d_forward(x, y, kp, sp, pp, count_include_pad)
    assert rel_err(y, ref_y) < 1e-6

    dy = rng.standard_normal(ref_y.shape).astype(np.float32)
    ref_dx = avg_pool2d_backward(dy.astype(np.float64), shape, k, s, p, count_include_pad)
    dx = poisoned(shape)
    _C.avg_pool2d_backward(dy, dx, kp, sp, pp, count_include_pad)
    assert rel_err(dx, ref_dx) < 1e-6
    assert rel_err(avg_pool2d_backward(dy, shape, k, s, p, count_include_pad), ref_dx) < 1e-6


# ---- channels_last: the NHWC kernels against the float64 NCHW path ----------------------------------

def nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def nchw(a):
    return a.transpose(0, 3, 1, 2)


@pytest.mark.parametrize("shape,k,s,p", CASES + LARGER + [((3, 67, 9, 11), 3, 2, 1)])
def test_max_pool_nhwc_matches_nchw_float64(isa, rng, shape, k, s, p):
    x = rng.standard_normal(shape).astype(np.float32)
    ref_y, ref_am = max_pool2d_forward(x.astype(np.float64), k, s, p)
    y, am = poisoned(nhwc(ref_y).shape), np.full(nhwc(ref_y).shape, -7, np.int32)
    _C.max_pool2d_forward(nhwc(x), y, am, *geometry(shape, k, s, p)[:3], nhwc=True)
    assert np.array_equal(nchw(y), ref_y) and np.array_equal(nchw(am), ref_am)  # the same max, the same index

    dy = rng.standard_normal(ref_y.shape).astype(np.float32)
    ref_dx = max_pool2d_backward(dy.astype(np.float64), ref_am, shape)
    dx = poisoned(nhwc(x).shape)
    _C.max_pool2d_backward(nhwc(dy), am, dx, nhwc=True)
    assert rel_err(nchw(dx), ref_dx) < 1e-6
    got = max_pool2d_backward(nhwc(dy), am, nhwc(x).shape, layout="NHWC")
    assert rel_err(nchw(got), ref_dx) < 1e-6
    y64, am64 = max_pool2d_forward(nhwc(x.astype(np.float64)), k, s, p, layout="NHWC")  # the float64 NHWC path
    assert np.array_equal(nchw(y64), ref_y) and np.array_equal(nchw(am64), ref_am)


@pytest.mark.parametrize("shape,k,s,p", CASES + LARGER + [((3, 67, 9, 11), 3, 2, 1)])
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool_nhwc_matches_nchw_float64(isa, rng, shape, k, s, p, count_include_pad):
    x = rng.standard_normal(shape).astype(np.float32)
    ref_y = avg_pool2d_forward(x.astype(np.float64), k, s, p, count_include_pad)
    kp, sp, pp, _ = geometry(shape, k, s, p)
    y = poisoned(nhwc(ref_y).shape)
    _C.avg_pool2d_forward(nhwc(x), y, kp, sp, pp, count_include_pad, nhwc=True)
    assert rel_err(nchw(y), ref_y) < 1e-6

    dy = rng.standard_normal(ref_y.shape).astype(np.float32)
    ref_dx = avg_pool2d_backward(dy.astype(np.float64), shape, k, s, p, count_include_pad)
    dx = poisoned(nhwc(x).shape)
    _C.avg_pool2d_backward(nhwc(dy), dx, kp, sp, pp, count_include_pad, nhwc=True)
    assert rel_err(nchw(dx), ref_dx) < 1e-6
    got = avg_pool2d_backward(nhwc(dy), nhwc(x).shape, k, s, p, count_include_pad, layout="NHWC")
    assert rel_err(nchw(got), ref_dx) < 1e-6
    got64 = avg_pool2d_backward(nhwc(dy.astype(np.float64)), nhwc(x).shape, k, s, p, count_include_pad,
                                layout="NHWC")
    assert rel_err(nchw(got64), ref_dx) < 1e-14


def test_max_pool_nhwc_ties_inf_and_nan_as_nchw(isa, rng):
    x = rng.integers(0, 2, (2, 5, 7, 8)).astype(np.float32)  # many equal maxima per window
    x[0, 1] = -np.inf
    x[1, 2, 0, 1] = x[1, 2, 1, 0] = np.nan
    for k, s, p in ((3, 2, 1), (2, 2, 0)):
        y, am = max_pool2d_forward(x, k, s, p)
        yn, amn = max_pool2d_forward(nhwc(x), k, s, p, layout="NHWC")
        assert np.array_equal(nchw(yn), y, equal_nan=True) and np.array_equal(nchw(amn), am)


def test_pool_nhwc_rejects_bad_layout_and_shapes():
    x = np.zeros((2, 6, 6, 3), np.float32)
    with pytest.raises(ValueError, match="layout must be 'NCHW' or 'NHWC'"):
        max_pool2d_forward(x, 2, layout="nhwc")
    with pytest.raises(ValueError, match=r"must have shape \(2, 3, 3, 3\)"):
        _C.avg_pool2d_forward(x, np.empty((2, 3, 3, 3 + 1), np.float32), (2, 2), (2, 2), (0, 0), True, nhwc=True)
    with pytest.raises(ValueError, match="dy has shape"):
        avg_pool2d_backward(np.zeros((2, 3, 3, 4), np.float32), x.shape, 2, layout="NHWC")


# ---- ties, -inf, NaN: both paths must agree on which element is the max --------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_ties_pick_first_in_row_major_order(isa, rng, dtype):
    x = rng.integers(0, 2, (2, 3, 7, 8)).astype(dtype)  # many equal maxima per window
    y, am = max_pool2d_forward(x, 3, 2, 1)
    ref_y, ref_am = naive_max(x, 3, 2, 1)
    assert np.array_equal(y, ref_y) and np.array_equal(am, ref_am)


def test_max_pool_2x2_stride_2_ties_inf_and_nan(isa, rng):
    """The 2x2 / stride-2 / no-padding path (csrc/cpu/pool.cpp max_pool_plane_2x2) picks as the general
    one: the first of equal maxima, -inf windows point at their first element, the first NaN wins
    wherever in the window it sits. Odd planes leave a last row and column out."""
    x = rng.integers(0, 2, (2, 3, 7, 9)).astype(np.float32)
    x[0, 0, :2, :2] = -np.inf
    for slot, (h, w) in enumerate([(0, 2), (0, 4), (2, 2), (4, 6)]):  # NaN in each of a window's 4 slots
        x[1, 1, h + slot // 2, w + slot % 2] = np.nan
    x[1, 2, 5, 4] = x[1, 2, 4, 5] = np.nan  # two NaNs: the first in window order (row-major) wins
    y, am = max_pool2d_forward(x, 2)
    ref_y, ref_am = naive_max(np.nan_to_num(x, nan=2.0), 2, 2, 0)  # a NaN acts as a max that nothing beats
    assert np.array_equal(np.nan_to_num(y, nan=2.0), ref_y) and np.array_equal(am, ref_am)
    assert np.isnan(y[1, 1, [0, 0, 1, 2], [1, 2, 1, 3]]).all() and am[1, 2, 2, 2] == 4 * 9 + 5
    assert y[0, 0, 0, 0] == -np.inf and am[0, 0, 0, 0] == 0
    y64, am64 = max_pool2d_forward(x.astype(np.float64), 2)  # the numpy path
    assert np.array_equal(y, y64, equal_nan=True) and np.array_equal(am, am64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_padding_never_wins_over_minus_inf(isa, dtype):
    x = np.full((1, 1, 3, 3), -np.inf, dtype)
    y, am = max_pool2d_forward(x, 3, 2, 1)
    assert np.all(y == -np.inf)
    assert am.tolist() == [[[[0, 1], [3, 4]]]]  # each window's first in-plane element


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_nan_propagates(isa, dtype):
    x = np.arange(16, dtype=dtype).reshape(1, 1, 4, 4)
    x[0, 0, 0, 1] = np.nan
    x[0, 0, 1, 0] = np.nan
    y, am = max_pool2d_forward(x, 2)
    assert np.isnan(y[0, 0, 0, 0]) and am[0, 0, 0, 0] == 1  # the first NaN
    assert y[0, 0, 1, 1] == 15 and am[0, 0, 1, 1] == 15


# ---- bad input: one test each ------------------------------------------------------------------

def test_pool_rejects_3d_input():
    with pytest.raises(ValueError, match=r"x must have 4 dimensions, got shape \(3, 8, 8\)"):
        max_pool2d_forward(np.zeros((3, 8, 8), np.float32), 2)


def test_pool_rejects_int_dtype():
    with pytest.raises(TypeError, match="x must have dtype float32 or float64"):
        avg_pool2d_forward(np.zeros((1, 1, 4, 4), np.int32), 2)


def test_pool_rejects_non_contiguous():
    with pytest.raises(ValueError, match="C-contiguous"):
        max_pool2d_forward(np.zeros((1, 1, 8, 8), np.float32)[:, :, ::2], 2)


def test_pool_rejects_zero_size():
    with pytest.raises(ValueError, match="zero-size"):
        max_pool2d_forward(np.zeros((0, 1, 4, 4), np.float32), 2)


def test_pool_rejects_padding_over_half_kernel():
    with pytest.raises(ValueError, match=r"padding \(2, 2\) must be at most half of kernel_size \(3, 3\)"):
        max_pool2d_forward(np.zeros((1, 1, 8, 8), np.float32), 3, 1, 2)


def test_pool_rejects_zero_kernel():
    with pytest.raises(ValueError, match="kernel_size must be >= 1"):
        avg_pool2d_forward(np.zeros((1, 1, 4, 4), np.float32), 0)


def test_pool_rejects_zero_stride():
    with pytest.raises(ValueError, match="stride must be >= 1"):
        max_pool2d_forward(np.zeros((1, 1, 4, 4), np.float32), 2, 0)


def test_pool_rejects_negative_padding():
    with pytest.raises(ValueError, match="padding must be >= 0"):
        avg_pool2d_forward(np.zeros((1, 1, 4, 4), np.float32), 2, 2, -1)


def test_pool_rejects_kernel_larger_than_input():
    with pytest.raises(ValueError, match=r"kernel_size \(5, 5\) is larger than the padded input \(4, 4\)"):
        max_pool2d_forward(np.zeros((1, 1, 4, 4), np.float32), 5)


def test_pool_rejects_kernel_triple():
    with pytest.raises(ValueError, match="kernel_size must be an int or a pair"):
        max_pool2d_forward(np.zeros((1, 1, 4, 4), np.float32), (2, 2, 2))


def test_pool_rejects_kernel_of_wrong_type():
    with pytest.raises(TypeError, match="kernel_size must be an int or a pair"):
        max_pool2d_forward(np.zeros((1, 1, 4, 4), np.float32), 2.5)


def test_pool_binding_checks_geometry():
    with pytest.raises(ValueError, match="padding must be between 0 and half the kernel"):
        _C.avg_pool2d_forward(np.zeros((1, 1, 4, 4), np.float32), np.empty((1, 1, 4, 4), np.float32), (1, 1),
                              (1, 1), (1, 1))


def test_pool_binding_checks_output_shape():
    with pytest.raises(ValueError, match=r"y must have shape \(1, 1, 2, 2\)"):
        _C.max_pool2d_forward(np.zeros((1, 1, 4, 4), np.float32), np.empty((1, 1, 3, 3), np.float32),
                              np.empty((1, 1, 3, 3), np.int32), (2, 2), (2, 2), (0, 0))


def test_max_pool_backward_rejects_argmax_out_of_range():
    am = np.zeros((1, 1, 2, 2), np.int32)
    am[0, 0, 1, 1] = 16
    with pytest.raises(ValueError, match=r"argmax holds 16, outside \[0, 16\)"):
        max_pool2d_backward(np.ones((1, 1, 2, 2), np.float32), am, (1, 1, 4, 4))


def test_max_pool_backward_binding_checks_argmax_itself():
    am = np.zeros((1, 1, 2, 2), np.int32)
    am[0, 0, 0, 1] = -1
    with pytest.raises(ValueError, match=r"1 argmax entries are outside \[0, 16\)"):
        _C.max_pool2d_backward(np.ones((1, 1, 2, 2), np.float32), am, np.empty((1, 1, 4, 4), np.float32))


def test_max_pool_backward_rejects_int64_argmax():
    with pytest.raises(TypeError, match="argmax must have dtype int32"):
        max_pool2d_backward(np.ones((1, 1, 2, 2), np.float32), np.zeros((1, 1, 2, 2), np.int64), (1, 1, 4, 4))


def test_max_pool_backward_rejects_argmax_shape():
    with pytest.raises(ValueError, match=r"argmax has shape \(1, 1, 2, 3\) but dy has shape \(1, 1, 2, 2\)"):
        max_pool2d_backward(np.ones((1, 1, 2, 2), np.float32), np.zeros((1, 1, 2, 3), np.int32), (1, 1, 4, 4))


def test_max_pool_backward_rejects_bad_x_shape():
    with pytest.raises(ValueError, match=r"x_shape must be 4 positive ints"):
        max_pool2d_backward(np.ones((1, 1, 2, 2), np.float32), np.zeros((1, 1, 2, 2), np.int32), (1, 4, 4))


def test_avg_pool_backward_rejects_dy_shape():
    with pytest.raises(ValueError, match=r"dy has shape \(1, 1, 3, 3\) but pooling x_shape \(1, 1, 4, 4\)"):
        avg_pool2d_backward(np.ones((1, 1, 3, 3), np.float32), (1, 1, 4, 4), 2)
