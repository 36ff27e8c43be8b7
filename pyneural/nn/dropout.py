"""Dropout layer: active in training mode only."""
from pyneural.functions import dropout as _dropout
from pyneural.nn.module import Module


class Dropout(Module):
    def __init__(self, p=0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: probability p must be in [0, 1], got {p}")
        self.p = float(p)

    def forward(self, x):
        return _dropout.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"
