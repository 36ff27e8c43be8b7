"""Batch normalization over the channel axis (axis 1) of (N, C) or (N, C, *) inputs; layer and group
normalization (per-sample statistics) at the bottom.

Training normalises with the batch's mean and biased variance and updates the running estimates
in place with ``momentum`` (the running variance takes the unbiased batch variance, as PyTorch
does). Evaluation normalises with the running estimates, which makes it an affine map of x.
Either way the output is one per-channel affine pass, ``x * scale + shift``, optionally with a
fused ReLU (``relu=True``, which keeps the output for the mask). Backward keeps x and the
per-channel mean and 1/std, and recomputes x-hat on the fly.

The kernels are the backend's (``batch_norm_forward`` / ``batch_norm_backward``: C++ on the CPU,
csrc/cuda/batchnorm.cu on the GPU, whole-array code for the dtypes those do not take).
"""
import numpy as np

from pyneural import backend
from pyneural.tensor import Function, get_array_module



class BatchNorm(Function):
    """The backend's batch-norm kernels (``batch_norm_forward`` returns the output and what its
    ``batch_norm_backward`` needs); a channels_last x keeps its layout."""

    def __init__(self, training, running_mean, running_var, momentum, eps, relu=False):
        self.training = training
        self.running_mean, self.running_var = running_mean, running_var
        self.momentum, self.eps = momentum, eps
        self.relu = relu

    def forward(self, x, gamma=None, beta=None):
        y, self.saved = backend.of(x).batch_norm_forward(x, gamma, beta, self.running_mean, self.running_var,
                                                         self.training, self.momentum, self.eps, self.relu)
        self.running_mean = self.running_var = None  # backward never needs them
        return y

    def backward(self, gy):
        gx, ggamma, gbeta = backend.of(gy).batch_norm_backward(self.saved, gy, self.needs_input_grad)
        needs = self.needs_input_grad
        return (gx if needs[0] else None,
                ggamma if len(needs) > 1 and needs[1] else None,
                gbeta if len(needs) > 2 and needs[2] else None)


# ---- layer and group normalization: per-sample statistics -----------------------------------------

class LayerNorm(Function):
    """Normalise every row of x viewed as (rows, D) with its own mean and biased variance, then an
    optional affine map (see pyneural/kernels/layernorm.py for the parameter layout); ``has`` says
    which of (weight, bias) follow x among the inputs. Backward keeps x and the row statistics."""

    def __init__(self, rows, D, eps, has, groups=1, inner=1):
        self.rows, self.D, self.eps, self.has = rows, D, eps, has
        self.groups, self.inner = groups, inner

    def forward(self, x, *params):
        self.param_shapes = [p.shape for p in params]
        flat = iter([backend.xp(p).ascontiguousarray(p).reshape(-1) for p in params])
        weight = next(flat) if self.has[0] else None
        bias = next(flat) if self.has[1] else None
        x2 = backend.xp(x).ascontiguousarray(x).reshape(self.rows, self.D)
        y, self.mean, self.rstd = backend.of(x2).norm_rows_forward(x2, weight, bias, self.eps, self.groups,
                                                                   self.inner)
        self.x2, self.weight, self.x_shape = x2, weight, x.shape
        return y.reshape(x.shape)

    def backward(self, gy):
        needs = self.needs_input_grad
        flags = [needs[0]] + [False, False]
        positions = [i for i, h in enumerate(self.has) if h]  # which of (weight, bias) each input is
        for k, which in enumerate(positions):
            flags[1 + which] = needs[1 + k]
        gy2 = backend.xp(gy).ascontiguousarray(gy).reshape(self.rows, self.D)
        gx, gw, gb = backend.of(gy2).norm_rows_backward(gy2, self.x2, self.mean, self.rstd, self.weight, self.groups,
                                                        self.inner, tuple(flags))
        grads = [None if gx is None else gx.reshape(self.x_shape)]
        for which, shape in zip(positions, self.param_shapes):
            g = (gw, gb)[which]
            grads.append(None if g is None else g.reshape(shape))
        return tuple(grads)


class GroupNorm(LayerNorm):
    """LayerNorm's rows are (sample, group) pairs of (N, C, *): rows N*G of D = (C/G)*S values, and
    one weight and bias per channel."""


def _check_params(fn, x, expected, **params):
    for name, p in params.items():
        if p is None:
            continue
        if tuple(p.data.shape) != expected:
            raise ValueError(f"{fn}: {name} has shape {tuple(p.data.shape)}, expected {expected} for input "
                             f"{x.data.shape}")
        if p.data.dtype != x.data.dtype:
            raise TypeError(f"{fn}: {name} has dtype {p.data.dtype}, the input {x.data.dtype}")


def _present(*params):
    return tuple(p is not None for p in params), [p for p in params if p is not None]


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise over the last ``len(normalized_shape)`` dimensions of ``x`` (which must equal
    ``normalized_shape``), then ``* weight + bias`` (each of that shape, or None)."""
    fn = "layer_norm"
    shape = tuple(x.data.shape)
    normalized = (int(normalized_shape),) if isinstance(normalized_shape, (int, np.integer)) \
        else tuple(int(n) for n in normalized_shape)
    k = len(normalized)
    if k == 0 or len(shape) < k or shape[len(shape) - k:] != normalized:
        raise ValueError(f"{fn}: normalized_shape {normalized} must be the last dimensions of the input {shape}")
    if x.data.size == 0:
        raise ValueError(f"{fn}: input {shape} is empty")
    _check_params(fn, x, normalized, weight=weight, bias=bias)
    D = int(np.prod(normalized))
    has, params = _present(weight, bias)
    return LayerNorm(x.data.size // D, D, float(eps), has).apply(x, *params)


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Normalise (N, C, *) over each group of C/num_groups channels (and all of *) per sample, then
    ``* weight[c] + bias[c]`` (each (C,), or None)."""
    fn = "group_norm"
    shape = tuple(x.data.shape)
    if len(shape) < 2:
        raise ValueError(f"{fn}: expected input (N, C, *), got shape {shape}")
    channels = shape[1]
    if not isinstance(num_groups, (int, np.integer)) or num_groups < 1 or channels % num_groups:
        raise ValueError(f"{fn}: num_groups={num_groups} must divide the {channels} channels of input {shape}")
    if x.data.size == 0:
        raise ValueError(f"{fn}: input {shape} is empty")
    _check_params(fn, x, (channels,), weight=weight, bias=bias)
    inner = x.data.size // (shape[0] * channels)
    has, params = _present(weight, bias)
    f = GroupNorm(shape[0] * num_groups, channels // num_groups * inner, float(eps), has, int(num_groups), inner)
    return f.apply(x, *params)
