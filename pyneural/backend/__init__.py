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
import math

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


# ---- memory layouts ------------------------------------------------------------------------------
# A channels_last tensor keeps PyTorch's logical (N, C, H, W) shape over memory laid out as
# (N, H, W, C): the array is the (0, 3, 1, 2) transpose of a C-contiguous NHWC array. The kernels
# that have an NHWC variant (the CUDA conv, pooling and batch norm) take that NHWC array directly.

class memory_format:
    """``pn.contiguous_format``, ``pn.channels_last``, ``pn.preserve_format``."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"pyneural.{self.name}"


contiguous_format = memory_format("contiguous_format")
channels_last = memory_format("channels_last")
preserve_format = memory_format("preserve_format")


def is_channels_last(a):
    """True for a 4-D array laid out NHWC in memory that is not also plain C-contiguous (C > 1)."""
    return a.ndim == 4 and not a.flags.c_contiguous and a.transpose(0, 2, 3, 1).flags.c_contiguous


def nhwc(a):
    """The C-contiguous (N, H, W, C) array holding 4-D ``a``'s values (a view when ``a`` is channels_last)."""
    t = a.transpose(0, 2, 3, 1)
    return t if t.flags.c_contiguous else xp(a).ascontiguousarray(t)


def from_nhwc(a):
    """A C-contiguous (N, H, W, C) array seen as a channels_last (N, C, H, W) array (a view)."""
    return a.transpose(0, 3, 1, 2)


def to_memory_format(a, fmt):
    """``a`` in layout ``fmt`` (a copy when it changes; ``a`` itself when it is already there)."""
    if fmt is None or fmt is preserve_format:
        return a
    if fmt is channels_last:
        if a.ndim != 4:
            raise RuntimeError(f"required rank 4 tensor to use channels_last format, got shape {a.shape}")
        return a if a.transpose(0, 2, 3, 1).flags.c_contiguous else from_nhwc(nhwc(a))
    if fmt is contiguous_format:
        return a if a.flags.c_contiguous else xp(a).ascontiguousarray(a)
    raise TypeError(f"memory_format must be pyneural.contiguous_format, channels_last or preserve_format, got {fmt!r}")


def same_layout(a, like):
    """``a`` (same shape as ``like``) laid out as ``like`` is: channels_last or C-contiguous."""
    if is_channels_last(like):
        return to_memory_format(a, channels_last)
    return a if a.flags.c_contiguous else xp(a).ascontiguousarray(a)


def flat(a):
    """A 1-D view of every element of ``a`` in memory order when ``a`` is dense (C-contiguous or
    channels_last), else None. Arrays of one shape and layout give matching flat views."""
    if a.flags.c_contiguous:
        return a.reshape(-1)
    if a.ndim == 4 and a.transpose(0, 2, 3, 1).flags.c_contiguous:
        return a.transpose(0, 2, 3, 1).reshape(-1)
    return None


# ---- shared by both backends -------------------------------------------------------------------
def low_dtype(*arrays):
    """The 16-bit floating dtype (autocast's) among ``arrays`` (None entries skipped), or None."""
    from pyneural import amp
    for a in arrays:
        if a is not None and amp.is_low_precision(a.dtype):
            return a.dtype
    return None


def widened(low, *arrays):
    """``arrays`` rounded to the 16-bit dtype ``low``, then held as float32 (exact: products of 16-bit
    values are exact in fp32, so the fp32 kernels accumulate them as tensor cores would)."""
    return tuple(None if a is None else (a if a.dtype == low else a.astype(low)).astype(np.float32) for a in arrays)


def update_running_stats(running_mean, running_var, mean, var, count, momentum):
    """Batch norm's running estimates, in place: exponential averages with ``momentum`` of the batch
    mean and of the unbiased batch variance (PyTorch's rule; ``var`` is the biased one of ``count`` values)."""
    running_mean *= 1.0 - momentum
    running_mean += momentum * mean.astype(running_mean.dtype)
    running_var *= 1.0 - momentum
    running_var += (momentum * count / (count - 1)) * var.astype(running_var.dtype)


def sgd_step_reference(param, grad, buf, lr, momentum, dampening, weight_decay, nesterov, first_step):
    """One torch.optim.SGD step in place with array ops (any dtype, layout or device): what the fused
    kernels compute, for the arrays they do not take. ``buf``: the momentum buffer (None without
    momentum); ``first_step``: it starts at the gradient."""
    g = grad + weight_decay * param if weight_decay != 0 else grad
    if buf is not None:
        if first_step:
            buf[...] = g
        else:
            buf *= momentum
            buf += g if dampening == 0 else g * (1.0 - dampening)
        g = buf * momentum + g if nesterov else buf
    param += g * -lr


def adam_step_reference(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps, weight_decay, decoupled):
    """One Adam (decoupled: AdamW) step in place with array ops; ``step`` counts from 1."""
    b1, b2 = betas
    g = grad
    if weight_decay != 0:
        if decoupled:
            param *= 1.0 - lr * weight_decay
        else:
            g = param * weight_decay + grad
    exp_avg *= b1
    exp_avg += g * (1.0 - b1)
    exp_avg_sq *= b2
    exp_avg_sq += (g * g) * (1.0 - b2)
    denom = xp(param).sqrt(exp_avg_sq) / math.sqrt(1.0 - b2 ** step) + eps
    param += (exp_avg / denom) * -(lr / (1.0 - b1 ** step))


from pyneural.backend import cpu, cuda  # noqa: E402,F401  (both backends, importable without CuPy)
