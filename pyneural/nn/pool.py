"""The 2-D pooling and resampling layers: MaxPool2d and AvgPool2d (fixed windows, with PyTorch's
dilation, ceil_mode and divisor_override), AdaptiveAvgPool2d and AdaptiveMaxPool2d (a fixed output
size), Upsample (nearest, bilinear), PixelShuffle and PixelUnshuffle."""
from pyneural.functions import pool as _pool
from pyneural.functions import resample as _resample
from pyneural.functions import shape as _shape
from pyneural.kernels._checks import pair
from pyneural.nn.linear import input_shape
from pyneural.nn.module import Module


def _planes(layer, x):
    shape = input_shape(layer, x)
    if len(shape) != 4:
        raise ValueError(f"{layer!r}: expected input (N, C, H, W), got {shape}")
    return shape


class _Pool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        super().__init__()
        name = type(self).__name__
        self.kernel_size = pair(name, "kernel_size", kernel_size, 1)
        self.stride = self.kernel_size if stride is None else pair(name, "stride", stride, 1)
        self.padding = pair(name, "padding", padding, 0)
        self.dilation = pair(name, "dilation", dilation, 1)
        self.ceil_mode = bool(ceil_mode)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(f"{name}: padding {self.padding} must be at most half the kernel size {self.kernel_size}")

    def _check(self, x):
        shape = _planes(self, x)
        try:
            _pool.pool_args(type(self).__name__, shape, self.kernel_size, self.stride, self.padding, self.dilation,
                            self.ceil_mode)
        except ValueError as e:
            raise ValueError(f"{self!r}: {str(e).split(': ', 1)[1]}") from None

    def extra_repr(self):
        s = f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        return s + (", ceil_mode=True" if self.ceil_mode else "")


class MaxPool2d(_Pool2d):
    """Max over windows of (N, C, H, W); PyTorch's argument order (return_indices before ceil_mode)."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):
        super().__init__(kernel_size, stride, padding, dilation, ceil_mode)
        self.return_indices = bool(return_indices)

    def forward(self, x):
        self._check(x)
        return _pool.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode,
                                self.return_indices)


class AvgPool2d(_Pool2d):
    """Mean over windows of (N, C, H, W); PyTorch's arguments (no dilation)."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        super().__init__(kernel_size, stride, padding, 1, ceil_mode)
        self.count_include_pad = bool(count_include_pad)
        self.divisor_override = divisor_override

    def forward(self, x):
        self._check(x)
        return _pool.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad,
                                self.divisor_override)

    def extra_repr(self):
        s = super().extra_repr() + f", count_include_pad={self.count_include_pad}"
        return s + (f", divisor_override={self.divisor_override}" if self.divisor_override is not None else "")


class _AdaptivePool2d(Module):
    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def _check(self, x):
        try:
            _pool.adaptive_output_size(type(self).__name__, _planes(self, x), self.output_size)
        except ValueError as e:
            raise ValueError(f"{self!r}: {str(e).split(': ', 1)[1]}") from None

    def extra_repr(self):
        return f"output_size={self.output_size}"


class AdaptiveAvgPool2d(_AdaptivePool2d):
    """Mean over the windows that divide (H, W) into ``output_size`` (an int, a pair, None keeps a side)."""

    def forward(self, x):
        self._check(x)
        return _pool.adaptive_avg_pool2d(x, self.output_size)


class AdaptiveMaxPool2d(_AdaptivePool2d):
    """Max over the windows that divide (H, W) into ``output_size``."""

    def __init__(self, output_size, return_indices=False):
        super().__init__(output_size)
        self.return_indices = bool(return_indices)

    def forward(self, x):
        self._check(x)
        return _pool.adaptive_max_pool2d(x, self.output_size, self.return_indices)


class Upsample(Module):
    """Resize (N, C, H, W) to ``size`` or by ``scale_factor``: F.interpolate as a layer."""

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None, recompute_scale_factor=None):
        super().__init__()
        self.size, self.scale_factor, self.mode = size, scale_factor, mode
        self.align_corners, self.recompute_scale_factor = align_corners, recompute_scale_factor

    def forward(self, x):
        input_shape(self, x)
        return _resample.interpolate(x, self.size, self.scale_factor, self.mode, self.align_corners,
                                     self.recompute_scale_factor)

    def extra_repr(self):
        what = f"size={self.size}" if self.size is not None else f"scale_factor={self.scale_factor}"
        return f"{what}, mode={self.mode!r}"


class PixelShuffle(Module):
    """(N, C r^2, H, W) -> (N, C, H r, W r): F.pixel_shuffle as a layer (sub-pixel upsampling)."""

    def __init__(self, upscale_factor):
        super().__init__()
        self.upscale_factor = upscale_factor

    def forward(self, x):
        input_shape(self, x)
        return _shape.pixel_shuffle(x, self.upscale_factor)

    def extra_repr(self):
        return f"upscale_factor={self.upscale_factor}"


class PixelUnshuffle(Module):
    """The inverse of PixelShuffle: (N, C, H r, W r) -> (N, C r^2, H, W)."""

    def __init__(self, downscale_factor):
        super().__init__()
        self.downscale_factor = downscale_factor

    def forward(self, x):
        input_shape(self, x)
        return _shape.pixel_unshuffle(x, self.downscale_factor)

    def extra_repr(self):
        return f"downscale_factor={self.downscale_factor}"
