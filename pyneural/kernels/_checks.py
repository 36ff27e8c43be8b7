"""Validation shared by the kernel wrappers: every error names the function, the argument and
what was given against what was expected."""
import numpy as np

FLOAT_DTYPES = (np.float32, np.float64)


def check_array(fn, name, x, ndim=None, dtypes=FLOAT_DTYPES, allow_empty=False):
    """Require a C-contiguous numpy array of one of ``dtypes`` with ``ndim`` dimensions."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{fn}: {name} must be a numpy.ndarray, got {type(x).__name__}")
    if x.dtype.type not in dtypes:
        wanted = " or ".join(np.dtype(d).name for d in dtypes)
        raise TypeError(f"{fn}: {name} must have dtype {wanted}, got {x.dtype} (shape {x.shape})")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{fn}: {name} must have {ndim} dimensions, got shape {x.shape}")
    if not allow_empty and x.size == 0:
        raise ValueError(f"{fn}: {name} has a zero-size dimension, shape {x.shape}")
    if not x.flags.c_contiguous:
        raise ValueError(f"{fn}: {name} must be C-contiguous (shape {x.shape}, strides {x.strides}); "
                         f"call numpy.ascontiguousarray first")
    return x


def check_same_dtype(fn, **arrays):
    """Require every given array to share one dtype."""
    dtypes = {name: a.dtype for name, a in arrays.items() if a is not None}
    if len(set(dtypes.values())) > 1:
        listed = ", ".join(f"{n}={d}" for n, d in dtypes.items())
        raise TypeError(f"{fn}: arrays must share one dtype, got {listed}")


def check_output(fn, name, out, shape, dtype):
    """Require a caller-supplied output array of exactly ``shape`` and ``dtype``."""
    check_array(fn, name, out, ndim=len(shape), dtypes=(np.dtype(dtype).type,))
    if out.shape != tuple(shape):
        raise ValueError(f"{fn}: {name} must have shape {tuple(shape)}, got {out.shape}")
    if not out.flags.writeable:
        raise ValueError(f"{fn}: {name} is read-only")
    return out


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
