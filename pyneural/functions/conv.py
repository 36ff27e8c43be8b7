"""2-D convolution (NCHW, OIHW weights) with stride, padding, dilation and groups.

Forward, data gradient and weight gradient are the three conv kernels (implicit-GEMM on the CPU);
the bias gradient is a sum over N, H, W. An optional fused ReLU epilogue (``relu=True``) keeps
the output for the ReLU mask, as in Linear.
"""
import numpy as np

from pyneural import backend
from pyneural.kernels._checks import pair
from pyneural.tensor import Function, get_array_module


def _contig(a):
    return a if a.flags.c_contiguous else get_array_module(a).ascontiguousarray(a)


class Conv2d(Function):
    def __init__(self, stride, padding, dilation, groups, relu=False):
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.relu = relu

    def forward(self, x, w, b=None):
        x = _contig(x)
        self.x, self.w = x, w
        y = backend.of(x).conv2d_forward(x, w, b, self.stride, self.padding, self.dilation, self.groups,
                                         relu=self.relu)
        if self.relu:
            self.y = y
        return y

    def backward(self, gy):
        gy = _contig(gy)
        if self.relu:
            gy = backend.of(gy).relu_backward(gy, self.y)
        x, w = self.x, self.w
        conf = (self.stride, self.padding, self.dilation, self.groups)
        needs = self.needs_input_grad
        gx = gw = gb = None
        if needs[0]:
            gx = backend.of(gy).conv2d_backward_data(gy, w, x.shape, *conf)
        if needs[1]:
            gw = backend.of(gy).conv2d_backward_weight(gy, x, w.shape, *conf)
        if len(needs) > 2 and needs[2]:
            gb = gy.sum(axis=(0, 2, 3))
        return gx, gw, gb


def conv_output_size(size, kernel, stride, padding, dilation):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, activation=None):
    """2-D convolution of ``x`` (N, C, H, W) with ``weight`` (O, C/groups, kh, kw)."""
    fn = "conv2d"
    stride = pair(fn, "stride", stride, 1)
    padding = pair(fn, "padding", padding, 0)
    dilation = pair(fn, "dilation", dilation, 1)
    xs, ws = x.data.shape, weight.data.shape
    if len(xs) != 4 or len(ws) != 4:
        raise ValueError(f"{fn}: expected input (N, C, H, W) and weight (O, C/groups, kh, kw), "
                         f"got input {xs} and weight {ws}")
    if not isinstance(groups, (int, np.integer)) or groups < 1 or xs[1] % groups or ws[0] % groups:
        raise ValueError(f"{fn}: groups={groups} must divide the input channels {xs[1]} and the "
                         f"output channels {ws[0]}")
    if xs[1] != ws[1] * groups:
        raise ValueError(f"{fn}: input has {xs[1]} channels, weight {ws} expects {ws[1] * groups} "
                         f"(groups={groups})")
    for d in range(2):
        if conv_output_size(xs[2 + d], ws[2 + d], stride[d], padding[d], dilation[d]) < 1:
            raise ValueError(f"{fn}: input {xs} with padding {padding} is smaller than the dilated "
                             f"kernel {ws[2:]} (dilation {dilation})")
    if bias is not None and bias.data.shape != (ws[0],):
        raise ValueError(f"{fn}: bias has shape {bias.data.shape}, expected ({ws[0]},)")
    if activation not in (None, "relu"):
        raise ValueError(f"{fn}: activation must be None or 'relu', got {activation!r}")
    f = Conv2d(stride, padding, dilation, int(groups), relu=activation == "relu")
    return f.apply(x, weight) if bias is None else f.apply(x, weight, bias)
