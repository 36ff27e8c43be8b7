"""2-D max and average pooling (NCHW), fixed-window and adaptive.

Windows the backend's kernels cover (no dilation, no ceil-mode window past the floor count, no
divisor_override) run on them: max pooling keeps the per-plane argmax the forward kernel returns
(int32, flat h*W+w) and scatters the gradient through it; average pooling needs only the
configuration. Everything else (dilation, ceil_mode, divisor_override, adaptive windows that do not
tile the input) runs as separable per-axis maps (pyneural/functions/resample.py), the same whole-array
code on every device. Adaptive windows that do tile the input are the fixed-window kernels.
"""
import numpy as np

from pyneural import backend
from pyneural.functions import resample
from pyneural.kernels._checks import pair
from pyneural.tensor import Function, get_array_module, wrap


def _contig(a):
    return a if a.flags.c_contiguous else get_array_module(a).ascontiguousarray(a)


def _dense(a):
    """``a`` itself when C-contiguous or channels_last (the backends take both), else a copy."""
    return a if backend.flat(a) is not None else get_array_module(a).ascontiguousarray(a)


def _like(a, channels_last):
    """``a`` in channels_last layout when the pooled input was (PyTorch keeps the layout)."""
    return backend.to_memory_format(a, backend.channels_last if channels_last else backend.contiguous_format)


class MaxPool2d(Function):
    def __init__(self, kernel_size, stride, padding):
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x):
        x = _dense(x)
        self.x_shape, self.layout = x.shape, backend.is_channels_last(x)
        y, self.argmax = backend.of(x).max_pool2d_forward(x, self.kernel_size, self.stride, self.padding)
        return _like(y, self.layout)

    def backward(self, gy):
        gx = backend.of(gy).max_pool2d_backward(gy, self.argmax, self.x_shape, self.kernel_size, self.stride,
                                                self.padding)
        return (_like(gx, self.layout),)


class AvgPool2d(Function):
    def __init__(self, kernel_size, stride, padding, count_include_pad):
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.count_include_pad = count_include_pad

    def forward(self, x):
        x = _dense(x)
        self.x_shape, self.layout = x.shape, backend.is_channels_last(x)
        return _like(backend.of(x).avg_pool2d_forward(x, self.kernel_size, self.stride, self.padding,
                                                      self.count_include_pad), self.layout)

    def backward(self, gy):
        gy = backend.to_memory_format(gy, backend.channels_last if self.layout else backend.contiguous_format)
        return (_like(backend.of(gy).avg_pool2d_backward(gy, self.x_shape, self.kernel_size, self.stride,
                                                         self.padding, self.count_include_pad), self.layout),)


def pool_args(fn, shape, kernel_size, stride, padding, dilation=1, ceil_mode=False):
    """Checked (kernel, stride, padding, dilation) pairs and the (Ho, Wo) of pooling ``shape``."""
    kernel = pair(fn, "kernel_size", kernel_size, 1)
    stride = kernel if stride is None else pair(fn, "stride", stride, 1)
    padding = pair(fn, "padding", padding, 0)
    dilation = pair(fn, "dilation", dilation, 1)
    if len(shape) != 4:
        raise ValueError(f"{fn}: expected input (N, C, H, W), got shape {shape}")
    out = []
    for d in range(2):
        if padding[d] * 2 > kernel[d]:
            raise ValueError(f"{fn}: padding {padding} must be at most half the kernel size {kernel}")
        span = dilation[d] * (kernel[d] - 1) + 1
        if shape[2 + d] + 2 * padding[d] < span:
            raise ValueError(f"{fn}: input {shape} with padding {padding} is smaller than the kernel {kernel}"
                             + (f" dilated by {dilation}" if dilation != (1, 1) else ""))
        out.append(resample.pool_output_size(shape[2 + d], kernel[d], stride[d], padding[d], dilation[d],
                                             bool(ceil_mode)))
    return kernel, stride, padding, dilation, tuple(out)


