"""``pyneural.nn.utils``: PyTorch's home for the gradient clipping helpers
(``torch.nn.utils.clip_grad_norm_``), which pyneural keeps in ``pyneural.optim.clip``."""
from pyneural.optim.clip import clip_grad_norm_, clip_grad_value_

__all__ = ["clip_grad_norm_", "clip_grad_value_"]
