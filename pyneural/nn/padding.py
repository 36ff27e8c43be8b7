"""The 2-D padding layers: ReflectionPad2d, ReplicationPad2d, ZeroPad2d, ConstantPad2d, each
F.pad with its mode as a layer. ``padding``: an int (every side) or ``(left, right, top, bottom)``."""
import numbers

from pyneural import functional as F
from pyneural.nn.linear import input_shape
from pyneural.nn.module import Module


def _four_sides(name, padding):
    if isinstance(padding, numbers.Integral) and not isinstance(padding, bool):
        return (int(padding),) * 4
    sides = tuple(padding)
    if len(sides) != 4 or not all(isinstance(p, numbers.Integral) and not isinstance(p, bool) for p in sides):
        raise ValueError(f"{name}: padding must be an int or (left, right, top, bottom), got {padding!r}")
    return tuple(int(p) for p in sides)


class _Pad2d(Module):
    mode = "constant"

    def __init__(self, padding, value=0.0):
        super().__init__()
        self.padding, self.value = _four_sides(type(self).__name__, padding), value

    def forward(self, x):
        shape = input_shape(self, x)
        if len(shape) not in (3, 4):
            raise ValueError(f"{self!r}: expected input (N, C, H, W) or (C, H, W), got {shape}")
        value = self.value if self.mode == "constant" else None
        return F.pad(x, self.padding, mode=self.mode, value=value)

    def extra_repr(self):
        return f"{self.padding}" + (f", value={self.value}" if type(self) is ConstantPad2d else "")


class ReflectionPad2d(_Pad2d):
    """Pad by mirroring the input at its edges (the edge itself not repeated)."""
    mode = "reflect"

    def __init__(self, padding):
        super().__init__(padding)


class ReplicationPad2d(_Pad2d):
    """Pad by repeating the edge values."""
    mode = "replicate"

    def __init__(self, padding):
        super().__init__(padding)


class ZeroPad2d(_Pad2d):
    def __init__(self, padding):
        super().__init__(padding, 0.0)


class ConstantPad2d(_Pad2d):
    def __init__(self, padding, value):
        super().__init__(padding, value)
