"""Elementwise kernels on CuPy float32 arrays (csrc/cuda/elementwise.cu): fill, bias (+ReLU),
ReLU backward, GELU, broadcasting add / sub / mul, a*x + b*y, SGD and Adam steps."""
import numpy as np

from pyneural.cuda import _backend
from pyneural.kernels._checks import check_device_array as check_array, check_device_output as check_output

_FILE = "elementwise.cu"
THREADS = 256


def _run(name, n, args):
    _backend.launch(_FILE, name, _backend.elementwise_grid(n, THREADS), (THREADS,), args)


def _same_shape(fn, ref_name, ref, **arrays):
    for name, a in arrays.items():
        check_array(fn, name, a)
        if a.shape != ref.shape:
            raise ValueError(f"{fn}: {name} has shape {a.shape} but {ref_name} has shape {ref.shape}")


def fill(out, value):
    """Set every element of ``out`` to ``value`` on the current stream."""
    check_array("cuda.fill", "out", out, allow_empty=True)
    if out.size:
        _run("pn_fill", out.size, (out, np.int64(out.size), np.float32(value)))
    return out


def bias_act(x, bias=None, relu=True, axis=1, out=None):
    """``x + bias`` broadcast along ``axis`` (bias length x.shape[axis]), then ReLU if ``relu``."""
    fn = "cuda.bias_act"
    check_array(fn, "x", x)
    axis = axis % x.ndim
    c = x.shape[axis]
    if bias is not None:
        check_array(fn, "bias", bias, ndim=1)
        if bias.shape != (c,):
            raise ValueError(f"{fn}: bias must have shape ({c},) for x {x.shape} along axis {axis}, got {bias.shape}")
    out = check_output(fn, "out", out, x.shape)
    inner = int(np.prod(x.shape[axis + 1:], dtype=np.int64))
    _run("pn_bias_act", x.size, (x, bias, out, np.int64(x.size), np.int64(c), np.int64(inner), np.int32(bool(relu))))
    return out


def relu_backward(dy, y, out=None):
    """``dy`` where the ReLU output ``y`` is positive, else 0."""
    fn = "cuda.relu_backward"
    check_array(fn, "dy", dy)
    _same_shape(fn, "dy", dy, y=y)
    out = check_output(fn, "out", out, dy.shape)
    _run("pn_relu_bwd", dy.size, (dy, y, out, np.int64(dy.size)))
    return out


def gelu(x, out=None):
    """Exact GELU ``x * Phi(x)``."""
    check_array("cuda.gelu", "x", x)
    out = check_output("cuda.gelu", "out", out, x.shape)
    _run("pn_gelu_fwd", x.size, (x, out, np.int64(x.size)))
    return out


def gelu_backward(x, dy, out=None):
    fn = "cuda.gelu_backward"
    check_array(fn, "x", x)
    _same_shape(fn, "x", x, dy=dy)
    out = check_output(fn, "out", out, x.shape)
    _run("pn_gelu_bwd", x.size, (x, dy, out, np.int64(x.size)))
    return out


_OPS = {"add": 0, "sub": 1, "mul": 2}


def binary(op, a, b, out=None):
    """``a op b`` with ``b`` broadcast onto ``a``'s shape; ``b``'s shape must be a contiguous block of
    a's axes with ones elsewhere (same shape, a scalar-like (1,), or e.g. (1, C, 1, 1) / (C,) on
    the trailing axes)."""
    fn = f"cuda.{op}"
    if op not in _OPS:
        raise ValueError(f"cuda.binary: op must be one of {sorted(_OPS)}, got {op!r}")
    check_array(fn, "a", a)
    check_array(fn, "b", b)
    bshape = (1,) * (a.ndim - b.ndim) + tuple(b.shape)
    if len(bshape) != a.ndim or any(bs not in (1, s) for bs, s in zip(bshape, a.shape)):
        raise ValueError(f"{fn}: b {b.shape} does not broadcast to a {a.shape}")
    live = [i for i, bs in enumerate(bshape) if bs != 1]
    if live and live != list(range(live[0], live[-1] + 1)):
        raise ValueError(f"{fn}: b {b.shape} broadcasts along non-adjacent axes of a {a.shape}; unsupported")
    inner = int(np.prod(a.shape[live[-1] + 1:], dtype=np.int64)) if live else 1
    out = check_output(fn, "out", out, a.shape)
    _run("pn_binary_bcast", a.size, (a, b, out, np.int64(a.size), np.int64(inner), np.int64(b.size),
                                     np.int32(_OPS[op])))
    return out


def axpby(alpha, x, beta=0.0, y=None, out=None):
    """``alpha * x + beta * y`` (``y`` optional); ``out`` may be ``x`` or ``y`` (in place)."""
    fn = "cuda.axpby"
    check_array(fn, "x", x)
    if y is not None:
        _same_shape(fn, "x", x, y=y)
    out = check_output(fn, "out", out, x.shape)
    _run("pn_axpby", x.size, (x, y, out, np.int64(x.size), np.float32(alpha), np.float32(beta)))
    return out


def sgd_update(param, grad, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, buf=None,
               first_step=False):
    """One torch.optim.SGD step in place on ``param`` (and the momentum buffer ``buf``)."""
    fn = "cuda.sgd_update"
    check_array(fn, "param", param)
    _same_shape(fn, "param", param, grad=grad)
    if momentum != 0.0:
        if buf is None:
            raise ValueError(f"{fn}: momentum={momentum} needs a momentum buffer buf of shape {param.shape}")
        _same_shape(fn, "param", param, buf=buf)
    _run("pn_sgd_update", param.size, (param, grad, buf if momentum != 0.0 else None, np.int64(param.size),
                                       np.float32(lr), np.float32(momentum), np.float32(dampening),
                                       np.float32(weight_decay), np.int32(bool(nesterov)), np.int32(bool(first_step))))
    return param


def adam_update(param, grad, exp_avg, exp_avg_sq, step, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                decoupled=False):
    """One Adam (or, with ``decoupled``, AdamW) step in place; ``step`` counts from 1."""
    fn = "cuda.adam_update"
    check_array(fn, "param", param)
    _same_shape(fn, "param", param, grad=grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
    if int(step) < 1:
        raise ValueError(f"{fn}: step counts from 1, got {step}")
    b1, b2 = (float(v) for v in betas)
    _run("pn_adam_update", param.size, (param, grad, exp_avg, exp_avg_sq, np.int64(param.size), np.float32(lr),
                                        np.float32(b1), np.float32(b2), np.float32(eps), np.float32(weight_decay),
                                        np.float32(1.0 - b1 ** int(step)), np.float32(1.0 - b2 ** int(step)),
                                        np.int32(bool(decoupled))))
    return param
