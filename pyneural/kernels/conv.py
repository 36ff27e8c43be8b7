"""2-D convolution, NCHW or NHWC: forward, backward-data and backward-weight with stride, padding,
dilation and groups.

float32 runs the C++ kernels of ``pyneural._C`` (implicit-im2col GEMMs, csrc/cpu/conv.cpp). float64
runs the plain numpy path below (im2col through stride tricks, one matmul per group, col2im as kh*kw
slice additions): the independent reference that gradient checks and the float32 tests rely on.

The weight is (Co, C/groups, kh, kw); the output is (N, Co, Ho, Wo) with
``Ho = (H + 2*ph - dh*(kh-1) - 1) // sh + 1`` (Wo likewise). The bias gradient is
``dy.sum((0, 2, 3))`` and is left to the caller.

``layout="NHWC"`` takes channels_last memory as C-contiguous arrays: x and dx (N, H, W, C), the
weight and dw OHWI (Co, kh, kw, C/groups), y and dy (N, Ho, Wo, Co); float32 runs the NHWC kernels
(csrc/cpu/conv_nhwc.cpp), float64 the numpy path on NCHW transposes.
"""
import numpy as np

from ._checks import check_array, check_layout, check_same_dtype, pair

try:  # the extension is optional for the float64 path
    from .. import _C
except ImportError:  # pragma: no cover - exercised only without a build
    _C = None


# ---- argument checks -----------------------------------------------------------------------------

def _hyper(fn, stride, padding, dilation, groups):
    stride = pair(fn, "stride", stride, minimum=1)
    padding = pair(fn, "padding", padding, minimum=0)
    dilation = pair(fn, "dilation", dilation, minimum=1)
    if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool):
        raise TypeError(f"{fn}: groups must be an int, got {groups!r}")
    if groups < 1:
        raise ValueError(f"{fn}: groups must be >= 1, got {groups}")
    return stride, padding, dilation, int(groups)


def _output_size(fn, x_shape, w_shape, stride, padding, dilation, groups):
    """Check the channel arithmetic and return (Ho, Wo)."""
    N, C, H, W = x_shape
    Co, Cw, kh, kw = w_shape
    if C % groups:
        raise ValueError(f"{fn}: input channels ({C}) are not divisible by groups={groups} "
                         f"(input shape {tuple(x_shape)})")
    if Co % groups:
        raise ValueError(f"{fn}: output channels ({Co}) are not divisible by groups={groups} "
                         f"(weight shape {tuple(w_shape)})")
    if C != Cw * groups:
        raise ValueError(f"{fn}: input has {C} channels, weight expects {Cw * groups} (groups={groups}); "
                         f"input shape {tuple(x_shape)}, weight shape {tuple(w_shape)}")
    out = []
    for size, k, s, p, d, axis in zip((H, W), (kh, kw), stride, padding, dilation, ("height", "width")):
        extent = d * (k - 1) + 1
        if size + 2 * p < extent:
            raise ValueError(f"{fn}: dilated kernel {axis} {extent} (kernel {k}, dilation {d}) is larger than "
                             f"the padded input {axis} {size + 2 * p} (input {size}, padding {p})")
        out.append((size + 2 * p - extent) // s + 1)
    return tuple(out)


def _check_shape4(fn, name, shape, dims):
    try:
        shape = tuple(int(v) for v in shape)
    except TypeError:
        raise TypeError(f"{fn}: {name} must be a tuple of 4 ints {dims}, got {shape!r}") from None
    if len(shape) != 4:
        raise ValueError(f"{fn}: {name} must have 4 entries {dims}, got {shape}")
    if min(shape) < 1:
        raise ValueError(f"{fn}: {name} has a zero-size or negative dimension: {shape}")
    return shape


def _logical(shape, nhwc):
    """An NHWC (or OHWI) shape in the logical NCHW (OIHW) order; NCHW shapes unchanged."""
    return (shape[0], shape[3], shape[1], shape[2]) if nhwc else tuple(shape)


def _stored(shape, nhwc):
    """A logical NCHW (OIHW) shape in the layout's order."""
    return (shape[0], shape[2], shape[3], shape[1]) if nhwc else tuple(shape)


def _to_nchw(a, nhwc):
    return a.transpose(0, 3, 1, 2) if nhwc else a


def _from_nchw(a, nhwc):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)) if nhwc else a


def _check_dy(fn, dy, expected):
    if dy.shape != expected:
        raise ValueError(f"{fn}: dy must have shape {expected} (the convolution's output), got {dy.shape}")


