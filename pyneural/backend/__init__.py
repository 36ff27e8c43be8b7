"""The one place that knows devices.

A *device* is ``pn.device("cpu")`` or ``pn.device("cuda")`` / ``"cuda:0"`` (PyTorch's names; a
device compares equal to its string). A *backend* is the module that runs kernels on one device's
arrays, with the same functions on each:

* :mod:`pyneural.backend.cpu`  -- numpy arrays, the C++ kernels of ``pyneural._C``;
* :mod:`pyneural.backend.cuda` -- CuPy arrays (or the emulated device's), pyneural's CUDA kernels
  (``pyneural.cuda``: the native ``_cuda`` module, ``cupy.RawModule``, or the emulator).

Functions ask ``backend.of(array)`` for their kernels instead of importing the CPU ones, and
``backend.xp(array)`` for the array module of the whole-array code in between (the array's own:
numpy, cupy or the emulated device's namespace).
"""
import numpy as np

_ndarray = np.ndarray


class device:
    """``pn.device("cuda:0")``: a device type and index, equal to ``"cuda"`` / ``"cuda:0"``."""

    __slots__ = ("type", "index")

    def __init__(self, spec, index=None):
        if isinstance(spec, device):
            self.type, self.index = spec.type, spec.index
            return
        if not isinstance(spec, str):
            raise TypeError(f"device: expected a string like 'cpu' or 'cuda:0', got {type(spec).__name__}")
        kind, _, idx = spec.partition(":")
        if kind not in ("cpu", "cuda"):
            raise RuntimeError(f"Expected one of cpu, cuda device type at start of device string: {spec!r}")
        if idx:
            if not idx.isdigit():
                raise RuntimeError(f"Invalid device string: {spec!r}")
            index = int(idx)
        if kind == "cuda" and index is None:
            index = 0
        if kind == "cpu" and index not in (None, 0):
            raise RuntimeError(f"device: the CPU has no index {index}")
        self.type, self.index = kind, (None if kind == "cpu" else index)

    def __eq__(self, other):
        if isinstance(other, str):
            try:
                other = device(other)
            except RuntimeError:
                return False
        if not isinstance(other, device):
            return NotImplemented
        return self.type == other.type and (self.index == other.index or self.type == "cpu")

    def __hash__(self):
        return hash((self.type, self.index))

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self):
        return f"device(type='{self.type}'" + ("" if self.index is None else f", index={self.index}") + ")"


CPU = device("cpu")


_EMULATED = "pyneural.cuda.emulator.xp"  # the module of the emulated device's arrays


def is_device_array(a):
    """True for a CuPy array or an emulated-device array."""
    module = type(a).__module__
    return module.startswith("cupy") or module == _EMULATED


def device_of(a):
    """The device an array lives on."""
    if type(a) is _ndarray or not is_device_array(a):
        return CPU
    return device("cuda", a.device.id)


def of(a):
    """The backend module for array ``a``."""
    return cpu if type(a) is _ndarray or not is_device_array(a) else cuda


def for_device(dev):
    dev = device(dev)
    if dev.type == "cpu":
        return cpu
    cuda.require(dev)
    return cuda


def xp(a):
    """The array module of ``a`` itself: numpy, cupy, or the emulated device's namespace."""
    if type(a) is _ndarray:
        return np
    module = type(a).__module__
    if module.startswith("cupy"):
        import cupy
        return cupy
    if module == _EMULATED:
        from pyneural.cuda.emulator import xp as emulated
        return emulated
    return np


def check_same_device(op, arrays):
    """RuntimeError naming both devices when the arrays of one op live on different devices."""
    first = device_of(arrays[0])
    for a in arrays[1:]:
        d = device_of(a)
        if d != first:
            raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two devices, "
                               f"{first} and {d}! (in {op})")


def to_device(a, dev):
    """``a`` copied to device ``dev`` (the same array when it is already there)."""
    dev = device(dev)
    if device_of(a) == dev:
        return a
    if dev.type == "cpu":
        return a.get()
    return for_device(dev).from_host(a if type(a) is _ndarray else to_device(a, CPU))


from pyneural.backend import cpu, cuda  # noqa: E402,F401  (both backends, importable without CuPy)
