"""Inverted dropout: in training, zero each element with probability p and scale the survivors
by 1/(1-p), so evaluation needs no rescaling. The mask comes from pyneural's seeded generator and
is the only thing backward keeps. On the CUDA device the mask is a counter-based (Philox) function
of a seed drawn from the same generator, so nothing is kept: backward recomputes it (the backends'
``dropout_forward`` / ``dropout_backward``)."""
from pyneural import backend
from pyneural.tensor import Function


class Dropout(Function):
    def __init__(self, p):
        self.p = p

    def forward(self, x):
        y, self.saved = backend.of(x).dropout_forward(x, self.p)
        return y

    def backward(self, gy):
        return (backend.of(gy).dropout_backward(self.saved, gy),)


def dropout(x, p=0.5, training=True):
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: probability p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if x.data.dtype.kind != "f":
        raise TypeError(f"dropout: needs a floating point tensor, got {x.data.dtype}")
    return Dropout(float(p)).apply(x)
