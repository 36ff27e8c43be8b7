"""2-D convolution on the tensor cores (csrc/cuda/conv_tc.cu): bf16 / fp16 implicit GEMM with mma.sync,
fp32 accumulation; forward with fused bias + ReLU, backward-data, backward-weight; NCHW or NHWC.

Layouts and hyper-parameters as :mod:`pyneural.cuda.conv` (the fp32 kernels): ``"NCHW"``: x (N, C, H, W),
w (OC, C/groups, KH, KW), y (N, OC, OH, OW); ``"NHWC"`` (channels_last): x (N, H, W, C),
w (OC, KH, KW, C/groups), y (N, OH, OW, OC). Operands: one dtype, bfloat16 (CuPy with ml_dtypes) or
float16, C-contiguous; bias: a float vector, used as float32. Output: float32 (the default) or the input
dtype (``out_dtype=``, or ``out=``'s dtype).

All launch arithmetic (the GEMM shape of each pass, grid, block, shared memory, K slices) lives in this
module. Loading: the kernels are launched through the cached ``cupy.RawModule`` of conv_tc.cu
(``_backend``'s, which on the emulated device compiles the same source with g++), as tensor_core.py
does: the prebuilt pyneural._cuda's launch takes no 16-bit arrays.
"""
import functools

import numpy as np

from pyneural.cuda import _backend
from pyneural.cuda.conv import _check_big, _geometry  # the fp32 kernels' geometry and checks: one place
from pyneural.cuda.elementwise import fill
from pyneural.kernels._checks import INT32_MAX, check_array, check_output, check_same_dtype, check_vector

_FILE = "conv_tc.cu"
BLOCK = (128, 128)         # (BM, BN) of gemm_tc_tile.cuh
BK = 32                    # K per stage for 16-bit operands
THREADS = 256
STAGES = 3                 # PN_TC_STAGES' default in gemm_tc_tile.cuh (conv_tc.cu is compiled without -D)
STAGE_BYTES = 16384
SMEM = STAGES * STAGE_BYTES
_TYPE = {"bfloat16": "bf16", "float16": "f16"}
_OUT_KIND = {"float32": 0, "bfloat16": 1, "float16": 2}
_BIAS_DTYPES = (np.float32, np.float16, np.float64)


@functools.cache
def operand_dtypes():
    """bfloat16 (where ml_dtypes provides it: a CuPy without it holds no bfloat16 arrays) and float16.
    Asked at the first call, not at import: importing ml_dtypes takes over a second."""
    try:
        import ml_dtypes
    except ImportError:
        return (np.float16,)
    return (ml_dtypes.bfloat16, np.float16)


# ---- argument checks ---------------------------------------------------------------------------
def _check_operand(fn, name, a):
    check_array(fn, name, a, ndim=4, dtypes=operand_dtypes(), on="cuda")
    if a.size > INT32_MAX:
        raise ValueError(f"{fn}: {name} {a.shape} has {a.size} elements; the kernels index with 32 bits (< 2^31)")
    return a


def _check_operands(fn, **arrays):
    for name, a in arrays.items():
        _check_operand(fn, name, a)
    check_same_dtype(fn, **arrays)
    return next(iter(arrays.values())).dtype


def _output(fn, out, out_dtype, shape, in_dtype):
    """The output array (made when ``out`` is None) after checking its dtype: float32 or ``in_dtype``."""
    if out_dtype is None:
        out_dtype = out.dtype if out is not None else np.float32
    out_dtype = np.dtype(out_dtype)
    if out_dtype not in (np.dtype(np.float32), np.dtype(in_dtype)):
        raise TypeError(f"{fn}: out_dtype must be float32 or the input dtype {np.dtype(in_dtype).name}, got {out_dtype}")
    out = check_output(fn, "out", out, shape, out_dtype, on="cuda")
    if out.size > INT32_MAX:
        raise ValueError(f"{fn}: out {out.shape} has {out.size} elements; the kernels index with 32 bits (< 2^31)")
    return out


def _check_dy(fn, dy, y_shape, what):
    if dy.shape != y_shape:
        raise ValueError(f"{fn}: dy has shape {dy.shape}, the convolution of {what} gives {y_shape}")


def _check_grid(fn, dims):
    _check_big(fn, dims)
    if dims["G"] > 65535:
        raise ValueError(f"{fn}: groups={dims['G']} exceeds the 65535 blocks of the grid's z dimension")


# ---- launch arithmetic -------------------------------------------------------------------------
def gemm_shape(kind, dims, layout):
    """(M, N, K) of pass ``kind`` ('fwd', 'bwd_data', 'bwd_weight') per group: conv_tc.cu's table, with
    the output's contiguous index as N."""
    g = dims["G"]
    cg, ocg, taps = dims["C"] // g, dims["OC"] // g, dims["KH"] * dims["KW"]
    out_pixels = dims["N"] * dims["OH"] * dims["OW"]
    in_pixels = dims["N"] * dims["H"] * dims["W"]
    if kind == "fwd":
        m, n = (ocg, out_pixels) if layout == "NCHW" else (out_pixels, ocg)
        return m, n, cg * taps
    if kind == "bwd_data":
        m, n = (cg, in_pixels) if layout == "NCHW" else (in_pixels, cg)
        return m, n, ocg * taps
    return ocg, cg * taps, out_pixels


