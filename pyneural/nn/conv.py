"""Convolution layers: Conv1d, Conv2d and ConvTranspose2d (PyTorch's arguments, weight layouts and
initialisation). The pooling layers live in pyneural/nn/pool.py."""
import math

import numpy as np

from pyneural.functions import conv as _conv
from pyneural.kernels._checks import pair
from pyneural.nn import init
from pyneural.nn.linear import input_shape
from pyneural.nn.module import Module, Parameter


class _ConvNd(Module):
    """What the convolution layers share: hyper-parameter checks, the weight and bias, PyTorch's
    init (kaiming-uniform with a=sqrt(5), bias U(-1/sqrt(fan_in), 1/sqrt(fan_in))) and the repr."""
    _defaults = {}  # extra_repr leaves out hyper-parameters at these values

    def __init__(self, in_channels, out_channels, groups, bias, padding, padding_mode, weight_shape, dtype):
        super().__init__()
        name = type(self).__name__
        if not isinstance(groups, (int, np.integer)) or groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(f"{name}: groups={groups} must divide in_channels={in_channels} and "
                             f"out_channels={out_channels}")
        if isinstance(padding, str):
            raise ValueError(f"{name}: string padding {padding!r} is not supported; give an int or a pair")
        if padding_mode != "zeros":
            raise ValueError(f"{name}: padding_mode {padding_mode!r} is not supported, only 'zeros'")
        self.in_channels, self.out_channels, self.groups = int(in_channels), int(out_channels), int(groups)
        dtype = np.dtype(dtype or np.float32)
        self.weight = Parameter(np.empty(weight_shape(self.in_channels, self.out_channels, self.groups), dtype=dtype))
        self.bias = Parameter(np.empty(self.out_channels, dtype=dtype)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = init.default_bias_bound(self.weight)
            init.uniform_(self.bias, -bound, bound)

    def _check_input(self, x, layout):
        shape = input_shape(self, x)
        if len(shape) != len(layout) or shape[1] != self.in_channels:
            raise ValueError(f"{self!r}: expected input ({', '.join(layout).format(C=self.in_channels)}), got {shape}")
        if x.data.dtype != self.weight.data.dtype:
            raise TypeError(f"{self!r}: input dtype {x.data.dtype} differs from the weight's {self.weight.data.dtype}")
        return shape

    def _inputs(self, x):
        return (x, self.weight) if self.bias is None else (x, self.weight, self.bias)

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        for name, default in self._defaults.items():
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class Conv2d(_ConvNd):
    """2-D convolution over (N, C, H, W); weight (out_channels, in_channels/groups, kh, kw)."""
    _defaults = {"padding": (0, 0), "dilation": (1, 1)}

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", dtype=None):
        name = "Conv2d"
        kernel = pair(name, "kernel_size", kernel_size, 1)
        super().__init__(in_channels, out_channels, groups, bias, padding, padding_mode,
                         lambda i, o, g: (o, i // g) + kernel, dtype)
        self.kernel_size = kernel
        self.stride = pair(name, "stride", stride, 1)
        self.padding = pair(name, "padding", padding, 0)
        self.dilation = pair(name, "dilation", dilation, 1)

    def _check(self, x):
        shape = self._check_input(x, ("N", "{C}", "H", "W"))
        for d in range(2):
            span = self.dilation[d] * (self.kernel_size[d] - 1) + 1
            if shape[2 + d] + 2 * self.padding[d] < span:
                raise ValueError(f"{self!r}: input {shape} is smaller than the (dilated) kernel "
                                 f"{self.kernel_size} after padding {self.padding}")

    def _apply(self, x, relu):
        self._check(x)
        return _conv.Conv2d(self.stride, self.padding, self.dilation, self.groups, relu=relu).apply(*self._inputs(x))

    def forward(self, x):
        return self._apply(x, False)

    def forward_relu(self, x):
        """relu(self(x)) with the ReLU fused into the convolution's epilogue."""
        return self._apply(x, True)


class Conv1d(_ConvNd):
    """1-D convolution over (N, C, L); weight (out_channels, in_channels/groups, k). Runs the 2-D
    kernels with height 1."""
    _defaults = {"padding": (0,), "dilation": (1,)}

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", dtype=None):
        name = "Conv1d"
        k = _conv.single(name, "kernel_size", kernel_size, 1)
        super().__init__(in_channels, out_channels, groups, bias, padding, padding_mode,
                         lambda i, o, g: (o, i // g, k), dtype)
        self.kernel_size = (k,)
        self.stride = (_conv.single(name, "stride", stride, 1),)
        self.padding = (_conv.single(name, "padding", padding, 0),)
        self.dilation = (_conv.single(name, "dilation", dilation, 1),)

    def forward(self, x):
        shape = self._check_input(x, ("N", "{C}", "L"))
        if shape[2] + 2 * self.padding[0] < self.dilation[0] * (self.kernel_size[0] - 1) + 1:
            raise ValueError(f"{self!r}: input {shape} is shorter than the (dilated) kernel {self.kernel_size} "
                             f"after padding {self.padding}")
        f = _conv.Conv1d((1,) + self.stride, (0,) + self.padding, (1,) + self.dilation, self.groups)
        return f.apply(*self._inputs(x))


class ConvTranspose2d(_ConvNd):
    """Transposed 2-D convolution (conv2d's adjoint) over (N, C_in, H, W); weight (in_channels,
    out_channels/groups, kh, kw). ``forward(x, output_size=None)``: an ``output_size`` (H_out, W_out),
    optionally with N and C in front, picks the output padding, as in PyTorch."""
    _defaults = {"padding": (0, 0), "output_padding": (0, 0), "dilation": (1, 1)}

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                 bias=True, dilation=1, padding_mode="zeros", dtype=None):
        name = "ConvTranspose2d"
        k = pair(name, "kernel_size", kernel_size, 1)
        super().__init__(in_channels, out_channels, groups, bias, padding, padding_mode,
                         lambda i, o, g: (i, o // g) + k, dtype)
        self.kernel_size = k
        self.stride = pair(name, "stride", stride, 1)
        self.padding = pair(name, "padding", padding, 0)
        self.output_padding = pair(name, "output_padding", output_padding, 0)
        self.dilation = pair(name, "dilation", dilation, 1)
        for d in range(2):
            if self.output_padding[d] >= max(self.stride[d], self.dilation[d]):
                raise ValueError(f"{name}: output_padding {self.output_padding} must be smaller than the stride "
                                 f"{self.stride} or the dilation {self.dilation}")

    def _output_padding(self, shape, output_size):
        if output_size is None:
            return self.output_padding
        size = tuple(int(s) for s in output_size)[-2:]
        if len(size) != 2:
            raise ValueError(f"{self!r}: output_size must end in (H_out, W_out), got {output_size}")
        smallest = tuple(_conv.transposed_output_size(shape[2 + d], self.kernel_size[d], self.stride[d],
                                                      self.padding[d], 0, self.dilation[d]) for d in range(2))
        for d in range(2):
            if not smallest[d] <= size[d] < smallest[d] + self.stride[d]:
                raise ValueError(f"{self!r}: output_size {size} is not reachable from input {shape}: each side must "
                                 f"lie in [{smallest[d]}, {smallest[d] + self.stride[d] - 1}] ({'HW'[d]})")
        return (size[0] - smallest[0], size[1] - smallest[1])

    def forward(self, x, output_size=None):
        shape = self._check_input(x, ("N", "{C}", "H", "W"))
        return _conv.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding,
                                      self._output_padding(shape, output_size), self.groups, self.dilation)
