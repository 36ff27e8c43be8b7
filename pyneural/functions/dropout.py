"""Inverted dropout: in training, zero each element with probability p and scale the survivors
by 1/(1-p), so evaluation needs no rescaling. The mask comes from pyneural's seeded generator and
is the only thing backward keeps. On the CUDA device the mask is a counter-based (Philox) function
of a seed drawn from the same generator, so nothing is kept: backward recomputes it."""
import numpy as np

from pyneural import backend
from pyneural import random as _random
from pyneural.tensor import Function, get_array_module


class Dropout(Function):
    def __init__(self, p):
        self.p = p

    def forward(self, x):
        xp = get_array_module(x)
        if backend.is_device_array(x) and x.dtype == np.float32:
            from pyneural.cuda import dropout as _kernel
            self.seed = int(_random.integers(0, 2**63 - 1, ()))
            self.mask = None
            return _kernel.dropout_forward(xp.ascontiguousarray(x), self.p, self.seed)
        if self.p >= 1.0:
            self.mask = xp.zeros_like(x)
        else:
            keep = _random.random(x.shape, x.dtype) >= self.p
            self.mask = keep.astype(x.dtype)
            self.mask *= 1.0 / (1.0 - self.p)
        return x * self.mask

    def backward(self, gy):
        if self.mask is None:
            from pyneural.cuda import dropout as _kernel
            return (_kernel.dropout_backward(get_array_module(gy).ascontiguousarray(gy), self.p, self.seed),)
        return (gy * self.mask,)


def dropout(x, p=0.5, training=True):
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: probability p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if x.data.dtype.kind != "f":
        raise TypeError(f"dropout: needs a floating point tensor, got {x.data.dtype}")
    return Dropout(float(p)).apply(x)
