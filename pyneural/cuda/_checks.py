"""Argument checks for the CUDA wrappers, in the style of pyneural/kernels/_checks.py: every
error names the function, the argument and what was given against what was expected."""
import numpy as np

from pyneural.cuda._backend import cupy

INT32_MAX = np.iinfo(np.int32).max


def check_array(fn, name, x, ndim=None, dtype=np.float32, allow_empty=False):
    """Require a C-contiguous CuPy array of ``dtype`` and ``ndim`` on the current device."""
    cp = cupy()
    if not isinstance(x, cp.ndarray):
        where = " (a numpy array lives on the host: cupy.asarray() it first)" if isinstance(x, np.ndarray) else ""
        raise TypeError(f"{fn}: {name} must be a cupy.ndarray, got {type(x).__name__}{where}")
    if x.dtype != np.dtype(dtype):
        raise TypeError(f"{fn}: {name} must have dtype {np.dtype(dtype).name}, got {x.dtype} (shape {x.shape})")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{fn}: {name} must have {ndim} dimensions, got shape {x.shape}")
    if not allow_empty and x.size == 0:
        raise ValueError(f"{fn}: {name} has a zero-size dimension, shape {x.shape}")
    if not x.flags.c_contiguous:
        raise ValueError(f"{fn}: {name} must be C-contiguous (shape {x.shape}, strides {x.strides}); "
                         f"call cupy.ascontiguousarray first")
    current = cp.cuda.Device().id
    if x.device.id != current:
        raise ValueError(f"{fn}: {name} (shape {x.shape}) is on device {x.device.id}, but the current device "
                         f"is {current}")
    if x.size > INT32_MAX:
        raise ValueError(f"{fn}: {name} has {x.size} elements; the kernels index with 32 bits (< 2^31)")
    return x


def check_output(fn, name, out, shape, dtype=np.float32):
    """Require a caller-supplied output of exactly ``shape`` (or make one when ``out`` is None)."""
    if out is None:
        return cupy().empty(shape, dtype=dtype)
    check_array(fn, name, out, ndim=len(shape), dtype=dtype)
    if out.shape != tuple(shape):
        raise ValueError(f"{fn}: {name} must have shape {tuple(shape)}, got {out.shape}")
    return out


def check_no_overlap(fn, out_name, out, **inputs):
    """Reject an output that shares memory with an input the kernel still reads."""
    cp = cupy()
    for name, x in inputs.items():
        if x is not None and cp.may_share_memory(out, x):
            raise ValueError(f"{fn}: {out_name} (shape {out.shape}) overlaps {name} (shape {x.shape}); "
                             f"pass a separate array")


def check_vector(fn, name, v, length):
    """An optional float32 vector of ``length`` (None passes through)."""
    if v is None:
        return None
    check_array(fn, name, v, ndim=1)
    if v.shape[0] != length:
        raise ValueError(f"{fn}: {name} must have shape ({length},), got {v.shape}")
    return v
