"""Inverted dropout: in training, zero each element with probability p and scale the survivors
by 1/(1-p), so evaluation needs no rescaling. The mask comes from pyneural's seeded generator and
is the only thing backward keeps."""
from pyneural import random as _random
from pyneural.tensor import Function, get_array_module


class Dropout(Function):
    def __init__(self, p):
        self.p = p

    def forward(self, x):
        xp = get_array_module(x)
        if self.p >= 1.0:
            self.mask = xp.zeros_like(x)
        else:
            keep = _random.random(x.shape, x.dtype) >= self.p
            self.mask = keep.astype(x.dtype)
            self.mask *= 1.0 / (1.0 - self.p)
        return x * self.mask

    def backward(self, gy):
        return (gy * self.mask,)


def dropout(x, p=0.5, training=True):
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: probability p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if x.data.dtype.kind != "f":
        raise TypeError(f"dropout: needs a floating point tensor, got {x.data.dtype}")
    return Dropout(float(p)).apply(x)
