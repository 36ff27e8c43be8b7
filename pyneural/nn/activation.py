"""Activation layers: ReLU, GELU, Tanh, Sigmoid, Softmax, LogSoftmax."""
from pyneural.functions import activation as _act
from pyneural.nn.module import Module


class ReLU(Module):
    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace  # accepted for PyTorch compatibility; the op is never in place

    def forward(self, x):
        return _act.ReLU().apply(x)


class GELU(Module):
    """GELU; approximate="none" (exact erf, the default) or "tanh"."""

    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        return _act.gelu(x, self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class Tanh(Module):
    def forward(self, x):
        return _act.Tanh().apply(x)


class Sigmoid(Module):
    def forward(self, x):
        return _act.Sigmoid().apply(x)


class Softmax(Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return _act.softmax(x, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    def forward(self, x):
        return _act.log_softmax(x, self.dim)
