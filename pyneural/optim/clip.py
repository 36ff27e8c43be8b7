"""Gradient clipping: by global norm, and by value."""
import math

import numpy as np

from pyneural import backend
from pyneural.tensor import wrap

from .optimizer import grad_array


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale all gradients in place so their joint ``norm_type``-norm is at most ``max_norm``.

    The norm is taken over all gradients as if concatenated into one vector. Returns the total
    norm before clipping, as a float (on the CUDA device: a 0-d device tensor, so that clipping
    needs no host transfer; its kernels use eps = 1e-6 the same way). Parameters without a
    gradient are skipped. A non-finite
    norm leaves the gradients untouched (PyTorch would scale them by NaN) unless
    ``error_if_nonfinite`` asks for a RuntimeError.
    """
    if hasattr(parameters, "data"):
        parameters = [parameters]
    grads = [g for g in (grad_array(p) for p in parameters) if g is not None]
    max_norm, norm_type = float(max_norm), float(norm_type)
    if max_norm < 0:
        raise ValueError(f"clip_grad_norm_: max_norm must be >= 0, got {max_norm}")
    if norm_type <= 0:
        raise ValueError(f"clip_grad_norm_: norm_type must be > 0 or inf, got {norm_type}")
    if not grads:
        return 0.0
    if all(backend.is_device_array(g) and g.dtype == np.float32 for g in grads) and not error_if_nonfinite:
        # on the device: norm and scaling without a host transfer; the norm comes back as a 0-d tensor
        from pyneural.cuda import reduce as _kernels
        return wrap(_kernels.clip_grad_norm_(grads, max_norm, norm_type))
    if math.isinf(norm_type):
        total = max(float(np.max(np.abs(g))) if g.size else 0.0 for g in grads)
    elif norm_type == 2.0:
        # dot(x, x) of the flat view: one BLAS pass, no |x|**p temporary.
        total = math.sqrt(sum(float(np.dot(g.ravel(), g.ravel())) for g in grads))
    else:
        total = sum(float(np.sum(np.abs(g, dtype=np.float64) ** norm_type)) for g in grads) ** (1.0 / norm_type)
    if not math.isfinite(total):
        if error_if_nonfinite:
            raise RuntimeError(f"clip_grad_norm_: the total {norm_type}-norm of the gradients is {total}")
        return total
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for g in grads:
            g *= coef
    return total


def clip_grad_value_(parameters, clip_value):
    """Clamp every gradient in place to ``[-clip_value, clip_value]``; parameters without a
    gradient are skipped."""
    if hasattr(parameters, "data"):
        parameters = [parameters]
    clip_value = float(clip_value)
    if clip_value < 0:
        raise ValueError(f"clip_grad_value_: clip_value must be >= 0, got {clip_value}")
    for g in (grad_array(p) for p in parameters):
        if g is not None:
            backend.xp(g).clip(g, -clip_value, clip_value, out=g)
