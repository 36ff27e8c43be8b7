"""BatchNorm1d and BatchNorm2d: learnable per-channel scale/shift and running statistics kept as
buffers (running_mean, running_var, num_batches_tracked, as in PyTorch's state_dict). LayerNorm,
GroupNorm and InstanceNorm2d: per-sample statistics, no buffers."""
import numpy as np

from pyneural import functional as F
from pyneural.nn.linear import input_shape
from pyneural.nn.module import Module, Parameter
from pyneural.tensor import Tensor


class _BatchNorm(Module):
    _ndims = ()  # accepted input ranks
    _layout = ""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, dtype=None):
        super().__init__()
        self.num_features, self.eps, self.momentum = int(num_features), float(eps), momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        dtype = np.dtype(dtype or np.float32)
        if affine:
            self.weight = Parameter(np.ones(self.num_features, dtype=dtype))
            self.bias = Parameter(np.zeros(self.num_features, dtype=dtype))
        else:
            self.weight = self.bias = None
        if track_running_stats:
            self.register_buffer("running_mean", Tensor(np.zeros(self.num_features, dtype=dtype)))
            self.register_buffer("running_var", Tensor(np.ones(self.num_features, dtype=dtype)))
            self.register_buffer("num_batches_tracked", Tensor(np.zeros((), dtype=np.int64)))
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def reset_running_stats(self):
        if self.track_running_stats:
            self.running_mean.data[...] = 0
            self.running_var.data[...] = 1
            self.num_batches_tracked.data[...] = 0

    def forward(self, x):
        return self._apply(x, None)

    def forward_relu(self, x):
        """relu(self(x)) with the ReLU fused into the normalisation pass."""
        return self._apply(x, "relu")

    def _apply(self, x, activation):
        shape = input_shape(self, x)
        if len(shape) not in self._ndims or shape[1] != self.num_features:
            raise ValueError(f"{self!r}: expected input {self._layout.format(C=self.num_features)}, got {shape}")
        use_batch_stats = self.training or not self.track_running_stats
        momentum = self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.data += 1
            if momentum is None:
                momentum = 1.0 / int(self.num_batches_tracked.data)
        try:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                use_batch_stats, momentum or 0.0, self.eps, activation)
        except ValueError as e:
            raise ValueError(f"{self!r}: {e}") from None

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) or (N, C, L)."""
    _ndims = (2, 3)
    _layout = "(N, {C}) or (N, {C}, L)"


class BatchNorm2d(_BatchNorm):
    """Batch norm over (N, C, H, W)."""
    _ndims = (4,)
    _layout = "(N, {C}, H, W)"


class LayerNorm(Module):
    """Normalise over the trailing ``normalized_shape`` dimensions; weight (ones) and bias (zeros)
    of that shape when ``elementwise_affine`` (bias=False drops the bias)."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, dtype=None):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else normalized_shape
        self.normalized_shape = tuple(int(n) for n in shape)
        self.eps, self.elementwise_affine = float(eps), bool(elementwise_affine)
        dtype = np.dtype(dtype or np.float32)
        self.weight = Parameter(np.ones(self.normalized_shape, dtype)) if elementwise_affine else None
        self.bias = Parameter(np.zeros(self.normalized_shape, dtype)) if elementwise_affine and bias else None

    def forward(self, x):
        input_shape(self, x)
        try:
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        except ValueError as e:
            raise ValueError(f"{self!r}: {e}") from None

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class GroupNorm(Module):
    """Normalise (N, C, *) over ``num_groups`` groups of channels per sample; per-channel weight
    (ones) and bias (zeros) when ``affine``."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, dtype=None):
        super().__init__()
        if num_groups < 1 or num_channels % num_groups:
            raise ValueError(f"GroupNorm: num_channels={num_channels} must be divisible by num_groups={num_groups}")
        self.num_groups, self.num_channels = int(num_groups), int(num_channels)
        self.eps, self.affine = float(eps), bool(affine)
        dtype = np.dtype(dtype or np.float32)
        self.weight = Parameter(np.ones(self.num_channels, dtype)) if affine else None
        self.bias = Parameter(np.zeros(self.num_channels, dtype)) if affine else None

    def forward(self, x):
        shape = input_shape(self, x)
        if len(shape) < 2 or shape[1] != self.num_channels:
            raise ValueError(f"{self!r}: expected input (N, {self.num_channels}, *), got {shape}")
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


class InstanceNorm2d(Module):
    """Normalise each sample's channel planes of (N, C, H, W) (or one unbatched (C, H, W)) by their
    own mean and biased variance; per-channel weight (ones) and bias (zeros) when ``affine``
    (PyTorch's default is no affine, no running statistics). ``track_running_stats=True`` is refused."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False, track_running_stats=False, dtype=None):
        super().__init__()
        if track_running_stats:
            raise ValueError("InstanceNorm2d: track_running_stats=True is not supported (each instance is "
                             "normalised by its own statistics, in training and in evaluation)")
        self.num_features, self.eps, self.momentum, self.affine = int(num_features), float(eps), momentum, bool(affine)
        self.track_running_stats = False
        dtype = np.dtype(dtype or np.float32)
        self.weight = Parameter(np.ones(self.num_features, dtype)) if affine else None
        self.bias = Parameter(np.zeros(self.num_features, dtype)) if affine else None

    def forward(self, x):
        shape = input_shape(self, x)
        if len(shape) not in (3, 4) or shape[-3] != self.num_features:
            raise ValueError(f"{self!r}: expected input (N, {self.num_features}, H, W) or ({self.num_features}, H, W), "
                             f"got {shape}")
        batched = x if len(shape) == 4 else x.unsqueeze(0)
        y = F.instance_norm(batched, weight=self.weight, bias=self.bias, eps=self.eps)
        return y if len(shape) == 4 else y.squeeze(0)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, " \
               f"track_running_stats=False"
