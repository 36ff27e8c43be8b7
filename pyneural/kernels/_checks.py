"""Argument checks for every kernel wrapper, host and device: one implementation for the numpy arrays
of ``pyneural.kernels`` and the CuPy (or emulated-device) arrays of ``pyneural.cuda``.

A check takes ``on="cpu"`` (a numpy array) or ``on="cuda"`` (a device array on the current device);
which array is which is asked of :mod:`pyneural.backend`, the one place that knows devices. The CUDA
wrappers import the ``check_device_*`` spellings, which default to float32 and add the 32-bit
element limit of their kernels. Every error names the function, the argument and what was given
against what was expected.
"""
import numpy as np

from pyneural.cuda import _backend as _cuda_runtime

FLOAT_DTYPES = (np.float32, np.float64)
INT32_MAX = np.iinfo(np.int32).max
_ON = ("cpu", "cuda")


def _one_of(dtypes):
    names = [np.dtype(d).name for d in dtypes]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _is_array(x, on):
    if on == "cpu":
        return isinstance(x, np.ndarray)
    return backend.is_device_array(x) and isinstance(x, backend.xp(x).ndarray)


def _where_hint(x, on):
    if on == "cuda" and isinstance(x, np.ndarray):
        return " (a numpy array lives on the host: cupy.asarray() it first)"
    if on == "cpu" and backend.is_device_array(x):
        return f" (an array on {backend.device_of(x)}: .get() it first)"
    return ""


def check_array(fn, name, x, ndim=None, dtypes=FLOAT_DTYPES, allow_empty=False, *, on="cpu"):
    """Require a C-contiguous array of one of ``dtypes`` with ``ndim`` dimensions: a numpy array
    (``on="cpu"``) or a device array on the current device (``on="cuda"``)."""
    if on not in _ON:
        raise ValueError(f"check_array: on must be 'cpu' or 'cuda', got {on!r}")
    module = "numpy" if on == "cpu" else "cupy"
    if not _is_array(x, on):
        raise TypeError(f"{fn}: {name} must be a {module}.ndarray, got {type(x).__name__}{_where_hint(x, on)}")
    if x.dtype not in [np.dtype(d) for d in dtypes]:
        raise TypeError(f"{fn}: {name} must have dtype {_one_of(dtypes)}, got {x.dtype} (shape {x.shape})")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{fn}: {name} must have {ndim} dimensions, got shape {x.shape}")
    if not allow_empty and x.size == 0:
        raise ValueError(f"{fn}: {name} has a zero-size dimension, shape {x.shape}")
    if not x.flags.c_contiguous:
        raise ValueError(f"{fn}: {name} must be C-contiguous (shape {x.shape}, strides {x.strides}); "
                         f"call {module}.ascontiguousarray first")
    if on == "cuda":
        check_current_device(fn, **{name: x})
    return x


def check_current_device(fn, **arrays):
    """Require every given device array (None skipped) to live on the current CUDA device."""
    for name, x in arrays.items():
        if x is None:
            continue
        current = backend.xp(x).cuda.Device().id
        if x.device.id != current:
            raise ValueError(f"{fn}: {name} (shape {x.shape}) is on {backend.device_of(x)}, but the current "
                             f"device is cuda:{current}")


def check_same_dtype(fn, **arrays):
    """Require every given array to share one dtype."""
    dtypes = {name: a.dtype for name, a in arrays.items() if a is not None}
    if len(set(dtypes.values())) > 1:
        listed = ", ".join(f"{n}={d}" for n, d in dtypes.items())
        raise TypeError(f"{fn}: arrays must share one dtype, got {listed}")


def check_output(fn, name, out, shape, dtype, *, on="cpu"):
    """Require a caller-supplied output of exactly ``shape`` and ``dtype``, or make one (uninitialised)
    when ``out`` is None."""
    if out is None:
        xp = np if on == "cpu" else _cuda_runtime.cupy()
        return xp.empty(shape, dtype=dtype)
    check_array(fn, name, out, ndim=len(shape), dtypes=(dtype,), on=on)
    if out.shape != tuple(shape):
        raise ValueError(f"{fn}: {name} must have shape {tuple(shape)}, got {out.shape}")
    if not getattr(out.flags, "writeable", True):
        raise ValueError(f"{fn}: {name} is read-only")
    return out


def check_vector(fn, name, v, length, dtypes=(np.float32,), *, on="cpu"):
    """An optional 1-D array of ``length`` (None passes through)."""
    if v is None:
        return None
    check_array(fn, name, v, ndim=1, dtypes=dtypes, on=on)
    if v.shape[0] != length:
        raise ValueError(f"{fn}: {name} must have shape ({length},), got {v.shape}")
    return v


def check_no_overlap(fn, out_name, out, **inputs):
    """Reject an output that shares memory with an input the kernel still reads."""
    xp = backend.xp(out)
    for name, x in inputs.items():
        if x is not None and xp.may_share_memory(out, x):
            raise ValueError(f"{fn}: {out_name} (shape {out.shape}) overlaps {name} (shape {x.shape}); "
                             f"pass a separate array")


# ---- the CUDA wrappers' spelling: one dtype (float32 unless told), 32-bit element counts --------
def _check_int32_size(fn, name, x):
    if x.size > INT32_MAX:
        raise ValueError(f"{fn}: {name} has {x.size} elements; the kernels index with 32 bits (< 2^31)")


def check_device_array(fn, name, x, ndim=None, dtype=np.float32, allow_empty=False):
    """check_array(on="cuda") for a kernel that takes one dtype and indexes with 32 bits."""
    check_array(fn, name, x, ndim, (dtype,), allow_empty, on="cuda")
    _check_int32_size(fn, name, x)
    return x


def check_device_output(fn, name, out, shape, dtype=np.float32):
    """check_output(on="cuda"), float32 unless told, within the 32-bit element limit."""
    out = check_output(fn, name, out, shape, dtype, on="cuda")
    _check_int32_size(fn, name, out)
    return out


def check_device_vector(fn, name, v, length):
    """An optional float32 device vector of ``length`` (None passes through)."""
    return check_vector(fn, name, v, length, on="cuda")


def pair(fn, name, v, minimum=0):
    """Turn an int or a 2-sequence into an (h, w) pair of ints >= minimum."""
    if isinstance(v, (int, np.integer)):
        v = (int(v), int(v))
    else:
        try:
            v = tuple(int(e) for e in v)
        except TypeError:
            raise TypeError(f"{fn}: {name} must be an int or a pair of ints, got {v!r}") from None
        if len(v) != 2:
            raise ValueError(f"{fn}: {name} must be an int or a pair of ints, got {v!r}")
    if min(v) < minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {v}")
    return v


# Last: pyneural.backend imports the CPU kernels, which import this module (read only at call time).
from pyneural import backend  # noqa: E402


LAYOUTS = ("NCHW", "NHWC")


def check_layout(fn, layout):
    """True for "NHWC" (channels_last memory), False for "NCHW"; anything else is refused."""
    if layout not in LAYOUTS:
        raise ValueError(f"{fn}: layout must be 'NCHW' or 'NHWC', got {layout!r}")
    return layout == "NHWC"
