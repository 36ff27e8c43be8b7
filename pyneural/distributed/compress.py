"""bf16 wire compression: float32 gradients travel as bfloat16, halving the bytes on the wire.

bfloat16 is the top half of a float32 (sign, 8 exponent bits, 7 mantissa bits): same range, so
gradients never overflow or flush to zero the way float16 can, at ~3 significant digits.
Encoding rounds to nearest-even by adding ``0x7FFF + (bit 16)`` before truncating; NaNs are
pinned to a quiet NaN because the rounding carry could otherwise turn a NaN into infinity.

MPI has no bfloat16 sum, so the reduction is a user-defined ``MPI.Op``: decode both operands to
float32, add, round back. Every partial sum is rounded to bf16 on each hop, so with N ranks the
result carries up to ~log2(N) roundings (ring or recursive doubling), as with Horovod's fp16
compression. The averaging (divide by N) happens after decoding, in float32.

The functions take numpy or CuPy arrays (``xp`` follows the input), but the MPI op runs on host
memory only: a compressed bucket is always staged through the host (see transport.py).
"""
import numpy as np

from ._mpi import import_mpi

_QUIET_NAN = 0x7FC0
_sum_op = None


def _xp(a):
    if type(a) is np.ndarray:
        return np
    from ..tensor import get_array_module
    return get_array_module(a)


def encode_bf16(x, out):
    """Round float32 ``x`` to bfloat16 bit patterns written into uint16 ``out`` (same size)."""
    xp = _xp(x)
    bits = x.reshape(-1).view(xp.uint32)
    rounded = bits + ((bits >> 16) & 1) + 0x7FFF
    rounded >>= 16
    out[...] = rounded.astype(xp.uint16)
    nan = x.reshape(-1) != x.reshape(-1)
    if nan.any():
        out[nan] = _QUIET_NAN
    return out


def decode_bf16(packed, out):
    """Widen uint16 bfloat16 bit patterns into float32 ``out`` (exact)."""
    xp = _xp(packed)
    wide = out.reshape(-1).view(xp.uint32)
    wide[...] = packed
    wide <<= 16
    return out


def _sum_bf16(inbuf, inoutbuf, datatype):
    """MPI user op: inout = bf16(float32(in) + float32(inout))."""
    a = np.frombuffer(inbuf, dtype=np.uint16)
    b = np.frombuffer(inoutbuf, dtype=np.uint16)
    total = decode_bf16(a, np.empty(a.size, dtype=np.float32))
    total += decode_bf16(b, np.empty(b.size, dtype=np.float32))
    encode_bf16(total, b)


def bf16_sum_op():
    """The MPI op that sums bfloat16 buffers (sent as MPI.UINT16_T); created once per process."""
    global _sum_op
    if _sum_op is None:
        _sum_op = import_mpi().Op.Create(_sum_bf16, commute=True)
    return _sum_op
