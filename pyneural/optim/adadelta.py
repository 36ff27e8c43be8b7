"""Adadelta (Zeiler, 2012): RMSprop whose step size is itself a running RMS of past steps.

    g     = grad + weight_decay * p                   (negated first under ``maximize``)
    v     = rho * v + (1 - rho) * g * g                 (``square_avg``)
    delta = sqrt(u + eps) / sqrt(v + eps) * g
    u     = rho * u + (1 - rho) * delta * delta         (``acc_delta``)
    p    -= lr * delta

The ratio of the two RMS values gives the step the units of the parameter, so ``lr`` (default 1)
only scales it. ``eps`` sits inside the square roots: it sets the size of the first steps
(``sqrt(eps)`` over the gradient's RMS), when ``u`` is still zero. The order of operations and
the state names follow ``torch.optim.Adadelta``.
"""
from pyneural import backend

from .optimizer import Optimizer


class Adadelta(Optimizer):
    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, *, maximize=False):
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize))

    def _check_group(self, group):
        self._check_numbers(group, ("lr", "eps", "weight_decay"))
        self._check_numbers(group, ("rho",), upper=1.0)
        group["maximize"] = bool(group["maximize"])

    def _update(self, param, grad, state, group):
        xp = backend.xp(param)
        rho, eps = group["rho"], group["eps"]
        if not state:
            state["step"] = 0
            state["square_avg"] = xp.zeros_like(param)
            state["acc_delta"] = xp.zeros_like(param)
        state["step"] += 1
        g = self._regularized_grad(param, grad, group)  # slot 1 when it is not grad itself
        square_avg, acc_delta = state["square_avg"], state["acc_delta"]
        std, delta = self._scratch_like(param, 0), self._scratch_like(param, 2)

        square_avg *= rho
        xp.multiply(g, g, out=std)
        std *= 1.0 - rho
        square_avg += std
        xp.add(square_avg, eps, out=std)
        xp.sqrt(std, out=std)
        xp.add(acc_delta, eps, out=delta)
        xp.sqrt(delta, out=delta)
        delta /= std
        delta *= g

        acc_delta *= rho
        xp.multiply(delta, delta, out=std)
        std *= 1.0 - rho
        acc_delta += std
        delta *= -group["lr"]
        param += delta
