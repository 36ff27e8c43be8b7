"""Stochastic gradient descent with momentum, dampening, Nesterov momentum and L2 weight decay.

The update follows PyTorch's formulation (so results match ``torch.optim.SGD`` step for step):

    g   = grad + weight_decay * p
    buf = g                                   on the first step
    buf = momentum * buf + (1 - dampening) * g   afterwards
    g   = g + momentum * buf   (Nesterov)   or   g = buf
    p  -= lr * g

Each dense step is one fused pass over the parameter, its gradient and the momentum buffer (the
backend's ``sgd_update``: csrc/cpu/optim_update.cpp on the CPU, a kernel on the CUDA device; array
ops for other dtypes), with the float32 operations above in that order: no temporaries.
"""
import numpy as np

from pyneural import backend


from .optimizer import Optimizer


class SGD(Optimizer):
    def __init__(self, params, lr=0.01, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def _check_group(self, group):
        for key in ("lr", "momentum", "weight_decay"):
            value = group[key]
            if not isinstance(value, (int, float, np.floating)) or value < 0:
                raise ValueError(f"SGD: {key} must be a number >= 0, got {value!r}")
            group[key] = float(value)
        group["dampening"] = float(group["dampening"])
        group["nesterov"] = bool(group["nesterov"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"SGD: Nesterov momentum needs momentum > 0 and dampening == 0, got "
                             f"momentum={group['momentum']}, dampening={group['dampening']}")

    def _update(self, param, grad, state, group):
        momentum, buf, first = group["momentum"], None, False
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf, first = backend.xp(param).zeros_like(param), True
            # the fused step runs over memory in order: the buffer in the parameter's layout
            buf = state["momentum_buffer"] = backend.same_layout(buf, param)
        backend.of(param).sgd_update(param, grad, buf, group["lr"], momentum, group["dampening"],
                                     group["weight_decay"], group["nesterov"], first)

    def _sparse_update(self, param, grad, state, group):
        momentum = group["momentum"]
        buf = None
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = backend.xp(param).zeros_like(param)
        backend.of(param).sparse_sgd_update(param, grad.indices, grad.values, group["lr"], group["weight_decay"],
                                            momentum, group["dampening"], group["nesterov"], buf)
