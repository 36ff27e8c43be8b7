"""2-D max / average pooling of NCHW CuPy float32 arrays (csrc/cuda/pool.cu), same semantics as
pyneural.kernels.pool (argmax is the int32 flat index h*W + w in the input plane)."""
import numpy as np

from pyneural.cuda import _backend
from pyneural.cuda._checks import check_array
from pyneural.kernels.pool import _check_x_shape, _geometry

_FILE = "pool.cu"
THREADS = 256


def launch_config(plane, planes):
    """One thread per output (forward) or input (backward) element of a plane; blockIdx.x = plane."""
    blocks = -(-plane // THREADS)
    if blocks > 65535:
        raise ValueError(f"cuda pooling: planes of {plane} elements exceed {65535 * THREADS}")
    return (planes, blocks), (THREADS,), 0


def _geom_args(x_shape, k, s, p, out):
    return tuple(np.int32(v) for v in (x_shape[2], x_shape[3], out[0], out[1], k[0], k[1], s[0], s[1], p[0], p[1]))


def max_pool2d_forward(x, kernel_size, stride=None, padding=0):
    """Return ``(y, argmax)``."""
    fn = "cuda.max_pool2d_forward"
    check_array(fn, "x", x, ndim=4)
    k, s, p, out = _geometry(fn, x.shape, kernel_size, stride, padding)
    cp = _backend.cupy()
    n, c = x.shape[:2]
    y = cp.empty((n, c) + out, dtype=np.float32)
    argmax = cp.empty((n, c) + out, dtype=np.int32)
    grid, block, smem = launch_config(out[0] * out[1], n * c)
    _backend.launch(_FILE, "pn_max_pool2d_fwd", grid, block, (x, y, argmax) + _geom_args(x.shape, k, s, p, out), smem)
    return y, argmax


def max_pool2d_backward(dy, argmax, x_shape, kernel_size, stride=None, padding=0):
    """Return ``dx``; the window geometry is needed to gather (no atomics). Indices in ``argmax`` that
    no window could have produced are ignored."""
    fn = "cuda.max_pool2d_backward"
    check_array(fn, "dy", dy, ndim=4)
    check_array(fn, "argmax", argmax, ndim=4, dtype=np.int32)
    x_shape = _check_x_shape(fn, x_shape)
    k, s, p, out = _geometry(fn, x_shape, kernel_size, stride, padding)
    if dy.shape != x_shape[:2] + out or argmax.shape != dy.shape:
        raise ValueError(f"{fn}: dy {dy.shape} and argmax {argmax.shape} must both be {x_shape[:2] + out} "
                         f"for x_shape {x_shape}, kernel_size {k}, stride {s}, padding {p}")
    dx = _backend.cupy().empty(x_shape, dtype=np.float32)
    grid, block, smem = launch_config(x_shape[2] * x_shape[3], x_shape[0] * x_shape[1])
    _backend.launch(_FILE, "pn_max_pool2d_bwd", grid, block, (dy, argmax, dx) + _geom_args(x_shape, k, s, p, out),
                    smem)
    return dx


def avg_pool2d_forward(x, kernel_size, stride=None, padding=0, count_include_pad=True):
    fn = "cuda.avg_pool2d_forward"
    check_array(fn, "x", x, ndim=4)
    k, s, p, out = _geometry(fn, x.shape, kernel_size, stride, padding)
    y = _backend.cupy().empty(x.shape[:2] + out, dtype=np.float32)
    grid, block, smem = launch_config(out[0] * out[1], x.shape[0] * x.shape[1])
    _backend.launch(_FILE, "pn_avg_pool2d_fwd", grid, block,
                    (x, y) + _geom_args(x.shape, k, s, p, out) + (np.int32(bool(count_include_pad)),), smem)
    return y


def avg_pool2d_backward(dy, x_shape, kernel_size, stride=None, padding=0, count_include_pad=True):
    fn = "cuda.avg_pool2d_backward"
    check_array(fn, "dy", dy, ndim=4)
    x_shape = _check_x_shape(fn, x_shape)
    k, s, p, out = _geometry(fn, x_shape, kernel_size, stride, padding)
    if dy.shape != x_shape[:2] + out:
        raise ValueError(f"{fn}: dy has shape {dy.shape} but pooling x_shape {x_shape} gives {x_shape[:2] + out}")
    dx = _backend.cupy().empty(x_shape, dtype=np.float32)
    grid, block, smem = launch_config(x_shape[2] * x_shape[3], x_shape[0] * x_shape[1])
    _backend.launch(_FILE, "pn_avg_pool2d_bwd", grid, block,
                    (dy, dx) + _geom_args(x_shape, k, s, p, out) + (np.int32(bool(count_include_pad)),), smem)
    return dx
