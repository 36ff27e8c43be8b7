"""Batch normalization over the channel axis (axis 1) of (N, C) or (N, C, *) inputs.

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
