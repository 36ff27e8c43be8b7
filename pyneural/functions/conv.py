"""Convolutions over NCHW (2-D) and NCL (1-D) arrays, and the transposed 2-D convolution.

conv2d (OIHW weights, stride, padding, dilation, groups) is the backend's three kernels: forward,
data gradient and weight gradient (implicit-GEMM on the CPU); the bias gradient is a sum over N, H,
W. An optional fused ReLU epilogue (``relu=True``) keeps the output for the ReLU mask, as in
Linear. conv1d runs the same kernels on (N, C, 1, L) views (height 1).

conv_transpose2d is conv2d's adjoint with the same weight, (C_in, C_out/groups, kh, kw): its
forward is conv2d's data gradient, its input gradient a conv2d forward and its weight gradient
conv2d's weight gradient with input and output swapped; no kernel of its own.
"""
import numpy as np

from pyneural import backend
from pyneural.kernels._checks import pair
from pyneural.tensor import Function, get_array_module


def _contig(a):
    return a if a is None or a.flags.c_contiguous else get_array_module(a).ascontiguousarray(a)


def _dense(a):
    """``a`` itself when C-contiguous or channels_last, else a C-contiguous copy."""
    return a if backend.flat(a) is not None else get_array_module(a).ascontiguousarray(a)


class Conv2d(Function):
    def __init__(self, stride, padding, dilation, groups, relu=False):
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.relu = relu

    def forward(self, x, w, b=None):
        # Layouts: the backend takes NCHW or channels_last operands (a permuted or sliced weight is
        # made dense there). As in PyTorch, the output is channels_last when x or w is; each gradient
        # comes back in its input's layout.
        x, w, b = _dense(x), _dense(w), _contig(b)
        self.x, self.w = x, w
        y = backend.of(x).conv2d_forward(x, w, b, self.stride, self.padding, self.dilation, self.groups,
                                         relu=self.relu)
        if backend.is_channels_last(x) or backend.is_channels_last(w):
            y = backend.to_memory_format(y, backend.channels_last)
        if self.relu:
            self.y = y
        return y

    def backward(self, gy):
        gy = backend.same_layout(gy, self.x)
        if self.relu:
            gy = backend.of(gy).relu_backward(gy, self.y)
        x, w = self.x, self.w
        conf = (self.stride, self.padding, self.dilation, self.groups)
        needs = self.needs_input_grad
        gx = gw = gb = None
        if needs[0]:
            gx = backend.same_layout(backend.of(gy).conv2d_backward_data(gy, w, x.shape, *conf), x)
        if needs[1]:
            gw = backend.same_layout(backend.of(gy).conv2d_backward_weight(gy, x, w.shape, *conf), w)
        if len(needs) > 2 and needs[2]:
            gb = gy.sum(axis=(0, 2, 3))
        return gx, gw, gb


class Conv1d(Conv2d):
    """conv2d of (N, C, 1, L) views with (O, C/groups, 1, k) weights; hyper-parameters are the
    (1, s), (0, p), (1, d) pairs."""

    def forward(self, x, w, b=None):
        return super().forward(x[:, :, None, :], w[:, :, None, :], b)[:, :, 0, :]

    def backward(self, gy):
        gx, gw, gb = super().backward(gy[:, :, None, :])
        return (None if gx is None else gx[:, :, 0, :], None if gw is None else gw[:, :, 0, :], gb)