# ---- public entry points -------------------------------------------------------------------------

def conv2d_forward(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, relu=False, layout="NCHW"):
    """y = conv2d(x, w) + bias, then ReLU when ``relu``. x (N, C, H, W), w (Co, C/groups, kh, kw);
    NHWC: x (N, H, W, C), w (Co, kh, kw, C/groups), y (N, Ho, Wo, Co)."""
    fn = "conv2d"
    nhwc = check_layout(fn, layout)
    check_array(fn, "input", x, ndim=4)
    check_array(fn, "weight", w, ndim=4)
    if bias is not None:
        check_array(fn, "bias", bias, ndim=1)
    check_same_dtype(fn, input=x, weight=w, bias=bias)
    stride, padding, dilation, groups = _hyper(fn, stride, padding, dilation, groups)
    Ho, Wo = _output_size(fn, _logical(x.shape, nhwc), _logical(w.shape, nhwc), stride, padding, dilation, groups)
    if bias is not None and bias.shape != (w.shape[0],):
        raise ValueError(f"{fn}: bias must have shape ({w.shape[0]},) for weight {w.shape}, got {bias.shape}")
    if x.dtype == np.float32:
        y = np.empty(_stored((x.shape[0], w.shape[0], Ho, Wo), nhwc), dtype=np.float32)
        _C.conv2d_forward(x, w, bias, y, stride, padding, dilation, groups, bool(relu), nhwc=nhwc)
        return y
    if nhwc:
        return _from_nchw(conv2d_forward(_to_nchw(x, nhwc).copy(), _to_nchw(w, nhwc).copy(), bias, stride, padding,
                                         dilation, groups, relu), nhwc)
    y = forward_numpy(x, w, stride, padding, dilation, groups)
    if bias is not None:
        y += bias[None, :, None, None]
    if relu:
        np.maximum(y, 0, out=y)
    return y


def conv2d_backward_data(dy, w, x_shape, stride=1, padding=0, dilation=1, groups=1, layout="NCHW"):
    """dx (x_shape) = gradient of sum(conv2d(x, w) * dy) with respect to x (x_shape, dy and w in the layout)."""
    fn = "conv2d_backward_data"
    nhwc = check_layout(fn, layout)
    check_array(fn, "dy", dy, ndim=4)
    check_array(fn, "weight", w, ndim=4)
    check_same_dtype(fn, dy=dy, weight=w)
    x_shape = _check_shape4(fn, "x_shape", x_shape, "(N, H, W, C)" if nhwc else "(N, C, H, W)")
    stride, padding, dilation, groups = _hyper(fn, stride, padding, dilation, groups)
    Ho, Wo = _output_size(fn, _logical(x_shape, nhwc), _logical(w.shape, nhwc), stride, padding, dilation, groups)
    _check_dy(fn, dy, _stored((x_shape[0], w.shape[0], Ho, Wo), nhwc))
    if dy.dtype == np.float32:
        dx = np.empty(x_shape, dtype=np.float32)
        _C.conv2d_backward_data(dy, w, dx, stride, padding, dilation, groups, nhwc=nhwc)
        return dx
    return _from_nchw(backward_data_numpy(_to_nchw(dy, nhwc), _to_nchw(w, nhwc), _logical(x_shape, nhwc), stride,
                                          padding, dilation, groups), nhwc)


def conv2d_backward_weight(dy, x, w_shape, stride=1, padding=0, dilation=1, groups=1, layout="NCHW"):
    """dw (w_shape) = gradient of sum(conv2d(x, w) * dy) with respect to w (w_shape, dy and x in the layout)."""
    fn = "conv2d_backward_weight"
    nhwc = check_layout(fn, layout)
    check_array(fn, "dy", dy, ndim=4)
    check_array(fn, "input", x, ndim=4)
    check_same_dtype(fn, dy=dy, input=x)
    w_shape = _check_shape4(fn, "w_shape", w_shape, "(Co, kh, kw, C/groups)" if nhwc else "(Co, C/groups, kh, kw)")
    stride, padding, dilation, groups = _hyper(fn, stride, padding, dilation, groups)
    Ho, Wo = _output_size(fn, _logical(x.shape, nhwc), _logical(w_shape, nhwc), stride, padding, dilation, groups)
    _check_dy(fn, dy, _stored((x.shape[0], w_shape[0], Ho, Wo), nhwc))
    if dy.dtype == np.float32:
        dw = np.empty(w_shape, dtype=np.float32)
        _C.conv2d_backward_weight(dy, x, dw, stride, padding, dilation, groups, nhwc=nhwc)
        return dw
    return _from_nchw(backward_weight_numpy(_to_nchw(dy, nhwc), _to_nchw(x, nhwc), _logical(w_shape, nhwc), stride,
                                            padding, dilation, groups), nhwc)


