"""2-D max / average pooling of CuPy float32 arrays (csrc/cuda/pool.cu), same semantics as
pyneural.kernels.pool (argmax is the int32 flat index h*W + w in the input plane).

``layout="NCHW"`` (default) or ``"NHWC"`` (channels last): x, y, argmax, dy and dx are all in that
layout, and ``x_shape`` is given in it too; the results equal the NCHW ones transposed, bit for bit."""
import numpy as np

from pyneural.cuda import _backend
from pyneural.kernels._checks import INT32_MAX, check_device_array as check_array
from pyneural.kernels.pool import _check_x_shape, _geometry

_FILE = "pool.cu"
THREADS = 256
LAYOUTS = ("NCHW", "NHWC")


def launch_config(plane, planes):
    """NCHW: one thread per output (forward) or input (backward) element of a plane; blockIdx.x = plane."""
    blocks = -(-plane // THREADS)
    if blocks > 65535:
        raise ValueError(f"cuda pooling: planes of {plane} elements exceed {65535 * THREADS}")
    return (planes, blocks), (THREADS,), 0


def _nchw(fn, shape, layout):
    """``shape`` (in ``layout``) as (N, C, H, W)."""
    if layout not in LAYOUTS:
        raise ValueError(f"{fn}: layout must be 'NCHW' or 'NHWC', got {layout!r}")
    return tuple(shape) if layout == "NCHW" else (shape[0], shape[3], shape[1], shape[2])


def _in_layout(shape, layout):
    """An (N, C, H, W) ``shape`` in ``layout``."""
    return tuple(shape) if layout == "NCHW" else (shape[0], shape[2], shape[3], shape[1])


def _launch(fn, kernels, layout, threads_shape, arrays, geom, extra=()):
    """Run ``kernels[0]`` (NCHW) or ``kernels[1]`` (NHWC) with one thread per element of the (N, C,
    H, W) ``threads_shape``: y's shape forward, x's backward."""
    n, c, h, w = threads_shape
    if layout == "NCHW":
        grid, block, smem = launch_config(h * w, n * c)
        _backend.launch(_FILE, kernels[0], grid, block, arrays + geom + extra, smem)
        return
    count = n * c * h * w
    if count > INT32_MAX:
        raise ValueError(f"{fn}: {count} elements of shape {_in_layout(threads_shape, layout)}; the NHWC kernels index "
                         f"with 32 bits (< 2^31)")
    _backend.launch(_FILE, kernels[1], (-(-count // THREADS),), (THREADS,),
                    arrays + (np.int32(count), np.int32(c)) + geom + extra)


def _geom_args(x_shape, k, s, p, out):
    return tuple(np.int32(v) for v in (x_shape[2], x_shape[3], out[0], out[1], k[0], k[1], s[0], s[1], p[0], p[1]))


def max_pool2d_forward(x, kernel_size, stride=None, padding=0, layout="NCHW"):
    """Return ``(y, argmax)``."""
    fn = "cuda.max_pool2d_forward"
    check_array(fn, "x", x, ndim=4)
    x_shape = _nchw(fn, x.shape, layout)
    k, s, p, out = _geometry(fn, x_shape, kernel_size, stride, padding)
    cp = _backend.cupy()
    y_shape = x_shape[:2] + out
    y = cp.empty(_in_layout(y_shape, layout), dtype=np.float32)
    argmax = cp.empty(y.shape, dtype=np.int32)
    _launch(fn, ("pn_max_pool2d_fwd", "pn_max_pool2d_fwd_nhwc"), layout, y_shape, (x, y, argmax),
            _geom_args(x_shape, k, s, p, out))
    return y, argmax


def max_pool2d_backward(dy, argmax, x_shape, kernel_size, stride=None, padding=0, layout="NCHW"):
    """Return ``dx``; the window geometry is needed to gather (no atomics). Indices in ``argmax`` that
    no window could have produced are ignored."""
    fn = "cuda.max_pool2d_backward"
    check_array(fn, "dy", dy, ndim=4)
    check_array(fn, "argmax", argmax, ndim=4, dtype=np.int32)
    x_shape = _nchw(fn, _check_x_shape(fn, x_shape), layout)
    k, s, p, out = _geometry(fn, x_shape, kernel_size, stride, padding)
    y_shape = _in_layout(x_shape[:2] + out, layout)
    if dy.shape != y_shape or argmax.shape != dy.shape:
        raise ValueError(f"{fn}: dy {dy.shape} and argmax {argmax.shape} must both be {y_shape} for x_shape "
                         f"{_in_layout(x_shape, layout)} ({layout}), kernel_size {k}, stride {s}, padding {p}")
    dx = _backend.cupy().empty(_in_layout(x_shape, layout), dtype=np.float32)
    _launch(fn, ("pn_max_pool2d_bwd", "pn_max_pool2d_bwd_nhwc"), layout, x_shape, (dy, argmax, dx),
            _geom_args(x_shape, k, s, p, out))
    return dx


def avg_pool2d_forward(x, kernel_size, stride=None, padding=0, count_include_pad=True, layout="NCHW"):
    fn = "cuda.avg_pool2d_forward"
    check_array(fn, "x", x, ndim=4)
    x_shape = _nchw(fn, x.shape, layout)
    k, s, p, out = _geometry(fn, x_shape, kernel_size, stride, padding)
    y_shape = x_shape[:2] + out
    y = _backend.cupy().empty(_in_layout(y_shape, layout), dtype=np.float32)
    _launch(fn, ("pn_avg_pool2d_fwd", "pn_avg_pool2d_fwd_nhwc"), layout, y_shape, (x, y),
            _geom_args(x_shape, k, s, p, out), (np.int32(bool(count_include_pad)),))
    return y


def avg_pool2d_backward(dy, x_shape, kernel_size, stride=None, padding=0, count_include_pad=True, layout="NCHW"):
    fn = "cuda.avg_pool2d_backward"
    check_array(fn, "dy", dy, ndim=4)
    x_shape = _nchw(fn, _check_x_shape(fn, x_shape), layout)
    k, s, p, out = _geometry(fn, x_shape, kernel_size, stride, padding)
    y_shape = _in_layout(x_shape[:2] + out, layout)
    if dy.shape != y_shape:
        raise ValueError(f"{fn}: dy has shape {dy.shape} but pooling x_shape {_in_layout(x_shape, layout)} ({layout}) "
                         f"gives {y_shape}")
    dx = _backend.cupy().empty(_in_layout(x_shape, layout), dtype=np.float32)
    _launch(fn, ("pn_avg_pool2d_bwd", "pn_avg_pool2d_bwd_nhwc"), layout, x_shape, (dy, dx),
            _geom_args(x_shape, k, s, p, out), (np.int32(bool(count_include_pad)),))
    return dx
