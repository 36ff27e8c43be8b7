"""Adam and AdamW.

Both keep running averages of the gradient (``exp_avg``) and of its square (``exp_avg_sq``) and
take a bias-corrected step (Kingma & Ba, 2015):

    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g*g
    p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

They differ only in weight decay. Adam adds ``weight_decay * p`` to the gradient (L2, which the
adaptive denominator then rescales per coordinate); AdamW decays the weights directly,
``p *= 1 - lr * weight_decay``, before the step (Loshchilov & Hutter, "Decoupled Weight Decay").
The order of operations follows ``torch.optim.Adam``/``AdamW`` so float32 results agree closely.

Each dense step is one fused pass over the parameter, its gradient and its moments (the backend's
``adam_update``: csrc/cpu/optim_update.cpp on the CPU, a kernel on the CUDA device; array ops for
other dtypes), with the float32 operations of the formulas above in that order: no allocation.

Row-sparse gradients (nn.Embedding(sparse=True)) take the lazy step of ``torch.optim.SparseAdam``:
the moments and weights of the touched rows are updated with the formulas above (the same float32
operations, csrc/cpu/embedding_update.cpp; on the CUDA device its twin in csrc/cuda/embedding.cu,
same bits); untouched rows keep their moments (no decay towards zero) and their weights. The step
count ``t`` of the bias corrections is the parameter's global count. Weight decay, L2 or decoupled,
acts on the touched rows only.
"""
import numpy as np

from pyneural import backend


from .optimizer import Optimizer


class Adam(Optimizer):
    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def _check_group(self, group):
        name = type(self).__name__
        for key in ("lr", "eps", "weight_decay"):
            value = group[key]
            if not isinstance(value, (int, float, np.floating)) or value < 0:
                raise ValueError(f"{name}: {key} must be a number >= 0, got {value!r}")
            group[key] = float(value)
        try:
            b1, b2 = (float(b) for b in group["betas"])
        except (TypeError, ValueError):
            raise ValueError(f"{name}: betas must be a pair of floats, got {group['betas']!r}") from None
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"{name}: betas must lie in [0, 1), got ({b1}, {b2})")
        group["betas"] = (b1, b2)

    @staticmethod
    def _next_step(param, state):
        if not state:
            state["step"] = 0
            state["exp_avg"] = backend.xp(param).zeros_like(param)
            state["exp_avg_sq"] = backend.xp(param).zeros_like(param)
        state["step"] += 1

    def _sparse_update(self, param, grad, state, group):
        self._next_step(param, state)
        backend.of(param).sparse_adam_update(param, grad.indices, grad.values, state["exp_avg"], state["exp_avg_sq"],
                                   state["step"], group["lr"], group["betas"], group["eps"], group["weight_decay"],
                                   self._decoupled)

    def _update(self, param, grad, state, group):
        self._next_step(param, state)
        # the fused step runs over memory in order: the moments in the parameter's layout
        m = state["exp_avg"] = backend.same_layout(state["exp_avg"], param)
        v = state["exp_avg_sq"] = backend.same_layout(state["exp_avg_sq"], param)
        backend.of(param).adam_update(param, grad, m, v, state["step"], group["lr"], group["betas"], group["eps"],
                                      group["weight_decay"], self._decoupled)


class AdamW(Adam):
    """Adam with decoupled weight decay (default 0.01, as in PyTorch)."""
    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