# ---- numpy path (float64 reference; any float dtype) ---------------------------------------------

def _windows(x, kh, kw, stride, padding, dilation, out_hw):
    """Read-only view (N, C, kh, kw, Ho, Wo) of the zero-padded input: element [n, c, i, j, oh, ow]
    is x_padded[n, c, oh*sh + i*dh, ow*sw + j*dw]."""
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
    sN, sC, sH, sW = xp.strides
    return np.lib.stride_tricks.as_strided(
        xp, shape=(x.shape[0], x.shape[1], kh, kw) + tuple(out_hw),
        strides=(sN, sC, dh * sH, dw * sW, sh * sH, sw * sW), writeable=False)


def _columns(x, w_shape, stride, padding, dilation, groups, out_hw):
    """The im2col matrix of every group, (groups, C/groups*kh*kw, N*Ho*Wo), materialised."""
    N = x.shape[0]
    _, Cg, kh, kw = w_shape
    view = _windows(x, kh, kw, stride, padding, dilation, out_hw)
    view = view.reshape(N, groups, Cg, kh, kw, *out_hw).transpose(1, 2, 3, 4, 0, 5, 6)
    return view.reshape(groups, Cg * kh * kw, N * out_hw[0] * out_hw[1])


def _grouped_dy(dy, groups):
    """dy as (groups, Co/groups, N*Ho*Wo)."""
    N, Co, Ho, Wo = dy.shape
    return dy.reshape(N, groups, Co // groups, Ho * Wo).transpose(1, 2, 0, 3).reshape(groups, Co // groups, -1)


def forward_numpy(x, w, stride, padding, dilation, groups):
    """conv2d without bias by im2col + one matmul per group; hyper-parameters as (h, w) pairs."""
    N = x.shape[0]
    Co, Cg, kh, kw = w.shape
    Ho, Wo = _output_size("conv2d", x.shape, w.shape, stride, padding, dilation, groups)
    cols = _columns(x, w.shape, stride, padding, dilation, groups, (Ho, Wo))
    y = np.matmul(w.reshape(groups, Co // groups, Cg * kh * kw), cols)
    return np.ascontiguousarray(y.reshape(groups, Co // groups, N, Ho, Wo).transpose(2, 0, 1, 3, 4)
                                .reshape(N, Co, Ho, Wo))


def backward_data_numpy(dy, w, x_shape, stride, padding, dilation, groups):
    """dx by one matmul per group into the column matrix, then col2im: kh*kw strided slice sums."""
    N, C, H, W = x_shape
    Co, Cg, kh, kw = w.shape
    Ho, Wo = dy.shape[2:]
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    wt = w.reshape(groups, Co // groups, Cg * kh * kw).transpose(0, 2, 1)
    dcols = np.matmul(wt, _grouped_dy(dy, groups)).reshape(groups, Cg, kh, kw, N, Ho, Wo)
    dxp = np.zeros((N, groups, Cg, H + 2 * ph, W + 2 * pw), dtype=dy.dtype)
    for i in range(kh):
        for j in range(kw):
            # One tap's slice visits each padded pixel at most once, so += cannot lose updates.
            rows = slice(i * dh, i * dh + sh * (Ho - 1) + 1, sh)
            cols = slice(j * dw, j * dw + sw * (Wo - 1) + 1, sw)
            dxp[:, :, :, rows, cols] += dcols[:, :, i, j].transpose(2, 0, 1, 3, 4)
    return np.ascontiguousarray(dxp[..., ph:ph + H, pw:pw + W].reshape(N, C, H, W))


def backward_weight_numpy(dy, x, w_shape, stride, padding, dilation, groups):
    """dw by one matmul per group: dy (Co/g x N*Ho*Wo) @ im2col(x)^T."""
    Ho, Wo = dy.shape[2:]
    cols = _columns(x, w_shape, stride, padding, dilation, groups, (Ho, Wo))
    return np.matmul(_grouped_dy(dy, groups), cols.transpose(0, 2, 1)).reshape(w_shape)
