"""Batch normalisation on CuPy float32 arrays (csrc/cuda/batchnorm.cu). ``x`` is (N, C, ...)
(channel axis 1, NCHW) or, with ``channels_last=True``, (..., C) (NHWC / (N, C))."""
import numpy as np

from pyneural.cuda import _backend
from pyneural.kernels._checks import (
    check_device_array as check_array, check_device_output as check_output, check_device_vector as check_vector)

_FILE = "batchnorm.cu"
THREADS = 256


def _view(fn, x, channels_last):
    check_array(fn, "x", x)
    if x.ndim < 2:
        raise ValueError(f"{fn}: x must have at least 2 dimensions (N, C, ...), got shape {x.shape}")
    if channels_last:
        c = x.shape[-1]
        return x.size // c, c, 1
    c = x.shape[1]
    inner = x.size // (x.shape[0] * c)
    return x.shape[0], c, inner


def batch_stats(x, running_mean=None, running_var=None, momentum=0.1, channels_last=False):
    """Return ``(mean, var)`` (biased) per channel; update the running averages in place
    (unbiased variance, PyTorch's rule) when given."""
    fn = "cuda.batch_stats"
    outer, c, inner = _view(fn, x, channels_last)
    check_vector(fn, "running_mean", running_mean, c)
    check_vector(fn, "running_var", running_var, c)
    cp = _backend.cupy()
    mean, var = cp.empty((c,), dtype=np.float32), cp.empty((c,), dtype=np.float32)
    _backend.launch(_FILE, "pn_batchnorm_stats", (c,), (THREADS,),
                    (x, mean, var, running_mean, running_var, np.int32(outer), np.int32(c), np.int32(inner),
                     np.float32(momentum)))
    return mean, var


def batch_norm_apply(x, mean, var, gamma=None, beta=None, eps=1e-5, channels_last=False, out=None):
    """``(x - mean) / sqrt(var + eps) * gamma + beta`` per channel (train: batch stats; eval: the
    running ones)."""
    fn = "cuda.batch_norm_apply"
    outer, c, inner = _view(fn, x, channels_last)
    for name, v in (("mean", mean), ("var", var)):
        if v is None:
            raise TypeError(f"{fn}: {name} is required")
        check_vector(fn, name, v, c)
    check_vector(fn, "gamma", gamma, c)
    check_vector(fn, "beta", beta, c)
    out = check_output(fn, "out", out, x.shape)
    _backend.launch(_FILE, "pn_batchnorm_apply", _backend.elementwise_grid(x.size, THREADS), (THREADS,),
                    (x, mean, var, gamma, beta, out, np.int32(x.size), np.int32(c), np.int32(inner), np.float32(eps)))
    return out


def batch_norm_backward(x, dy, mean, var, gamma=None, eps=1e-5, channels_last=False):
    """Training-mode backward: return ``(dx, dgamma, dbeta)`` given the batch ``mean`` / ``var``."""
    fn = "cuda.batch_norm_backward"
    outer, c, inner = _view(fn, x, channels_last)
    check_array(fn, "dy", dy)
    if dy.shape != x.shape:
        raise ValueError(f"{fn}: dy has shape {dy.shape} but x has shape {x.shape}")
    check_vector(fn, "mean", mean, c)
    check_vector(fn, "var", var, c)
    check_vector(fn, "gamma", gamma, c)
    cp = _backend.cupy()
    dx = cp.empty(x.shape, dtype=np.float32)
    dgamma, dbeta = cp.empty((c,), dtype=np.float32), cp.empty((c,), dtype=np.float32)
    _backend.launch(_FILE, "pn_batchnorm_bwd", (c,), (THREADS,),
                    (x, dy, mean, var, gamma, dx, dgamma, dbeta, np.int32(outer), np.int32(c), np.int32(inner),
                     np.float32(eps)))
    return dx, dgamma, dbeta
