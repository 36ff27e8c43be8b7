"""bfloat16 on the CPU: float32 <-> bf16 conversion and the bf16 GEMM's path choice.

Storage is a numpy array of ``ml_dtypes.bfloat16`` (2 bytes: the top half of a float32, the dtype
JAX uses); the C++ kernels see its uint16 bit pattern. Rounding is to nearest, ties to even, on
the bit pattern, with NaN kept a (quiet) NaN: bit for bit what ``a.astype(ml_dtypes.bfloat16)``
gives, only vectorised (AVX512-BF16's ``vcvtne2ps2bf16`` where the CPU has it, AVX-512 integer
arithmetic else) and split over the OpenMP threads for large arrays. bf16 -> float32 is exact.

The GEMM itself is ``pyneural.kernels.gemm.gemm_bf16``. Its path is chosen at run time from the
CPU: ``"amx"`` (tile registers, where CPUID and Linux's tile-data permission allow), else
``"avx512bf16"`` (``vdpbf16ps``), else ``"generic"`` (portable C++); ``"amx_emulated"`` runs the
AMX path's code on a software model of the tiles (for tests, never chosen by itself). The
environment variable ``PYNEURAL_BF16_ISA`` or :func:`set_gemm_isa` change the default; each call
can also name one.
"""
import ml_dtypes
import numpy as np

from pyneural import _C

bfloat16 = np.dtype(ml_dtypes.bfloat16)

CONVERT_PATHS = ("generic", "avx512", "avx512bf16")
GEMM_ISAS = ("amx", "avx512bf16", "generic", "amx_emulated")


def is_bf16(a):
    """Whether ``a`` is a numpy array of ml_dtypes.bfloat16."""
    return isinstance(a, np.ndarray) and a.dtype == bfloat16


def _path_arg(fn, path):
    if path is None:
        return ""
    if path not in CONVERT_PATHS:
        raise ValueError(f"{fn}: path must be one of {CONVERT_PATHS} or None, got {path!r}")
    return path


def _source(fn, a, dtype):
    """``a`` as a C-contiguous array of ``dtype`` (copied only if it is not contiguous)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{fn}: a must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"{fn}: a must have dtype {np.dtype(dtype).name}, got {a.dtype} (shape {a.shape})")
    return np.ascontiguousarray(a)


def to_bf16(a, *, path=None):
    """Return float32 array ``a`` rounded to bfloat16 (same shape; ml_dtypes.bfloat16 dtype).

    ``path`` forces a conversion path (``"avx512bf16"``, ``"avx512"`` or ``"generic"``; None is the
    fastest here); all give the same bits."""
    src = _source("to_bf16", a, np.float32)
    out = np.empty(src.shape, dtype=bfloat16)
    _C.to_bf16(src, out.view(np.uint16), _path_arg("to_bf16", path))
    return out


def to_float32(a, *, path=None):
    """Return bfloat16 array ``a`` widened to float32 (exact; same shape)."""
    src = _source("to_float32", a, bfloat16)
    out = np.empty(src.shape, dtype=np.float32)
    _C.to_float32(src.view(np.uint16), out, _path_arg("to_float32", path))
    return out


def available_convert_paths():
    """The conversion paths this CPU can run, slowest first (each path's CPU needs include the last's)."""
    return CONVERT_PATHS[: CONVERT_PATHS.index(_C.bf16_convert_best_path()) + 1]


def detected_gemm_isa():
    """The best bf16 GEMM path this CPU and OS allow: ``"amx"``, ``"avx512bf16"`` or ``"generic"``."""
    return _C.bf16_gemm_detected_isa()


def gemm_isa():
    """The bf16 GEMM path calls take when they name none (``PYNEURAL_BF16_ISA``, else the detected)."""
    return _C.bf16_gemm_active_isa()


def set_gemm_isa(name):
    """Make ``name`` the default bf16 GEMM path; ValueError (saying why) if it cannot run here."""
    if name not in GEMM_ISAS:
        raise ValueError(f"set_gemm_isa: name must be one of {GEMM_ISAS}, got {name!r}")
    _C.set_bf16_gemm_isa(name)


def available_gemm_isas():
    """The bf16 GEMM paths that can run here (``amx_emulated`` included where it can)."""
    return tuple(name for name in GEMM_ISAS if _C.bf16_gemm_isa_available(name))


def dot_peak_gflops(isa, seconds=0.2):
    """Measured GFLOP/s, all OpenMP threads together, of a loop of the path's dot instruction on
    resident operands (``"amx"``: ``_tile_dpbf16ps``; ``"avx512bf16"``: ``vdpbf16ps``): the
    ceiling a GEMM on that path is held against."""
    if isa not in ("amx", "avx512bf16"):
        raise ValueError(f"dot_peak_gflops: isa must be 'amx' or 'avx512bf16', got {isa!r}")
    return _C.bf16_dot_peak_gflops(isa, float(seconds))
