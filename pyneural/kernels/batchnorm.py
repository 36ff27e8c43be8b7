"""Batch normalisation over axis 1 of x (N, C, ...): per-channel statistics, the per-channel
affine map (with an optional fused ReLU) and the training backward.

float32 runs the C++ kernels in ``pyneural._C`` (csrc/cpu/batchnorm.cpp) with the GIL released;
float64 runs plain numpy (the gradient-check and reference path). A channels_last (NHWC) x is
passed as the (N*H*W, C) rows of its memory: 2-D x runs the row-wise kernels (vectors along C).
"""
import numpy as np

from pyneural import _C
from pyneural.kernels._checks import check_array, check_same_dtype

_F32 = np.dtype(np.float32)


def _check_x(fn, name, x):
    check_array(fn, name, x)
    if x.ndim < 2:
        raise ValueError(f"{fn}: {name} must have at least 2 dimensions (N, C, ...), got shape {x.shape}")


def _check_channels(fn, x, **vectors):
    for name, v in vectors.items():
        if v is None:
            continue
        check_array(fn, name, v, ndim=1)
        if v.shape[0] != x.shape[1]:
            raise ValueError(f"{fn}: {name} has shape {v.shape}, expected ({x.shape[1]},) for x of shape {x.shape}")
    check_same_dtype(fn, x=x, **vectors)


def _axes(x):
    return (0,) + tuple(range(2, x.ndim))


def _bshape(x):
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


def channel_stats(x):
    """Return ``(mean, var)``, each (C,): the mean and the biased variance of ``x[:, c, ...]``."""
    fn = "channel_stats"
    _check_x(fn, "x", x)
    c = x.shape[1]
    mean, var = np.empty(c, x.dtype), np.empty(c, x.dtype)
    if x.dtype == _F32:
        _C.channel_stats(x, mean, var)
        return mean, var
    mean[...] = x.mean(axis=_axes(x))
    var[...] = np.square(x - mean.reshape(_bshape(x))).mean(axis=_axes(x))
    return mean, var


def channel_affine(x, scale, shift, relu=False):
    """Return ``x * scale[c] + shift[c]`` along axis 1, then ``max(., 0)`` if ``relu``."""
    fn = "channel_affine"
    _check_x(fn, "x", x)
    _check_channels(fn, x, scale=scale, shift=shift)
    y = np.empty_like(x)
    if x.dtype == _F32:
        _C.channel_affine(x, scale, shift, y, bool(relu))
        return y
    b = _bshape(x)
    np.multiply(x, scale.reshape(b), out=y)
    y += shift.reshape(b)
    if relu:
        np.maximum(y, 0.0, out=y)
    return y


def batch_norm_backward(dy, x, mean, invstd, scale, y=None):
    """Gradients of training-mode batch norm ``out = relu?(xhat * gamma + beta)``, ``xhat = (x - mean)
    * invstd`` with the batch's own statistics. ``scale`` is ``gamma * invstd`` (or ``invstd`` without
    gamma); ``y``, when given, is the fused ReLU's output, whose mask applies to ``dy`` first.

    Returns ``(dx, dbeta, dgamma)``: ``dbeta = sum g`` and ``dgamma = sum g * xhat`` per channel
    (g the masked ``dy``) and ``dx = scale * (g - mean(g) - xhat * mean(g * xhat))``.
    """
    fn = "batch_norm_backward"
    _check_x(fn, "x", x)
    for name, a in (("dy", dy), ("y", y)):
        if a is not None:
            check_array(fn, name, a)
            if a.shape != x.shape:
                raise ValueError(f"{fn}: {name} has shape {a.shape}, expected the shape of x {x.shape}")
    check_same_dtype(fn, dy=dy, y=y, x=x)
    _check_channels(fn, x, mean=mean, invstd=invstd, scale=scale)
    c = x.shape[1]
    count = x.size // c
    dx = np.empty_like(dy)
    if x.dtype == _F32:
        sum_g, sum_gx = np.empty(c, _F32), np.empty(c, _F32)
        _C.batchnorm_backward_reduce(dy, y, x, mean, invstd, sum_g, sum_gx)
        _C.batchnorm_backward_apply(dy, y, x, mean, invstd, scale, sum_g / count, sum_gx / count, dx)
        return dx, sum_g, sum_gx
    b, axes = _bshape(x), _axes(x)
    g = dy if y is None else np.where(y > 0, dy, 0.0)
    xhat = (x - mean.reshape(b)) * invstd.reshape(b)
    sum_g, sum_gx = g.sum(axis=axes), (g * xhat).sum(axis=axes)
    dx[...] = scale.reshape(b) * (g - (sum_g / count).reshape(b) - xhat * (sum_gx / count).reshape(b))
    return dx, sum_g, sum_gx