def launch_config(kind, dims, layout, splits=1):
    """(grid, block, dynamic shared memory bytes) of pass ``kind``: one block per 128 x 128 tile of the
    GEMM (1-D, rasterised in the kernel), times groups x K slices in z."""
    m, n, _ = gemm_shape(kind, dims, layout)
    tiles = -(-m // BLOCK[0]) * -(-n // BLOCK[1])
    return (tiles, 1, dims["G"] * splits), (THREADS,), SMEM


def weight_splits(dims, layout):
    """K slices of backward-weight: enough blocks for ~2 waves of the SMs, each slice >= 16 k-tiles."""
    (tiles, _, g), _, _ = launch_config("bwd_weight", dims, layout)
    k_tiles = -(-gemm_shape("bwd_weight", dims, layout)[2] // BK)
    want = -(-2 * _backend.sm_count(_backend.cupy().cuda.Device().id) // (tiles * g))
    return int(max(1, min(want, k_tiles // 16, 65535 // g)))


def _kernel(kind, layout, dtype):
    name = f"pn_conv_tc_{kind}_{layout.lower()}_{_TYPE[np.dtype(dtype).name]}"
    return _backend._raw_kernel(_FILE, name, _backend.cupy().cuda.Device().id)


def _launch(kind, layout, dtype, dims, in0, in1, bias, out, relu=False, splits=1):
    grid, block, smem = launch_config(kind, dims, layout, splits)
    keys = ("N", "C", "H", "W", "OC", "KH", "KW", "OH", "OW", "sh", "sw", "ph", "pw", "dh", "dw", "G")
    args = (in0, in1, np.uint64(0) if bias is None else bias, out) + tuple(np.int32(dims[k]) for k in keys)
    args += (np.int32(bool(relu)), np.int32(_OUT_KIND[out.dtype.name]))
    _kernel(kind, layout, dtype)(grid, block, args, shared_mem=smem)


# ---- the three passes --------------------------------------------------------------------------
def conv2d_forward(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, relu=False, layout="NCHW",
                   out_dtype=None, out=None):
    """Return ``y = conv(x, w) (+ bias[oc]) (ReLU)``, accumulated in fp32."""
    fn = "cuda.conv_tc.conv2d_forward"
    dtype = _check_operands(fn, x=x, w=w)
    dims, y_shape = _geometry(fn, x.shape, w.shape, stride, padding, dilation, groups, layout)
    _check_grid(fn, dims)
    if bias is not None:
        check_vector(fn, "bias", bias, dims["OC"], dtypes=_BIAS_DTYPES + operand_dtypes(), on="cuda")
        bias = _backend.cupy().ascontiguousarray(bias, dtype=np.float32)
    y = _output(fn, out, out_dtype, y_shape, dtype)
    _launch("fwd", layout, dtype, dims, x, w, bias, y, relu=relu)
    return y


def conv2d_backward_data(dy, w, x_shape, stride=1, padding=0, dilation=1, groups=1, layout="NCHW", out_dtype=None,
                         out=None):
    """Return ``dx`` (of ``x_shape``) for ``dy`` and the weights ``w``."""
    fn = "cuda.conv_tc.conv2d_backward_data"
    dtype = _check_operands(fn, dy=dy, w=w)
    x_shape = tuple(int(v) for v in x_shape)
    dims, y_shape = _geometry(fn, x_shape, w.shape, stride, padding, dilation, groups, layout)
    _check_dy(fn, dy, y_shape, f"x_shape {x_shape} with w {w.shape}")
    _check_grid(fn, dims)
    dx = _output(fn, out, out_dtype, x_shape, dtype)
    _launch("bwd_data", layout, dtype, dims, dy, w, None, dx)
    return dx


def conv2d_backward_weight(dy, x, w_shape, stride=1, padding=0, dilation=1, groups=1, layout="NCHW", out_dtype=None,
                           out=None, deterministic=False):
    """Return ``dw`` (of ``w_shape``). The reduction over N*OH*OW is split over K slices that add
    atomically in fp32 (run-to-run bit differences on a GPU) unless ``deterministic``; a 16-bit ``dw``
    is then rounded once from an fp32 buffer."""
    fn = "cuda.conv_tc.conv2d_backward_weight"
    dtype = _check_operands(fn, dy=dy, x=x)
    w_shape = tuple(int(v) for v in w_shape)
    dims, y_shape = _geometry(fn, x.shape, w_shape, stride, padding, dilation, groups, layout)
    _check_dy(fn, dy, y_shape, f"x {x.shape} with w_shape {w_shape}")
    _check_grid(fn, dims)
    dw = _output(fn, out, out_dtype, w_shape, dtype)
    splits = 1 if deterministic else weight_splits(dims, layout)
    if splits == 1:
        _launch("bwd_weight", layout, dtype, dims, x, dy, None, dw)
        return dw
    acc = dw if dw.dtype == np.float32 else _backend.cupy().empty(w_shape, dtype=np.float32)
    fill(acc, 0.0)
    _launch("bwd_weight", layout, dtype, dims, x, dy, None, acc, splits=splits)
    if acc is not dw:
        dw[...] = acc.astype(dw.dtype)
    return dw
