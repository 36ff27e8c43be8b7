"""General matrix multiply: ``alpha * op(a) @ op(b) + beta * out``.

float32 runs the blocked SIMD kernel (``_C.sgemm``, csrc/cpu/gemm.cpp) on the inputs in place, with
the GIL released; float64 is the numpy reference path used by gradient checks. ``gemm_bf16`` takes
bfloat16 operands (float32 sums, float32 or bfloat16 result, fused bias + ReLU) on the AMX /
AVX512-BF16 / portable kernels of csrc/cpu/gemm_bf16*.cpp.
"""
import numpy as np

from pyneural import _C
from pyneural.kernels._checks import check_array, check_output, check_same_dtype

_FN = "gemm"
_F32 = np.dtype(np.float32)


def _op_shape(x, trans):
    return (x.shape[1], x.shape[0]) if trans else x.shape


def _sgemm_fast(a, b, trans_a, trans_b, alpha, beta, out):
    """The common call, float32 arrays all round, straight to _C.sgemm, which checks every argument
    itself (rank, shapes, contiguity, zero sizes, writeable and non-overlapping out). Returns None
    if anything is off, so that gemm() reruns its own checks and names the problem in its words.
    This saves ~1.2 us per call, a fifth of a 64^3 product."""
    if not (type(a) is np.ndarray and type(b) is np.ndarray and a.dtype == _F32 and b.dtype == _F32):
        return None
    if out is None:
        if beta != 0.0 or a.ndim != 2 or b.ndim != 2:
            return None
        out = np.empty((a.shape[1] if trans_a else a.shape[0], b.shape[0] if trans_b else b.shape[1]), _F32)
    elif not (type(out) is np.ndarray and out.dtype == _F32):
        return None
    try:
        _C.sgemm(a, b, out, bool(trans_a), bool(trans_b), float(alpha), float(beta))
    except (ValueError, TypeError):
        return None
    return out


def gemm(a, b, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, out=None):
    """Return ``alpha * op(a) @ op(b) + beta * out`` where op transposes when its flag is set.

    ``a`` and ``b`` are C-contiguous 2-D float32 or float64 arrays of one dtype (a transposed operand
    is passed untransposed with its flag set: no copy is made). ``out`` (M x N, same dtype) receives
    the result; if it is None a new array is returned and ``beta`` must be 0. With ``beta == 0`` the
    old contents of ``out`` are never read (NaN there does not propagate).
    """
    result = _sgemm_fast(a, b, trans_a, trans_b, alpha, beta, out)
    if result is not None:
        return result

    check_array(_FN, "a", a, ndim=2)
    check_array(_FN, "b", b, ndim=2)
    if b.dtype != a.dtype or (isinstance(out, np.ndarray) and out.dtype != a.dtype):
        check_same_dtype(_FN, a=a, b=b, out=out)  # raises, naming the dtypes
    m, k = _op_shape(a, trans_a)
    kb, n = _op_shape(b, trans_b)
    if k != kb:
        raise ValueError(f"{_FN}: inner dimensions differ: op(a) is {m}x{k} (a.shape {a.shape}, "
                         f"trans_a={trans_a}) but op(b) is {kb}x{n} (b.shape {b.shape}, trans_b={trans_b})")
    alpha, beta = float(alpha), float(beta)
    if out is None:
        if beta != 0.0:
            raise ValueError(f"{_FN}: beta={beta} needs an out array to accumulate into")
        out = np.empty((m, n), dtype=a.dtype)
    else:
        check_output(_FN, "out", out, (m, n), a.dtype)
        if a.dtype != np.float32 and (np.may_share_memory(out, a) or np.may_share_memory(out, b)):
            # (_C.sgemm makes the same check for float32 itself.)
            raise ValueError(f"{_FN}: out (shape {out.shape}) overlaps an input; pass a separate array")

    if a.dtype == np.float32:
        _C.sgemm(a, b, out, bool(trans_a), bool(trans_b), alpha, beta)
        return out

    product = (a.T if trans_a else a) @ (b.T if trans_b else b)
    if alpha != 1.0:
        product *= alpha
    if beta != 0.0:
        product += beta * out
    out[...] = product
    return out


