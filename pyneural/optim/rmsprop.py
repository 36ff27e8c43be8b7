"""RMSprop (Hinton's lecture 6e), with momentum and the centered variant (Graves, 2013).

Each coordinate is divided by a running root mean square of its gradients:

    g   = grad + weight_decay * p                        (negated first under ``maximize``)
    v   = alpha * v + (1 - alpha) * g * g
    avg = sqrt(v) + eps,   or, centered:   m = m + (1 - alpha) * (g - m),
                                          avg = sqrt(v - m * m) + eps
    p  -= lr * g / avg,    or, with momentum:   buf = momentum * buf + g / avg,   p -= lr * buf

There is no bias correction (unlike Adam): the first steps are large, ``g / (sqrt(1 - alpha) |g|)``.
Centering divides by an estimate of the gradient's standard deviation instead of its RMS. The
order of operations, and the state names (``square_avg``, ``grad_avg``, ``momentum_buffer``),
follow ``torch.optim.RMSprop``.
"""
from pyneural import backend

from .optimizer import Optimizer


class RMSprop(Optimizer):
    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
                 *, maximize=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered, maximize=maximize))

    def _check_group(self, group):
        self._check_numbers(group, ("lr", "eps", "weight_decay", "momentum"))
        self._check_numbers(group, ("alpha",), upper=1.0)
        group["centered"] = bool(group["centered"])
        group["maximize"] = bool(group["maximize"])

    def _update(self, param, grad, state, group):
        xp = backend.xp(param)
        alpha, momentum = group["alpha"], group["momentum"]
        if not state:
            state["step"] = 0
            state["square_avg"] = xp.zeros_like(param)
        state["step"] += 1
        g = self._regularized_grad(param, grad, group)
        square_avg, avg = state["square_avg"], self._scratch_like(param, 0)

        square_avg *= alpha
        xp.multiply(g, g, out=avg)
        avg *= 1.0 - alpha
        square_avg += avg
        if group["centered"]:
            grad_avg = state.get("grad_avg")
            if grad_avg is None:
                grad_avg = state["grad_avg"] = xp.zeros_like(param)
            xp.subtract(g, grad_avg, out=avg)  # grad_avg.lerp_(g, 1 - alpha)
            avg *= 1.0 - alpha
            grad_avg += avg
            xp.multiply(grad_avg, grad_avg, out=avg)
            xp.subtract(square_avg, avg, out=avg)
            xp.sqrt(avg, out=avg)
        else:
            xp.sqrt(square_avg, out=avg)
        avg += group["eps"]

        xp.divide(g, avg, out=avg)
        if momentum > 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = xp.zeros_like(param)
            buf *= momentum
            buf += avg
            xp.multiply(buf, -group["lr"], out=avg)
        else:
            avg *= -group["lr"]
        param += avg
