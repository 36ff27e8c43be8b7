"""2-D max and average pooling (NCHW). Max pooling keeps the per-plane argmax the forward kernel
returns (int32, flat h*W+w) and scatters the gradient through it; average pooling needs only the
configuration."""
from pyneural import backend
from pyneural.kernels._checks import pair
from pyneural.tensor import Function, get_array_module


def _contig(a):
    return a if a.flags.c_contiguous else get_array_module(a).ascontiguousarray(a)


class MaxPool2d(Function):
    def __init__(self, kernel_size, stride, padding):
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x):
        x = _contig(x)
        self.x_shape = x.shape
        y, self.argmax = backend.of(x).max_pool2d_forward(x, self.kernel_size, self.stride, self.padding)
        return y

    def backward(self, gy):
        return (backend.of(gy).max_pool2d_backward(_contig(gy), self.argmax, self.x_shape, self.kernel_size, self.stride,
                                                  self.padding),)


class AvgPool2d(Function):
    def __init__(self, kernel_size, stride, padding, count_include_pad):
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.count_include_pad = count_include_pad

    def forward(self, x):
        x = _contig(x)
        self.x_shape = x.shape
        return backend.of(x).avg_pool2d_forward(x, self.kernel_size, self.stride, self.padding,
                                                self.count_include_pad)

    def backward(self, gy):
        return (backend.of(gy).avg_pool2d_backward(_contig(gy), self.x_shape, self.kernel_size, self.stride,
                                                  self.padding, self.count_include_pad),)


def _pool_args(fn, x, kernel_size, stride, padding):
    kernel = pair(fn, "kernel_size", kernel_size, 1)
    stride = kernel if stride is None else pair(fn, "stride", stride, 1)
    padding = pair(fn, "padding", padding, 0)
    shape = x.data.shape
    if len(shape) != 4:
        raise ValueError(f"{fn}: expected input (N, C, H, W), got shape {shape}")
    for d in range(2):
        if padding[d] * 2 > kernel[d]:
            raise ValueError(f"{fn}: padding {padding} must be at most half the kernel size {kernel}")
        if shape[2 + d] + 2 * padding[d] < kernel[d]:
            raise ValueError(f"{fn}: input {shape} with padding {padding} is smaller than the kernel {kernel}")
    return kernel, stride, padding


def max_pool2d(x, kernel_size, stride=None, padding=0):
    kernel, stride, padding = _pool_args("max_pool2d", x, kernel_size, stride, padding)
    return MaxPool2d(kernel, stride, padding).apply(x)


def avg_pool2d(x, kernel_size, stride=None, padding=0, count_include_pad=True):
    kernel, stride, padding = _pool_args("avg_pool2d", x, kernel_size, stride, padding)
    return AvgPool2d(kernel, stride, padding, bool(count_include_pad)).apply(x)
