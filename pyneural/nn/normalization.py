"""BatchNorm1d and BatchNorm2d: learnable per-channel scale/shift and running statistics kept as
buffers (running_mean, running_var, num_batches_tracked, as in PyTorch's state_dict)."""
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