def _kernel_covers(shape, kernel, stride, padding, dilation, out):
    """The fixed-window kernels compute exactly these windows: no dilation, floor-mode count."""
    return dilation == (1, 1) and all(out[d] == (shape[2 + d] + 2 * padding[d] - kernel[d]) // stride[d] + 1
                                      for d in range(2))


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """Max over ``kernel_size`` windows of (N, C, H, W), taps ``dilation`` apart; padding never wins.
    ``ceil_mode`` adds a last, partial window where the floor count leaves input over;
    ``return_indices`` also returns the flat index h*W + w of each max (int64)."""
    fn = "max_pool2d"
    shape = x.data.shape
    kernel, stride, padding, dilation, out = pool_args(fn, shape, kernel_size, stride, padding, dilation, ceil_mode)
    if _kernel_covers(shape, kernel, stride, padding, dilation, out):
        return _max_with_indices(MaxPool2d(kernel, stride, padding), x, return_indices)
    maps = [resample.pool_map(shape[2 + d], kernel[d], stride[d], padding[d], dilation[d], ceil_mode)
            for d in range(2)]
    return _max_with_indices(resample.MaxResample2d(*maps), x, return_indices)


def _max_with_indices(f, x, return_indices):
    """``f`` applied to ``x``, and with ``return_indices`` the int64 flat index h*W + w of every max
    (what the forward kept for backward) as a second, non-differentiable tensor."""
    y = f.apply(x)
    if not return_indices:
        return y
    indices = f.argmax if isinstance(f, MaxPool2d) else f.flat
    return y, wrap(indices.astype("int64"))


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """Mean over ``kernel_size`` windows of (N, C, H, W). The divisor is the window clipped to the
    padded input (``count_include_pad``), or its input elements only, or ``divisor_override``."""
    fn = "avg_pool2d"
    shape = x.data.shape
    kernel, stride, padding, _, out = pool_args(fn, shape, kernel_size, stride, padding, 1, ceil_mode)
    if divisor_override is not None and (not isinstance(divisor_override, int) or divisor_override < 1):
        raise ValueError(f"{fn}: divisor_override must be a positive int or None, got {divisor_override!r}")
    if divisor_override is None and _kernel_covers(shape, kernel, stride, padding, (1, 1), out):
        return AvgPool2d(kernel, stride, padding, bool(count_include_pad)).apply(x)
    divisor = None if divisor_override is not None else "padded" if count_include_pad else "taps"
    maps = [resample.pool_map(shape[2 + d], kernel[d], stride[d], padding[d], 1, ceil_mode, divisor)
            for d in range(2)]
    return resample.Resample2d(*maps, scale=1.0 if divisor_override is None else 1.0 / divisor_override).apply(x)


def adaptive_output_size(fn, shape, output_size):
    """(Ho, Wo) from an int, a pair, or a pair with None entries (None keeps the input's size)."""
    if len(shape) != 4:
        raise ValueError(f"{fn}: expected input (N, C, H, W), got shape {shape}")
    if output_size is None or isinstance(output_size, (int, np.integer)):
        output_size = (output_size, output_size)
    try:
        size = tuple(output_size)
    except TypeError:
        raise TypeError(f"{fn}: output_size must be an int, None or a pair, got {output_size!r}") from None
    if len(size) != 2:
        raise ValueError(f"{fn}: output_size must be an int or a pair, got {output_size!r}")
    size = tuple(shape[2 + d] if s is None else s for d, s in enumerate(size))
    if not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in size):
        raise ValueError(f"{fn}: output_size entries must be positive ints or None, got {output_size!r}")
    if min(shape[2:]) < 1:
        raise ValueError(f"{fn}: input {shape} has an empty plane")
    return tuple(int(s) for s in size)


def _adaptive(fn, x, output_size, fixed_window, general):
    """The Function of an adaptive pooling of ``x``, not yet applied."""
    shape = x.data.shape
    out = adaptive_output_size(fn, shape, output_size)
    if shape[2] % out[0] == 0 and shape[3] % out[1] == 0:  # the windows tile the input: a fixed window
        return fixed_window((shape[2] // out[0], shape[3] // out[1]))
    return general(*(resample.adaptive_map(shape[2 + d], out[d]) for d in range(2)))


def adaptive_avg_pool2d(x, output_size):
    """Mean over PyTorch's adaptive windows: output i of n covers input [floor(i*H/n), ceil((i+1)*H/n))."""
    return _adaptive("adaptive_avg_pool2d", x, output_size, lambda k: AvgPool2d(k, k, (0, 0), True),
                     resample.Resample2d).apply(x)


def adaptive_max_pool2d(x, output_size, return_indices=False):
    """Max over PyTorch's adaptive windows (see adaptive_avg_pool2d); ``return_indices`` as in max_pool2d."""
    f = _adaptive("adaptive_max_pool2d", x, output_size, lambda k: MaxPool2d(k, k, (0, 0)), resample.MaxResample2d)
    return _max_with_indices(f, x, return_indices)
