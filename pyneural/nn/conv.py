"""Conv2d and the 2-D pooling layers."""
import math

import numpy as np

from pyneural.functions import conv as _conv
from pyneural.functions import pool as _pool
from pyneural.kernels._checks import pair
from pyneural.nn import init
from pyneural.nn.linear import input_shape
from pyneural.nn.module import Module, Parameter


class Conv2d(Module):
    """2-D convolution over (N, C, H, W); weight (out_channels, in_channels/groups, kh, kw)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, dtype=None):
        super().__init__()
        name = "Conv2d"
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{name}: groups={groups} must divide in_channels={in_channels} and "
                             f"out_channels={out_channels}")
        if isinstance(padding, str):
            raise ValueError(f"{name}: string padding {padding!r} is not supported; give an int or a pair")
        self.in_channels, self.out_channels, self.groups = int(in_channels), int(out_channels), int(groups)
        self.kernel_size = pair(name, "kernel_size", kernel_size, 1)
        self.stride = pair(name, "stride", stride, 1)
        self.padding = pair(name, "padding", padding, 0)
        self.dilation = pair(name, "dilation", dilation, 1)
        dtype = np.dtype(dtype or np.float32)
        self.weight = Parameter(np.empty((self.out_channels, self.in_channels // self.groups) + self.kernel_size,
                                         dtype=dtype))
        self.bias = Parameter(np.empty(self.out_channels, dtype=dtype)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = init.default_bias_bound(self.weight)
            init.uniform_(self.bias, -bound, bound)

    def _check(self, x):
        shape = input_shape(self, x)
        if len(shape) != 4 or shape[1] != self.in_channels:
            raise ValueError(f"{self!r}: expected input (N, {self.in_channels}, H, W), got {shape}")
        for d in range(2):
            span = self.dilation[d] * (self.kernel_size[d] - 1) + 1
            if shape[2 + d] + 2 * self.padding[d] < span:
                raise ValueError(f"{self!r}: input {shape} is smaller than the (dilated) kernel "
                                 f"{self.kernel_size} after padding {self.padding}")
        if x.data.dtype != self.weight.data.dtype:
            raise TypeError(f"{self!r}: input dtype {x.data.dtype} differs from the weight's {self.weight.data.dtype}")

    def _apply(self, x, relu):
        self._check(x)
        f = _conv.Conv2d(self.stride, self.padding, self.dilation, self.groups, relu=relu)
        return f.apply(x, self.weight) if self.bias is None else f.apply(x, self.weight, self.bias)

    def forward(self, x):
        return self._apply(x, False)

    def forward_relu(self, x):
        """relu(self(x)) with the ReLU fused into the convolution's epilogue."""
        return self._apply(x, True)

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class _Pool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        name = type(self).__name__
        self.kernel_size = pair(name, "kernel_size", kernel_size, 1)
        self.stride = self.kernel_size if stride is None else pair(name, "stride", stride, 1)
        self.padding = pair(name, "padding", padding, 0)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(f"{name}: padding {self.padding} must be at most half the kernel size {self.kernel_size}")

    def _check(self, x):
        shape = input_shape(self, x)
        if len(shape) != 4:
            raise ValueError(f"{self!r}: expected input (N, C, H, W), got {shape}")
        for d in range(2):
            if shape[2 + d] + 2 * self.padding[d] < self.kernel_size[d]:
                raise ValueError(f"{self!r}: input {shape} is smaller than the kernel {self.kernel_size} "
                                 f"after padding {self.padding}")

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2d(_Pool2d):
    def forward(self, x):
        self._check(x)
        return _pool.MaxPool2d(self.kernel_size, self.stride, self.padding).apply(x)


class AvgPool2d(_Pool2d):
    def __init__(self, kernel_size, stride=None, padding=0, count_include_pad=True):
        super().__init__(kernel_size, stride, padding)
        self.count_include_pad = bool(count_include_pad)

    def forward(self, x):
        self._check(x)
        return _pool.AvgPool2d(self.kernel_size, self.stride, self.padding, self.count_include_pad).apply(x)

    def extra_repr(self):
        return super().extra_repr() + f", count_include_pad={self.count_include_pad}"
