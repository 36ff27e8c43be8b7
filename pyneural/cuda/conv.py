"""2-D convolution on CuPy float32 arrays as implicit GEMM (csrc/cuda/conv.cu): forward with fused
bias + ReLU, backward-data, backward-weight; NCHW or NHWC.

Layouts: ``"NCHW"``: x (N, C, H, W), w (OC, C/groups, KH, KW), y (N, OC, OH, OW).
``"NHWC"``: x (N, H, W, C), w (OC, KH, KW, C/groups) (PyTorch's channels_last weight order),
y (N, OH, OW, OC). ``stride``, ``padding``, ``dilation``: ints or (h, w) pairs.
"""
import numpy as np

from pyneural.cuda import _backend
from pyneural.kernels._checks import (
    check_device_array as check_array, check_device_output as check_output, check_device_vector as check_vector, pair)
from pyneural.cuda.elementwise import fill

TILE, THREADS = 128, 256  # must match gemm_tile.cuh (TILE_M = TILE_N)
LAYOUTS = ("NCHW", "NHWC")


def _geometry(fn, x_shape, w_shape, stride, padding, dilation, groups, layout):
    if layout not in LAYOUTS:
        raise ValueError(f"{fn}: layout must be 'NCHW' or 'NHWC', got {layout!r}")
    s = pair(fn, "stride", stride, minimum=1)
    p = pair(fn, "padding", padding, minimum=0)
    d = pair(fn, "dilation", dilation, minimum=1)
    if not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"{fn}: groups must be a positive int, got {groups!r}")
    if layout == "NCHW":
        n, c, h, w = x_shape
        oc, cg, kh, kw = w_shape
    else:
        n, h, w, c = x_shape
        oc, kh, kw, cg = w_shape
    if c % groups or oc % groups:
        raise ValueError(f"{fn}: groups={groups} must divide the input channels {c} and output channels {oc}")
    if cg != c // groups:
        raise ValueError(f"{fn}: weight {tuple(w_shape)} expects {cg * groups} input channels "
                         f"(groups={groups}), x {tuple(x_shape)} has {c} ({layout})")
    oh = (h + 2 * p[0] - d[0] * (kh - 1) - 1) // s[0] + 1
    ow = (w + 2 * p[1] - d[1] * (kw - 1) - 1) // s[1] + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"{fn}: kernel {kh}x{kw} (dilation {d}) does not fit the padded input "
                         f"{h + 2 * p[0]}x{w + 2 * p[1]} of x {tuple(x_shape)}")
    dims = dict(N=n, C=c, H=h, W=w, OC=oc, KH=kh, KW=kw, OH=oh, OW=ow, sh=s[0], sw=s[1], ph=p[0], pw=p[1],
                dh=d[0], dw=d[1], G=int(groups))
    y_shape = (n, oc, oh, ow) if layout == "NCHW" else (n, oh, ow, oc)
    return dims, y_shape


def _dims_args(dims, relu=False):
    keys = ("N", "C", "H", "W", "OC", "KH", "KW", "OH", "OW", "sh", "sw", "ph", "pw", "dh", "dw", "G")
    return tuple(np.int32(dims[k]) for k in keys) + (np.int32(bool(relu)),)


