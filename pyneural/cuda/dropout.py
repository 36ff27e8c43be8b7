"""Dropout of CuPy float32 arrays (csrc/cuda/dropout.cu) and its host twin.

The mask is a pure function of ``(seed, offset, element index)`` (Philox4x32-10, see the kernel's
header): the backward recomputes it from the same ``(p, seed, offset)`` instead of storing it, and
:func:`keep_mask` computes the very same mask with numpy, bit for bit (the reference of the tests,
and a way for CPU code to reproduce a GPU run)."""
import numbers

import numpy as np

from pyneural.cuda import _backend
from pyneural.kernels._checks import check_device_array as check_array, check_device_output as check_output

_FILE = "dropout.cu"
THREADS = 256
PHILOX_M = (0xD2511F53, 0xCD9E8D57)
PHILOX_W = (0x9E3779B9, 0xBB67AE85)
_U32 = 0xFFFFFFFF


def _check_p(fn, p):
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"{fn}: p must be a probability in [0, 1], got {p!r}")
    return float(p)


def _check_u64(fn, name, v):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not 0 <= int(v) < 2**64:
        raise ValueError(f"{fn}: {name} must be an int in [0, 2**64), got {v!r}")
    return int(v)


def threshold(p):
    """Element i is kept iff its Philox word is below this: round((1 - p) * 2^32), in [0, 2^32]."""
    return int(round((1.0 - p) * 2.0**32))


def philox4x32_10(counter, key):
    """Philox4x32-10 with numpy: ``counter`` (4, m) and ``key`` (2,) of uint32 -> (4, m) uint32."""
    c = [np.asarray(w, dtype=np.uint64) for w in counter]
    k0, k1 = (np.uint64(int(k)) for k in key)
    m0, m1 = np.uint64(PHILOX_M[0]), np.uint64(PHILOX_M[1])
    mask, s32 = np.uint64(_U32), np.uint64(32)
    for r in range(10):
        if r:
            k0, k1 = (k0 + np.uint64(PHILOX_W[0])) & mask, (k1 + np.uint64(PHILOX_W[1])) & mask
        p0, p1 = m0 * c[0], m1 * c[2]  # 32 x 32 -> 64 bits: exact in uint64
        c = [(p1 >> s32) ^ c[1] ^ k0, p1 & mask, (p0 >> s32) ^ c[3] ^ k1, p0 & mask]
    return np.stack(c).astype(np.uint32)


def keep_mask(shape, p, seed, offset=0):
    """The boolean mask (True = kept) the kernel applies to an array of ``shape``: numpy, on the host."""
    fn = "cuda.dropout.keep_mask"
    p, seed, offset = _check_p(fn, p), _check_u64(fn, "seed", seed), _check_u64(fn, "offset", offset)
    n = int(np.prod(shape, dtype=np.int64))
    q = np.arange(-(-n // 4), dtype=np.uint64)
    counter = (q & np.uint64(_U32), q >> np.uint64(32), np.full_like(q, offset & _U32),
               np.full_like(q, offset >> 32))
    words = philox4x32_10(counter, (seed & _U32, seed >> 32)).T.reshape(-1)[:n]  # element i: word i % 4 of q = i / 4
    return (words.astype(np.uint64) < threshold(p)).reshape(shape)


def _apply(fn, name, a, p, seed, offset, out):
    check_array(fn, name, a, allow_empty=True)
    p, seed, offset = _check_p(fn, p), _check_u64(fn, "seed", seed), _check_u64(fn, "offset", offset)
    out = check_output(fn, "out", out, a.shape)
    if a.size:
        scale = np.float32(0.0 if p == 1.0 else 1.0 / (1.0 - p))
        _backend.launch(_FILE, "pn_dropout", _backend.elementwise_grid(-(-a.size // 4), THREADS), (THREADS,),
                        (a, out, np.int64(a.size), np.uint64(seed), np.uint64(offset), np.uint64(threshold(p)),
                         scale))
    return out


def dropout_forward(x, p, seed, offset=0, out=None):
    """``x * mask / (1 - p)`` (``p = 1``: ``x * 0``) with the mask of ``(p, seed, offset)``; ``out``
    may be ``x``. Keep ``(p, seed, offset)`` for the backward; give each call its own ``offset``."""
    return _apply("cuda.dropout_forward", "x", x, p, seed, offset, out)


def dropout_backward(dy, p, seed, offset=0, out=None):
    """``dy * mask / (1 - p)``: the mask recomputed from the forward's ``(p, seed, offset)``."""
    return _apply("cuda.dropout_backward", "dy", dy, p, seed, offset, out)
