"""Adagrad (Duchi, Hazan & Singer, 2011): per-coordinate steps shrinking with the gradients seen.

Each coordinate keeps the running sum of its squared gradients and steps by

    g   = grad + weight_decay * p          (negated first under ``maximize``)
    sum += g * g
    p  -= lr / (1 + (t - 1) * lr_decay) * g / (sqrt(sum) + eps)

with ``t`` the step count. ``sum`` starts at ``initial_accumulator_value``; a positive start keeps
the first steps from being ``lr`` in every coordinate regardless of the gradient's size. The order
of operations follows ``torch.optim.Adagrad`` so float32 results agree closely. Unlike PyTorch,
the state is created at a parameter's first step, not in the constructor (so a parameter added
later with ``add_param_group`` works too); the numbers are the same.
"""
from pyneural import backend

from .optimizer import Optimizer


class Adagrad(Optimizer):
    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10,
                 *, maximize=False):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps,
                                      maximize=maximize))

    def _check_group(self, group):
        self._check_numbers(group, ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps"))
        group["maximize"] = bool(group["maximize"])

    def _update(self, param, grad, state, group):
        xp = backend.xp(param)
        if not state:
            state["step"] = 0
            state["sum"] = xp.full_like(param, group["initial_accumulator_value"])
        state["step"] += 1
        g = self._regularized_grad(param, grad, group)
        step_size = group["lr"] / (1 + (state["step"] - 1) * group["lr_decay"])
        total, work = state["sum"], self._scratch_like(param, 0)

        xp.multiply(g, g, out=work)
        total += work
        xp.sqrt(total, out=work)
        work += group["eps"]
        xp.divide(g, work, out=work)
        work *= -step_size
        param += work
