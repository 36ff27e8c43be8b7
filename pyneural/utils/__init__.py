"""``pyneural.utils.data``: PyTorch's spelling of ``pyneural.data`` (``torch.utils.data.DataLoader``,
``from torch.utils.data import Dataset``), so a script ported by changing its imports keeps its
body. It is the same module object, not a copy: ``pyneural.utils.data.DataLoader is
pyneural.data.DataLoader``."""
import sys

from pyneural import data

sys.modules[__name__ + ".data"] = data

__all__ = ["data"]