def _check_bf16_operand(name, x):
    """A 2-D C-contiguous bf16 operand, with the likely mix-ups named."""
    from pyneural.kernels.bf16 import bfloat16

    fn = "gemm_bf16"
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{fn}: {name} must be a numpy.ndarray of bfloat16, got {type(x).__name__}")
    if x.dtype != bfloat16:
        hint = " (convert it with pyneural.kernels.bf16.to_bf16 first)" if x.dtype == np.float32 else ""
        raise TypeError(f"{fn}: {name} must have dtype bfloat16, got {x.dtype} (shape {x.shape}){hint}")
    check_array(fn, name, x, ndim=2, dtypes=(bfloat16.type,))
    return x


def gemm_bf16(a, b, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, out=None, bias=None, relu=False,
              out_dtype=None, isa=None):
    """Return ``relu?(alpha * op(a) @ op(b) + beta * out + bias)`` for bfloat16 ``a`` and ``b``.

    ``a`` and ``b`` are C-contiguous 2-D ``ml_dtypes.bfloat16`` arrays (a transposed operand is passed
    untransposed with its flag set: no copy is made); products are summed in float32. The result is
    float32 or bfloat16 (rounded to nearest even once, at the end): ``out``'s dtype when ``out`` is
    given, else ``out_dtype`` (float32 by default). ``out`` (M x N) receives it; with ``beta == 0``
    its old contents are never read (NaN there does not propagate), otherwise ``beta * out`` is
    added. ``bias`` (float32, shape (N,)) is added to every row, then ``relu`` clamps at zero, both
    fused into the kernel's epilogue. ``isa`` forces a path (``pyneural.kernels.bf16.GEMM_ISAS``);
    None takes the active one (``pyneural.kernels.bf16.gemm_isa()``).
    """
    from pyneural.kernels.bf16 import GEMM_ISAS, bfloat16

    fn = "gemm_bf16"
    _check_bf16_operand("a", a)
    _check_bf16_operand("b", b)
    m, k = _op_shape(a, trans_a)
    kb, n = _op_shape(b, trans_b)
    if k != kb:
        raise ValueError(f"{fn}: inner dimensions differ: op(a) is {m}x{k} (a.shape {a.shape}, "
                         f"trans_a={trans_a}) but op(b) is {kb}x{n} (b.shape {b.shape}, trans_b={trans_b})")
    allowed = (np.dtype(np.float32), bfloat16)
    if out_dtype is not None and np.dtype(out_dtype) not in allowed:
        raise TypeError(f"{fn}: out_dtype must be float32 or bfloat16, got {np.dtype(out_dtype)}")
    if out is None:
        if beta != 0.0:
            raise ValueError(f"{fn}: beta={beta} needs an out array to accumulate into")
        out = np.empty((m, n), dtype=np.float32 if out_dtype is None else out_dtype)
    else:
        if isinstance(out, np.ndarray) and out.dtype not in allowed:
            raise TypeError(f"{fn}: out must have dtype float32 or bfloat16, got {out.dtype} (shape {out.shape})")
        check_array(fn, "out", out, ndim=2, dtypes=(np.float32, bfloat16.type))
        if out.shape != (m, n):
            raise ValueError(f"{fn}: out must have shape {(m, n)}, got {out.shape}")
        if not out.flags.writeable:
            raise ValueError(f"{fn}: out is read-only")
        if out_dtype is not None and np.dtype(out_dtype) != out.dtype:
            raise TypeError(f"{fn}: out has dtype {out.dtype} but out_dtype={np.dtype(out_dtype)}")
    if bias is not None:
        if not isinstance(bias, np.ndarray) or bias.dtype != np.float32:
            got = bias.dtype if isinstance(bias, np.ndarray) else type(bias).__name__
            raise TypeError(f"{fn}: bias must be a float32 numpy.ndarray of shape ({n},), got {got}")
        check_array(fn, "bias", bias, ndim=1, dtypes=(np.float32,))
        if bias.shape != (n,):
            raise ValueError(f"{fn}: bias must have shape ({n},), got {bias.shape}")
    if isa is not None and isa not in GEMM_ISAS:
        raise ValueError(f"{fn}: isa must be one of {GEMM_ISAS} or None, got {isa!r}")
    if np.may_share_memory(out, a) or np.may_share_memory(out, b):
        raise ValueError(f"{fn}: out (shape {out.shape}) overlaps an input; pass a separate array")

    out_bits = out.view(np.uint16) if out.dtype == bfloat16 else out
    _C.gemm_bf16(a.view(np.uint16), b.view(np.uint16), out_bits, bool(trans_a), bool(trans_b), float(alpha),
                 float(beta), bias, bool(relu), isa or "")
    return out