class ConvTranspose2d(Function):
    def __init__(self, stride, padding, output_padding, dilation, groups):
        self.conf = (stride, padding, dilation, groups)
        self.output_padding = output_padding

    def forward(self, x, w, b=None):
        x, w = _contig(x), _contig(w)
        (sh, sw), (ph, pw), (dh, dw), groups = self.conf
        n, _, h, wd = x.shape
        oh, ow = (transposed_output_size(size, k, s, p, op, d) for size, k, s, p, op, d in
                  zip((h, wd), w.shape[2:], (sh, sw), (ph, pw), self.output_padding, (dh, dw)))
        # Output padding of a stride or more (allowed when dilation > stride) makes the conv2d of the
        # output longer than x: x gets that many zero rows / columns at the end.
        extra = (self.output_padding[0] // sh, self.output_padding[1] // sw)
        if extra != (0, 0):
            x = get_array_module(x).pad(x, ((0, 0), (0, 0), (0, extra[0]), (0, extra[1])))
        self.x, self.w, self.x_hw = x, w, (h, wd)
        y = backend.of(x).conv2d_backward_data(x, w, (n, w.shape[1] * groups, oh, ow), *self.conf)
        if b is not None:
            y += b.reshape(1, -1, 1, 1)
        return y

    def backward(self, gy):
        gy = _contig(gy)
        needs = self.needs_input_grad
        be = backend.of(gy)
        gx = gw = gb = None
        if needs[0]:
            h, wd = self.x_hw
            gx = _contig(be.conv2d_forward(gy, self.w, None, *self.conf)[:, :, :h, :wd])
        if needs[1]:
            gw = be.conv2d_backward_weight(self.x, gy, self.w.shape, *self.conf)
        if len(needs) > 2 and needs[2]:
            gb = gy.sum(axis=(0, 2, 3))
        return gx, gw, gb


def conv_output_size(size, kernel, stride, padding, dilation):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def transposed_output_size(size, kernel, stride, padding, output_padding, dilation):
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


def _check_groups(fn, groups, **channels):
    """``groups`` as an int that divides every given channel count."""
    if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups < 1 \
            or any(c % groups for c in channels.values()):
        counts = " and ".join(f"the {name.replace('_', ' ')} {c}" for name, c in channels.items())
        raise ValueError(f"{fn}: groups={groups} must be a positive int dividing {counts}")
    return int(groups)


def _check_bias(fn, bias, channels):
    if bias is not None and bias.data.shape != (channels,):
        raise ValueError(f"{fn}: bias has shape {bias.data.shape}, expected ({channels},)")


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
    groups = _check_groups(fn, groups, input_channels=xs[1], output_channels=ws[0])
    if xs[1] != ws[1] * groups:
        raise ValueError(f"{fn}: input has {xs[1]} channels, weight {ws} expects {ws[1] * groups} "
                         f"(groups={groups})")
    for d in range(2):
        if conv_output_size(xs[2 + d], ws[2 + d], stride[d], padding[d], dilation[d]) < 1:
            raise ValueError(f"{fn}: input {xs} with padding {padding} is smaller than the dilated "
                             f"kernel {ws[2:]} (dilation {dilation})")
    _check_bias(fn, bias, ws[0])
    if activation not in (None, "relu"):
        raise ValueError(f"{fn}: activation must be None or 'relu', got {activation!r}")
    f = Conv2d(stride, padding, dilation, groups, relu=activation == "relu")
    return f.apply(x, weight) if bias is None else f.apply(x, weight, bias)


def single(fn, name, v, minimum=0):
    """An int or a 1-sequence as an int >= minimum."""
    if not isinstance(v, (int, np.integer)):
        try:
            v, = tuple(v)
        except (TypeError, ValueError):
            raise TypeError(f"{fn}: {name} must be an int or a 1-tuple of ints, got {v!r}") from None
    if int(v) < minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {v}")
    return int(v)


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """1-D convolution of ``x`` (N, C, L) with ``weight`` (O, C/groups, k)."""
    fn = "conv1d"
    stride, padding = single(fn, "stride", stride, 1), single(fn, "padding", padding, 0)
    dilation = single(fn, "dilation", dilation, 1)
    xs, ws = x.data.shape, weight.data.shape
    if len(xs) != 3 or len(ws) != 3:
        raise ValueError(f"{fn}: expected input (N, C, L) and weight (O, C/groups, k), got input {xs} and weight {ws}")
    groups = _check_groups(fn, groups, input_channels=xs[1], output_channels=ws[0])
    if xs[1] != ws[1] * groups:
        raise ValueError(f"{fn}: input has {xs[1]} channels, weight {ws} expects {ws[1] * groups} (groups={groups})")
    if conv_output_size(xs[2], ws[2], stride, padding, dilation) < 1:
        raise ValueError(f"{fn}: input {xs} with padding {padding} is shorter than the dilated kernel {ws[2]} "
                         f"(dilation {dilation})")
    _check_bias(fn, bias, ws[0])
    f = Conv1d((1, stride), (0, padding), (1, dilation), groups)
    return f.apply(x, weight) if bias is None else f.apply(x, weight, bias)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """Transposed 2-D convolution (conv2d's adjoint) of ``x`` (N, C_in, H, W) with ``weight``
    (C_in, C_out/groups, kh, kw): output (N, C_out, Ho, Wo), ``Ho = (H-1)*stride - 2*padding +
    dilation*(kh-1) + output_padding + 1``. PyTorch's argument order (groups before dilation)."""
    fn = "conv_transpose2d"
    stride = pair(fn, "stride", stride, 1)
    padding = pair(fn, "padding", padding, 0)
    output_padding = pair(fn, "output_padding", output_padding, 0)
    dilation = pair(fn, "dilation", dilation, 1)
    xs, ws = x.data.shape, weight.data.shape
    if len(xs) != 4 or len(ws) != 4:
        raise ValueError(f"{fn}: expected input (N, C_in, H, W) and weight (C_in, C_out/groups, kh, kw), "
                         f"got input {xs} and weight {ws}")
    groups = _check_groups(fn, groups, input_channels=ws[0])
    if xs[1] != ws[0]:
        raise ValueError(f"{fn}: input has {xs[1]} channels, weight {ws} expects {ws[0]}")
    for d in range(2):
        if output_padding[d] >= max(stride[d], dilation[d]):
            raise ValueError(f"{fn}: output_padding {output_padding} must be smaller than the stride {stride} or "
                             f"the dilation {dilation}")
    out = tuple(transposed_output_size(xs[2 + d], ws[2 + d], stride[d], padding[d], output_padding[d], dilation[d])
                for d in range(2))
    if min(out) < 1:
        raise ValueError(f"{fn}: input {xs} with weight {ws}, stride {stride}, padding {padding}, dilation "
                         f"{dilation} gives the empty output size {out}")
    _check_bias(fn, bias, ws[1] * groups)
    f = ConvTranspose2d(stride, padding, output_padding, dilation, groups)
    return f.apply(x, weight) if bias is None else f.apply(x, weight, bias)
