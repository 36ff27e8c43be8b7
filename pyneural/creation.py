"""Tensor factories: tensor, from_numpy, zeros/ones/full/empty (and *_like), arange, linspace,
eye, and the random ones (randn, rand, randint, randperm) drawn from pyneural.random.

Floating factories default to float32 (PyTorch's default dtype); ``dtype`` takes any numpy dtype
or the aliases exported as ``pyneural.float32`` etc.
"""
import numpy as np

from pyneural import backend as _backend
from pyneural import random as _random
from pyneural.tensor import Tensor, _default_array, wrap

float32 = np.float32
float64 = np.float64
float16 = np.float16
int64 = np.int64
int32 = np.int32
uint8 = np.uint8
bool_ = np.bool_


def _shape(size):
    if len(size) == 1 and not isinstance(size[0], (int, np.integer)):
        size = tuple(size[0])
    for n in size:
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"size must be non-negative ints, got {size}")
    return tuple(int(n) for n in size)


def _finish(array, requires_grad, device=None):
    """A leaf around ``array`` (made on the host), moved to ``device`` when one is given."""
    if device is not None:
        array = _backend.to_device(array, device)
    t = wrap(array)
    if requires_grad:
        t.requires_grad_(True)
    return t


def tensor(data, dtype=None, requires_grad=False, device=None):
    """A new tensor holding a copy of ``data`` (list, scalar, array or Tensor). Float data is
    float32 unless ``dtype`` is given; integers are int64."""
    return _finish(_default_array(data, dtype), requires_grad, device)


def as_tensor(data, dtype=None):
    """Like ``tensor`` but shares a numpy array's memory when no conversion is needed."""
    if isinstance(data, Tensor) and (dtype is None or np.dtype(dtype) == data.dtype):
        return data
    if isinstance(data, np.ndarray) and (dtype is None or np.dtype(dtype) == data.dtype):
        return wrap(data)
    return tensor(data, dtype)


def from_numpy(array):
    """A tensor sharing ``array``'s memory, dtype unchanged (like ``torch.from_numpy``)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy: expected a numpy.ndarray, got {type(array).__name__}")
    return wrap(array)


def zeros(*size, dtype=None, requires_grad=False, device=None):
    return _finish(np.zeros(_shape(size), dtype=dtype or np.float32), requires_grad, device)


def ones(*size, dtype=None, requires_grad=False, device=None):
    return _finish(np.ones(_shape(size), dtype=dtype or np.float32), requires_grad, device)


def empty(*size, dtype=None, requires_grad=False, device=None):
    return _finish(np.empty(_shape(size), dtype=dtype or np.float32), requires_grad, device)


def full(size, fill_value, dtype=None, requires_grad=False, device=None):
    if dtype is None:
        dtype = np.float32 if isinstance(fill_value, (float, np.floating)) else np.asarray(fill_value).dtype
    return _finish(np.full(_shape((size,)), fill_value, dtype=dtype), requires_grad, device)


def zeros_like(t, dtype=None, requires_grad=False, device=None):
    device = t.device if device is None else device
    return _finish(np.zeros(t.shape, dtype=dtype or t.dtype), requires_grad, device)


def ones_like(t, dtype=None, requires_grad=False, device=None):
    device = t.device if device is None else device
    return _finish(np.ones(t.shape, dtype=dtype or t.dtype), requires_grad, device)


def empty_like(t, dtype=None, requires_grad=False, device=None):
    device = t.device if device is None else device
    return _finish(np.empty(t.shape, dtype=dtype or t.dtype), requires_grad, device)


def full_like(t, fill_value, dtype=None, requires_grad=False, device=None):
    device = t.device if device is None else device
    return _finish(np.full(t.shape, fill_value, dtype=dtype or t.dtype), requires_grad, device)


def arange(start, end=None, step=1, dtype=None, requires_grad=False, device=None):
    if end is None:
        start, end = 0, start
    if dtype is None:
        is_float = any(isinstance(v, (float, np.floating)) for v in (start, end, step))
        dtype = np.float32 if is_float else np.int64
    return _finish(np.arange(start, end, step, dtype=dtype), requires_grad, device)


def linspace(start, end, steps, dtype=None, requires_grad=False, device=None):
    return _finish(np.linspace(start, end, steps, dtype=dtype or np.float32), requires_grad, device)


def eye(n, m=None, dtype=None, requires_grad=False, device=None):
    return _finish(np.eye(n, m, dtype=dtype or np.float32), requires_grad, device)


def randn(*size, dtype=None, requires_grad=False, device=None):
    """Standard normal draws from pyneural's seeded generator."""
    return _finish(_random.standard_normal(_shape(size), dtype), requires_grad, device)


def rand(*size, dtype=None, requires_grad=False, device=None):
    """Uniform [0, 1) draws from pyneural's seeded generator."""
    return _finish(_random.random(_shape(size), dtype), requires_grad, device)


def randn_like(t, dtype=None, requires_grad=False, device=None):
    device = t.device if device is None else device
    return randn(*t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad, device=device)


def rand_like(t, dtype=None, requires_grad=False, device=None):
    device = t.device if device is None else device
    return rand(*t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad, device=device)


def randint(low, high=None, size=(), dtype=None, device=None):
    """Integers in [low, high) (or [0, low) when high is omitted), int64 by default."""
    if high is None:
        low, high = 0, low
    if high <= low:
        raise ValueError(f"randint: need low < high, got low={low}, high={high}")
    out = _random.integers(low, high, _shape((size,)) if not isinstance(size, int) else (size,))
    return _finish(out if dtype is None else out.astype(dtype), False, device)


def randperm(n, dtype=None, device=None):
    out = _random.permutation(int(n))
    return _finish(out if dtype is None else out.astype(dtype), False, device)
