"""2-D max and average pooling of NCHW arrays (or NHWC ones, ``layout="NHWC"``), forward and backward.

``kernel_size``, ``stride`` and ``padding`` are ints or (h, w) pairs; ``stride=None`` means the
kernel size; padding is at most half the kernel (as in PyTorch) and the output size is
``(H + 2p - k) // s + 1``. float32 runs the C++ kernels in ``pyneural._C`` (csrc/cpu/pool.cpp) with
the GIL released; float64 runs plain numpy on a strided window view (the gradient-check and
reference path). With ``layout="NHWC"`` every array (x, y, argmax, dy, dx) and ``x_shape`` is
(N, H, W, C), C-contiguous (channels_last memory); argmax keeps the in-plane index ``h*W + w``;
float32 runs the NHWC kernels (vectors along C), float64 the numpy path on NCHW transposes.
"""
import numpy as np

from pyneural import _C
from pyneural.kernels._checks import check_array, check_layout, pair


def _logical(shape, nhwc):
    return (shape[0], shape[3], shape[1], shape[2]) if nhwc else tuple(shape)


def _stored(shape, nhwc):
    return (shape[0], shape[2], shape[3], shape[1]) if nhwc else tuple(shape)


def _nchw_copy(a):
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def _nhwc_copy(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def _geometry(fn, x_shape, kernel_size, stride, padding):
    """Checked ((kh, kw), (sh, sw), (ph, pw), (OH, OW)) for an NCHW input of ``x_shape``."""
    k = pair(fn, "kernel_size", kernel_size, minimum=1)
    s = k if stride is None else pair(fn, "stride", stride, minimum=1)
    p = pair(fn, "padding", padding, minimum=0)
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ValueError(f"{fn}: padding {p} must be at most half of kernel_size {k}")
    _, _, h, w = x_shape
    if h + 2 * p[0] < k[0] or w + 2 * p[1] < k[1]:
        raise ValueError(f"{fn}: kernel_size {k} is larger than the padded input "
                         f"({h + 2 * p[0]}, {w + 2 * p[1]}) of x with shape {tuple(x_shape)} and padding {p}")
    if h * w > np.iinfo(np.int32).max:
        raise ValueError(f"{fn}: planes of {h}x{w} are too large for int32 argmax indices")
    out = ((h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1)
    return k, s, p, out


def _check_x_shape(fn, x_shape):
    try:
        x_shape = tuple(int(d) for d in x_shape)
    except TypeError:
        raise TypeError(f"{fn}: x_shape must be a sequence of 4 ints, got {x_shape!r}") from None
    if len(x_shape) != 4 or min(x_shape) < 1:
        raise ValueError(f"{fn}: x_shape must be 4 positive ints (N, C, H, W), got {x_shape}")
    return x_shape


def _windows(xp, k, s, out):
    """View (N, C, OH, OW, kh, kw) of the (already padded) array ``xp``: no copy."""
    view = np.lib.stride_tricks.sliding_window_view(xp, k, axis=(2, 3))
    return view[:, :, ::s[0], ::s[1]][:, :, :out[0], :out[1]]


def _window_origins(k, s, p, out):
    """Top-left input coordinates (unpadded) of every window: (OH, 1) rows and (1, OW) columns."""
    oh = np.arange(out[0])[:, None] * s[0] - p[0]
    ow = np.arange(out[1])[None, :] * s[1] - p[1]
    return oh, ow


def max_pool2d_forward(x, kernel_size, stride=None, padding=0, layout="NCHW"):
    """Return ``(y, argmax)``: the max of each window and its flat index ``h*W + w`` in the input plane.

    Padding never wins; on ties the first element in row-major order wins; NaN propagates (the first
    NaN of a window is its max). ``argmax`` is int32 with the shape of ``y``.
    """
    fn = "max_pool2d_forward"
    nhwc = check_layout(fn, layout)
    check_array(fn, "x", x, ndim=4)
    k, s, p, out = _geometry(fn, _logical(x.shape, nhwc), kernel_size, stride, padding)
    if nhwc and x.dtype != np.float32:
        return tuple(_nhwc_copy(a) for a in max_pool2d_forward(_nchw_copy(x), k, s, p))
    n, c, h, w = _logical(x.shape, nhwc)
    y = np.empty(_stored((n, c) + out, nhwc), dtype=x.dtype)
    argmax = np.empty(_stored((n, c) + out, nhwc), dtype=np.int32)
    if x.dtype == np.float32:
        _C.max_pool2d_forward(x, y, argmax, k, s, p, nhwc=nhwc)
        return y, argmax

    pad = ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1]))
    win = _windows(np.pad(x, pad, constant_values=-np.inf), k, s, out).reshape(n, c, out[0], out[1], -1)
    valid = _windows(np.pad(np.ones((h, w), bool)[None, None], pad), k, s, out).reshape(1, 1, out[0], out[1], -1)
    best = win.max(axis=-1, keepdims=True)  # NaN if the window holds one
    # The first in-plane element equal to the max (or the first NaN): padding is excluded even when
    # every in-plane element is -inf.
    first = np.argmax(((win == best) | np.isnan(win)) & valid, axis=-1)
    y[...] = best[..., 0]
    oh, ow = _window_origins(k, s, p, out)
    argmax[...] = (oh + first // k[1]) * w + (ow + first % k[1])
    return y, argmax


def max_pool2d_backward(dy, argmax, x_shape, layout="NCHW"):
    """Return ``dx`` of ``x_shape``: zero except ``dx[n, c].flat[argmax[n, c]] += dy[n, c]``."""
    fn = "max_pool2d_backward"
    nhwc = check_layout(fn, layout)
    check_array(fn, "dy", dy, ndim=4)
    check_array(fn, "argmax", argmax, ndim=4, dtypes=(np.int32,))
    x_shape = _check_x_shape(fn, x_shape)
    if argmax.shape != dy.shape:
        raise ValueError(f"{fn}: argmax has shape {argmax.shape} but dy has shape {dy.shape}")
    stored = x_shape
    if nhwc:
        dy_logical, x_shape = _logical(dy.shape, nhwc), _logical(x_shape, nhwc)
    else:
        dy_logical = dy.shape
    if dy_logical[:2] != x_shape[:2]:
        raise ValueError(f"{fn}: dy {dy.shape} and x_shape {stored} differ in N or C")
    plane = x_shape[2] * x_shape[3]
    if plane > np.iinfo(np.int32).max:
        raise ValueError(f"{fn}: planes of {x_shape[2]}x{x_shape[3]} are too large for int32 argmax indices")
    lo, hi = argmax.min(), argmax.max()
    if lo < 0 or hi >= plane:
        bad = int(lo) if lo < 0 else int(hi)
        raise ValueError(f"{fn}: argmax holds {bad}, outside [0, {plane}) for input planes of "
                         f"{x_shape[2]}x{x_shape[3]} (x_shape {stored})")
    if nhwc and dy.dtype != np.float32:
        return _nhwc_copy(max_pool2d_backward(_nchw_copy(dy), _nchw_copy(argmax), x_shape))
    dx = np.empty(stored, dtype=dy.dtype)
    if dy.dtype == np.float32:
        _C.max_pool2d_backward(dy, argmax, dx, nhwc=nhwc)
        return dx

    planes = x_shape[0] * x_shape[1]
    flat = argmax.reshape(planes, -1) + (np.arange(planes) * plane)[:, None]
    dx.reshape(-1)[:] = np.bincount(flat.ravel(), weights=dy.ravel(), minlength=planes * plane)
    return dx


def _avg_divisors(x_shape, k, s, p, out, count_include_pad):
    """(OH, OW) float64 window sizes used as divisors."""
    if count_include_pad:
        return np.full(out, float(k[0] * k[1]))
    oh, ow = _window_origins(k, s, p, out)
    rows = np.minimum(oh + k[0], x_shape[2]) - np.maximum(oh, 0)
    cols = np.minimum(ow + k[1], x_shape[3]) - np.maximum(ow, 0)
    return (rows * cols).astype(np.float64)


def avg_pool2d_forward(x, kernel_size, stride=None, padding=0, count_include_pad=True, layout="NCHW"):
    """Return the mean of each window; padding counts as zeros in the divisor if ``count_include_pad``."""
    fn = "avg_pool2d_forward"
    nhwc = check_layout(fn, layout)
    check_array(fn, "x", x, ndim=4)
    k, s, p, out = _geometry(fn, _logical(x.shape, nhwc), kernel_size, stride, padding)
    if nhwc and x.dtype != np.float32:
        return _nhwc_copy(avg_pool2d_forward(_nchw_copy(x), k, s, p, count_include_pad))
    y = np.empty(_stored(_logical(x.shape, nhwc)[:2] + out, nhwc), dtype=x.dtype)
    if x.dtype == np.float32:
        _C.avg_pool2d_forward(x, y, k, s, p, bool(count_include_pad), nhwc=nhwc)
        return y

    xp = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])))
    sums = _windows(xp, k, s, out).sum(axis=(-2, -1))
    np.divide(sums, _avg_divisors(x.shape, k, s, p, out, count_include_pad), out=y)
    return y


