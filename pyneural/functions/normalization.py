"""Batch normalization over the channel axis (axis 1) of (N, C) or (N, C, *) inputs; layer and group
normalization (per-sample statistics) at the bottom.

Training normalises with the batch's mean and biased variance and updates the running estimates
in place with ``momentum`` (the running variance takes the unbiased batch variance, as PyTorch
does). Evaluation normalises with the running estimates, which makes it an affine map of x.
Either way the output is one per-channel affine pass, ``x * scale + shift``, optionally with a
fused ReLU (``relu=True``, which keeps the output for the mask). Backward keeps x and the
per-channel mean and 1/std, and recomputes x-hat on the fly.

numpy arrays run the kernels of ``pyneural.kernels.batchnorm`` (C++ for float32); other arrays
(CuPy) run the array-module code at the bottom.
"""
import numpy as np

from pyneural import backend
from pyneural.kernels import activation as _act_kernels
from pyneural.kernels import batchnorm as _bn
from pyneural.tensor import Function, get_array_module

_ndarray = np.ndarray


class BatchNorm(Function):
    def __init__(self, training, running_mean, running_var, momentum, eps, relu=False):
        self.training = training
        self.running_mean, self.running_var = running_mean, running_var
        self.momentum, self.eps = momentum, eps
        self.relu = relu

    def forward(self, x, gamma=None, beta=None):
        if type(x) is not _ndarray:
            if backend.is_device_array(x) and all(
                    a is None or a.dtype == np.float32 for a in (x, gamma, beta, self.running_mean, self.running_var)) \
                    and (self.training or self.running_mean is not None):
                return self._forward_cuda(x, gamma, beta)
            return self._forward_xp(x, gamma, beta)
        if not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        rm, rv = self.running_mean, self.running_var
        if self.training:
            mean, var = _bn.channel_stats(x)
            if rm is not None:
                count = x.size // x.shape[1]
                m = self.momentum
                rm *= 1.0 - m
                rm += m * mean.astype(rm.dtype)
                rv *= 1.0 - m
                rv += (m * count / (count - 1)) * var.astype(rv.dtype)
        else:
            mean, var = rm.astype(x.dtype), rv.astype(x.dtype)
        invstd = (1.0 / np.sqrt(var + self.eps)).astype(x.dtype)
        scale = invstd if gamma is None else gamma * invstd
        shift = -mean * scale if beta is None else beta - mean * scale
        y = _bn.channel_affine(x, scale, shift, relu=self.relu)
        self.x, self.mean, self.invstd, self.scale = x, mean, invstd, scale
        self.running_mean = self.running_var = None  # backward never needs them
        if self.relu:
            self.y = y
        return y

    def backward(self, gy):
        if type(gy) is not _ndarray:
            if getattr(self, "cuda_saved", None) is not None:
                return self._backward_cuda(gy)
            return self._backward_xp(gy)
        if not gy.flags.c_contiguous:
            gy = np.ascontiguousarray(gy)
        x, y = self.x, (self.y if self.relu else None)
        needs = self.needs_input_grad
        if self.training:
            gx, gbeta, ggamma = _bn.batch_norm_backward(gy, x, self.mean, self.invstd, self.scale, y)
        else:
            # Fixed statistics: out is an affine map of x, so dx = g * scale; the parameter
            # gradients are the same sums as in training.
            g = gy if y is None else _act_kernels.relu_backward(gy, y)
            _, gbeta, ggamma = _bn.batch_norm_backward(g, x, self.mean, self.invstd, self.scale)
            gx = _bn.channel_affine(g, self.scale, np.zeros_like(self.scale)) if needs[0] else None
        return (gx if needs[0] else None,
                ggamma if len(needs) > 1 and needs[1] else None,
                gbeta if len(needs) > 2 and needs[2] else None)

    # -- the CUDA kernels (training mode, float32): statistics, apply and backward -------------
    def _forward_cuda(self, x, gamma, beta):
        from pyneural.cuda import batchnorm as _k
        be = backend.of(x)
        x = backend.xp(x).ascontiguousarray(x)
        if self.training:
            mean, var = _k.batch_stats(x, self.running_mean, self.running_var, momentum=self.momentum)
        else:  # evaluation: the running estimates (copied: the module goes on updating its own)
            mean, var = self.running_mean.copy(), self.running_var.copy()
        y = _k.batch_norm_apply(x, mean, var, gamma, beta, eps=self.eps)
        if self.relu:
            be.bias_relu(y, None, relu=True, out=y)
            self.y = y
        self.cuda_saved = (x, mean, var, gamma)
        self.running_mean = self.running_var = None
        return y

    def _backward_cuda(self, gy):
        from pyneural.cuda import batchnorm as _k
        be = backend.of(gy)
        x, mean, var, gamma = self.cuda_saved
        gy = backend.xp(gy).ascontiguousarray(gy)
        if self.relu:
            gy = be.relu_backward(gy, self.y)
        needs = self.needs_input_grad
        if self.training:
            gx, ggamma, gbeta = _k.batch_norm_backward(x, gy, mean, var, gamma, eps=self.eps)
        else:  # fixed statistics: y is an affine map of x
            bshape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
            invstd = 1.0 / backend.xp(var).sqrt(var + self.eps)
            axes = (0,) + tuple(range(2, x.ndim))
            gbeta = gy.sum(axis=axes)
            ggamma = (gy * (x - mean.reshape(bshape)) * invstd.reshape(bshape)).sum(axis=axes)
            scale = invstd if gamma is None else gamma * invstd
            gx = gy * scale.reshape(bshape) if needs[0] else None
        return (gx if needs[0] else None,
                ggamma if len(needs) > 1 and needs[1] else None,
                gbeta if len(needs) > 2 and needs[2] else None)

    # -- any array module (CuPy): the same maths in whole-array operations --------------------
    def _forward_xp(self, x, gamma, beta):
        xp = get_array_module(x)
        axes = (0,) + tuple(range(2, x.ndim))
        bshape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        self.axes, self.bshape = axes, bshape
        if self.training:
            mean = x.mean(axis=axes)
            xhat = x - mean.reshape(bshape)
            var = xp.square(xhat).mean(axis=axes)
            if self.running_mean is not None:
                count = x.size // x.shape[1]
                m = self.momentum
                self.running_mean *= 1.0 - m
                self.running_mean += m * mean.astype(self.running_mean.dtype)
                self.running_var *= 1.0 - m
                self.running_var += (m * count / (count - 1)) * var.astype(self.running_var.dtype)
        else:
            xhat = x - self.running_mean.reshape(bshape).astype(x.dtype)
            var = self.running_var.astype(x.dtype)
        invstd = 1.0 / xp.sqrt(var + self.eps)
        xhat *= invstd.reshape(bshape)
        self.xhat, self.invstd, self.gamma = xhat, invstd, gamma
        self.running_mean = self.running_var = None
        y = xhat if gamma is None else xhat * gamma.reshape(bshape)
        if beta is not None:
            y = y + beta.reshape(bshape)
        if self.relu:
            y = xp.maximum(y, 0)
            self.y = y
        return y.copy() if y is xhat else y

    def _backward_xp(self, gy):
        xhat, invstd, gamma, axes, bshape = self.xhat, self.invstd, self.gamma, self.axes, self.bshape
        if self.relu:
            gy = gy * (self.y > 0)
        needs = self.needs_input_grad
        gbeta = gy.sum(axis=axes)
        ggamma = (gy * xhat).sum(axis=axes)
        gx = None
        if needs[0]:
            scale = (invstd if gamma is None else gamma * invstd).reshape(bshape)
            if self.training:
                count = gy.size // gy.shape[1]
                gx = scale * (gy - (gbeta / count).reshape(bshape) - xhat * (ggamma / count).reshape(bshape))
            else:
                gx = gy * scale
        return (gx,
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
