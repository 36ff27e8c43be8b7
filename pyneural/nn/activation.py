"""Activation layers with PyTorch's names and arguments: ReLU, ReLU6, LeakyReLU, ELU, SELU, SiLU,
Softplus, Hardtanh, Hardsigmoid, Hardswish, Mish, GELU, Tanh, Sigmoid, Softmax, LogSoftmax.

``inplace=True`` writes the result into the input, as in PyTorch (see functions.activation)."""
from pyneural.functions import activation as _act
from pyneural.nn.module import Module


class _Inplace(Module):
    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = bool(inplace)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class ReLU(_Inplace):
    def forward(self, x):
        return _act.relu(x, self.inplace)


class ReLU6(_Inplace):
    def forward(self, x):
        return _act.relu6(x, self.inplace)


class LeakyReLU(Module):
    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__()
        self.negative_slope, self.inplace = float(negative_slope), bool(inplace)

    def forward(self, x):
        return _act.leaky_relu(x, self.negative_slope, self.inplace)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class ELU(Module):
    def __init__(self, alpha=1.0, inplace=False):
        super().__init__()
        self.alpha, self.inplace = float(alpha), bool(inplace)

    def forward(self, x):
        return _act.elu(x, self.alpha, self.inplace)

    def extra_repr(self):
        return f"alpha={self.alpha}" + (", inplace=True" if self.inplace else "")


class SELU(_Inplace):
    def forward(self, x):
        return _act.selu(x, self.inplace)


class SiLU(_Inplace):
    def forward(self, x):
        return _act.silu(x, self.inplace)


class Hardsigmoid(_Inplace):
    def forward(self, x):
        return _act.hardsigmoid(x, self.inplace)


class Hardswish(_Inplace):
    def forward(self, x):
        return _act.hardswish(x, self.inplace)


class Mish(_Inplace):
    def forward(self, x):
        return _act.mish(x, self.inplace)


class Softplus(Module):
    def __init__(self, beta=1.0, threshold=20.0):
        super().__init__()
        self.beta, self.threshold = float(beta), float(threshold)

    def forward(self, x):
        return _act.softplus(x, self.beta, self.threshold)

    def extra_repr(self):
        return f"beta={self.beta}, threshold={self.threshold}"


class Hardtanh(Module):
    def __init__(self, min_val=-1.0, max_val=1.0, inplace=False):
        super().__init__()
        if min_val > max_val:
            raise ValueError(f"Hardtanh: min_val {min_val} must not exceed max_val {max_val}")
        self.min_val, self.max_val, self.inplace = min_val, max_val, bool(inplace)

    def forward(self, x):
        return _act.hardtanh(x, self.min_val, self.max_val, self.inplace)

    def extra_repr(self):
        return f"min_val={self.min_val}, max_val={self.max_val}" + (", inplace=True" if self.inplace else "")


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
    """Softmax over ``dim``; with dim=None PyTorch's legacy implicit choice (and its warning)."""

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return _act.softmax(x, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    def forward(self, x):
        return _act.log_softmax(x, self.dim)