def avg_pool2d_backward(dy, x_shape, kernel_size, stride=None, padding=0, count_include_pad=True, layout="NCHW"):
    """Return ``dx`` of ``x_shape``: each ``dy`` divided like the forward and spread over its window."""
    fn = "avg_pool2d_backward"
    nhwc = check_layout(fn, layout)
    check_array(fn, "dy", dy, ndim=4)
    x_shape = _check_x_shape(fn, x_shape)
    k, s, p, out = _geometry(fn, _logical(x_shape, nhwc), kernel_size, stride, padding)
    expected = _stored(_logical(x_shape, nhwc)[:2] + out, nhwc)
    if dy.shape != expected:
        raise ValueError(f"{fn}: dy has shape {dy.shape} but pooling x_shape {x_shape} with kernel_size {k}, "
                         f"stride {s}, padding {p} gives {expected}")
    if nhwc and dy.dtype != np.float32:
        return _nhwc_copy(avg_pool2d_backward(_nchw_copy(dy), _logical(x_shape, nhwc), k, s, p, count_include_pad))
    dx = np.empty(x_shape, dtype=dy.dtype)
    if dy.dtype == np.float32:
        _C.avg_pool2d_backward(dy, dx, k, s, p, bool(count_include_pad), nhwc=nhwc)
        return dx

    n, c, h, w = x_shape
    g = dy / _avg_divisors(x_shape, k, s, p, out, count_include_pad)
    dxp = np.zeros((n, c, h + 2 * p[0], w + 2 * p[1]), dtype=dy.dtype)
    # One strided add per kernel offset: within one (i, j) the windows hit distinct positions.
    for i in range(k[0]):
        for j in range(k[1]):
            dxp[:, :, i:i + s[0] * out[0]:s[0], j:j + s[1] * out[1]:s[1]] += g
    dx[...] = dxp[:, :, p[0]:p[0] + h, p[1]:p[1] + w]
    return dx
