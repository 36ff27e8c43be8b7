"""Batch normalization over the channel axis (axis 1) of (N, C) or (N, C, *) inputs.

Training normalises with the batch's mean and biased variance and updates the running estimates
in place with ``momentum`` (the running variance takes the unbiased batch variance, as PyTorch
does). Evaluation normalises with the running estimates, which makes it an affine map of x.
Backward keeps x-hat and 1/std only.
"""
from pyneural.tensor import Function, get_array_module


class BatchNorm(Function):
    def __init__(self, training, running_mean, running_var, momentum, eps):
        self.training = training
        self.running_mean, self.running_var = running_mean, running_var
        self.momentum, self.eps = momentum, eps

    def forward(self, x, gamma=None, beta=None):
        # Written to allocate as few full-size temporaries as possible: x-hat, and y (which
        # doubles as the scratch array for the squared deviations).
        xp = get_array_module(x)
        axes = (0,) + tuple(range(2, x.ndim))
        bshape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        self.axes, self.bshape = axes, bshape
        if self.training:
            mean = x.mean(axis=axes)
            xhat = x - mean.reshape(bshape)
            y = xp.square(xhat)
            var = y.mean(axis=axes)
            if self.running_mean is not None:
                count = x.size // x.shape[1]
                m = self.momentum
                self.running_mean *= 1.0 - m
                self.running_mean += m * mean.astype(self.running_mean.dtype)
                self.running_var *= 1.0 - m
                self.running_var += (m * count / (count - 1)) * var.astype(self.running_var.dtype)
        else:
            xhat = x - self.running_mean.reshape(bshape).astype(x.dtype)
            y = xp.empty_like(xhat)
            var = self.running_var.astype(x.dtype)
        invstd = 1.0 / xp.sqrt(var + self.eps)
        xhat *= invstd.reshape(bshape)
        self.xhat, self.invstd, self.gamma = xhat, invstd, gamma
        self.running_mean = self.running_var = None  # backward never needs them
        if gamma is None:
            return xhat.copy() if beta is None else xp.add(xhat, beta.reshape(bshape), out=y)
        xp.multiply(xhat, gamma.reshape(bshape), out=y)
        if beta is not None:
            y += beta.reshape(bshape)
        return y

    def backward(self, gy):
        xp = get_array_module(gy)
        xhat, invstd, gamma, axes, bshape = self.xhat, self.invstd, self.gamma, self.axes, self.bshape
        needs = self.needs_input_grad
        gx = ggamma = gbeta = None
        gbeta_full = gy.sum(axis=axes)
        scratch = gy * xhat
        ggamma_full = scratch.sum(axis=axes)
        if needs[0]:
            scale = (invstd if gamma is None else gamma * invstd).reshape(bshape)
            if self.training:
                # gx = scale * (gy - mean(gy) - xhat * mean(gy * xhat)), reusing the scratch array
                count = gy.size // gy.shape[1]
                gx = xp.multiply(xhat, (ggamma_full / count).reshape(bshape), out=scratch)
                xp.subtract(gy, gx, out=gx)
                gx -= (gbeta_full / count).reshape(bshape)
                gx *= scale
            else:
                gx = gy * scale
        if len(needs) > 1 and needs[1]:
            ggamma = ggamma_full
        if len(needs) > 2 and needs[2]:
            gbeta = gbeta_full
        return gx, ggamma, gbeta
