"""Linear, Identity, Flatten and Unflatten."""
import math

import numpy as np

from pyneural.functions import matmul as _matmul
from pyneural.functions import shape as _shape
from pyneural.nn import init
from pyneural.nn.module import Module, Parameter
from pyneural.tensor import Tensor


def input_shape(layer, x):
    """``x.data.shape``, or a TypeError naming the layer when x is not a Tensor."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{layer!r}: expected a pyneural Tensor input, got {type(x).__name__}")
    return x.data.shape


class Linear(Module):
    """y = x @ weight.T + bias, weight (out_features, in_features)."""

    def __init__(self, in_features, out_features, bias=True, dtype=None):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        dtype = np.dtype(dtype or np.float32)
        self.weight = Parameter(np.empty((self.out_features, self.in_features), dtype=dtype))
        self.bias = Parameter(np.empty(self.out_features, dtype=dtype)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = init.default_bias_bound(self.weight)
            init.uniform_(self.bias, -bound, bound)

    def _check(self, x):
        shape = input_shape(self, x)
        if not shape or shape[-1] != self.in_features:
            raise ValueError(f"{self!r}: expected input (..., {self.in_features}), got {shape}")
        if x.data.dtype != self.weight.data.dtype:
            raise TypeError(f"{self!r}: input dtype {x.data.dtype} differs from the weight's "
                            f"{self.weight.data.dtype}; convert one with .to(dtype)")

    def forward(self, x):
        self._check(x)
        if self.bias is None:
            return _matmul.Linear(False).apply(x, self.weight)
        return _matmul.Linear(False).apply(x, self.weight, self.bias)

    def forward_relu(self, x):
        """relu(self(x)) as one fused op (what Sequential runs for Linear followed by ReLU)."""
        self._check(x)
        if self.bias is None:
            return _matmul.Linear(True).apply(x, self.weight)
        return _matmul.Linear(True).apply(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Identity(Module):
    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x


class Flatten(Module):
    """Flatten dims start_dim..end_dim (by default all but the batch dim)."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        shape = input_shape(self, x)
        if len(shape) <= max(self.start_dim, self.end_dim if self.end_dim >= 0 else 0):
            raise ValueError(f"{self!r}: input of shape {shape} has too few dimensions")
        return _shape.flatten(x, self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Unflatten(Module):
    """Split dimension ``dim`` into ``unflattened_size`` (one entry may be -1)."""

    def __init__(self, dim, unflattened_size):
        super().__init__()
        self.dim, self.unflattened_size = int(dim), tuple(int(n) for n in unflattened_size)
        if not self.unflattened_size or sum(n == -1 for n in self.unflattened_size) > 1 \
                or any(n < -1 or n == 0 for n in self.unflattened_size):
            raise ValueError(f"Unflatten: unflattened_size must be positive sizes with at most one -1, got "
                             f"{unflattened_size!r}")

    def forward(self, x):
        shape = input_shape(self, x)
        if not -len(shape) <= self.dim < len(shape):
            raise ValueError(f"{self!r}: dim {self.dim} out of range for input of shape {shape}")
        d = self.dim % len(shape)
        known = int(np.prod([n for n in self.unflattened_size if n != -1]))
        if shape[d] % known or (-1 not in self.unflattened_size and known != shape[d]):
            raise ValueError(f"{self!r}: dimension {d} of input {shape} has {shape[d]} elements, which "
                             f"{self.unflattened_size} does not split")
        sizes = tuple(shape[d] // known if n == -1 else n for n in self.unflattened_size)
        return _shape.reshape(x, shape[:d] + sizes + shape[d + 1:])

    def extra_repr(self):
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"