def launch_config(kind, dims, splits=1):
    """(grid, block, shared memory) for pass ``kind`` ('fwd', 'bwd_data', 'bwd_weight')."""
    g = dims["G"]
    cg, ocg, khw = dims["C"] // g, dims["OC"] // g, dims["KH"] * dims["KW"]
    if kind == "fwd":
        m, n = ocg, dims["N"] * dims["OH"] * dims["OW"]
    elif kind == "bwd_data":
        m, n = cg, dims["N"] * dims["H"] * dims["W"]
    else:
        m, n = ocg, cg * khw
    return (-(-n // TILE), -(-m // TILE), g * splits), (THREADS,), 0


def weight_splits(dims):
    """K slices of backward-weight: enough blocks for ~2 waves, each slice >= 32 k-tiles of 8."""
    (gx, gy, g), _, _ = launch_config("bwd_weight", dims)
    blocks = gx * gy * g
    k_tiles = -(-dims["N"] * dims["OH"] * dims["OW"] // 8)
    want = -(-2 * _backend.sm_count(_backend.cupy().cuda.Device().id) // blocks)
    return int(max(1, min(want, k_tiles // 32, 65535 // g)))


def _check_big(fn, dims):
    for name, v in (("N*OH*OW", dims["N"] * dims["OH"] * dims["OW"]), ("N*H*W", dims["N"] * dims["H"] * dims["W"])):
        if v >= 2**31 - TILE:
            raise ValueError(f"{fn}: {name} = {v} is too large for the 32-bit GEMM indices")


def _suffix(layout):
    return "nchw" if layout == "NCHW" else "nhwc"


def conv2d_forward(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, relu=False, layout="NCHW", out=None):
    """Return ``y = conv(x, w) (+ bias[oc]) (ReLU)``."""
    fn = "cuda.conv2d_forward"
    check_array(fn, "x", x, ndim=4)
    check_array(fn, "w", w, ndim=4)
    dims, y_shape = _geometry(fn, x.shape, w.shape, stride, padding, dilation, groups, layout)
    _check_big(fn, dims)
    bias = check_vector(fn, "bias", bias, dims["OC"])
    y = check_output(fn, "out", out, y_shape)
    grid, block, smem = launch_config("fwd", dims)
    _backend.launch("conv.cu", f"pn_conv2d_fwd_{_suffix(layout)}", grid, block,
                    (x, w, bias, y) + _dims_args(dims, relu), smem)
    return y


def conv2d_backward_data(dy, w, x_shape, stride=1, padding=0, dilation=1, groups=1, layout="NCHW", out=None):
    """Return ``dx`` (of ``x_shape``) for ``dy`` and the weights ``w``."""
    fn = "cuda.conv2d_backward_data"
    check_array(fn, "dy", dy, ndim=4)
    check_array(fn, "w", w, ndim=4)
    dims, y_shape = _geometry(fn, tuple(int(v) for v in x_shape), w.shape, stride, padding, dilation, groups, layout)
    if dy.shape != y_shape:
        raise ValueError(f"{fn}: dy has shape {dy.shape}, the convolution of x_shape {tuple(x_shape)} "
                         f"with w {w.shape} gives {y_shape}")
    _check_big(fn, dims)
    dx = check_output(fn, "out", out, tuple(int(v) for v in x_shape))
    grid, block, smem = launch_config("bwd_data", dims)
    _backend.launch("conv.cu", f"pn_conv2d_bwd_data_{_suffix(layout)}", grid, block,
                    (dy, w, None, dx) + _dims_args(dims), smem)
    return dx


def conv2d_backward_weight(dy, x, w_shape, stride=1, padding=0, dilation=1, groups=1, layout="NCHW", out=None,
                           deterministic=False):
    """Return ``dw`` (of ``w_shape``). The reduction over N*OH*OW is split over several blocks that
    add atomically (run-to-run bit differences) unless ``deterministic``."""
    fn = "cuda.conv2d_backward_weight"
    check_array(fn, "dy", dy, ndim=4)
    check_array(fn, "x", x, ndim=4)
    w_shape = tuple(int(v) for v in w_shape)
    dims, y_shape = _geometry(fn, x.shape, w_shape, stride, padding, dilation, groups, layout)
    if dy.shape != y_shape:
        raise ValueError(f"{fn}: dy has shape {dy.shape}, the convolution of x {x.shape} with w_shape "
                         f"{w_shape} gives {y_shape}")
    _check_big(fn, dims)
    dw = check_output(fn, "out", out, w_shape)
    splits = 1 if deterministic else weight_splits(dims)
    if splits > 1:
        fill(dw, 0.0)
    grid, block, smem = launch_config("bwd_weight", dims, splits)
    _backend.launch("conv.cu", f"pn_conv2d_bwd_weight_{_suffix(layout)}", grid, block,
                    (x, dy, None, dw) + _dims_args(dims), smem)
    return dw
