"""Matrix products: ``matmul`` with PyTorch's rank rules (2-D through the GEMM kernel, vectors,
batched and broadcast operands through ``xp.matmul``; one backward rule for every rank), its
fixed-rank forms ``mm``/``bmm``/``mv``/``dot``/``outer``, and ``linear``, the fused
``x @ W^T + b`` with an optional ReLU epilogue. Zero-size operands skip the kernels (which refuse
them) and give PyTorch's empty or zero results.

Linear runs one GEMM with ``trans_b`` (W stays in its (out, in) layout, never copied) and one
in-place bias+ReLU pass. Its backward is three GEMMs' worth of work at most: the ReLU mask folds
into the incoming gradient first, then dX = dY W, dW = dY^T X and db = sum(dY).
"""
import numpy as np

from pyneural.functions.arithmetic import as_tensor_operand, sum_to
from pyneural import amp as _amp
from pyneural import backend
from pyneural.tensor import Function, Tensor, get_array_module



def gemm(a, b, trans_a=False, trans_b=False):
    """op(a) @ op(b) for 2-D arrays: the backend's matrix product (its GEMM kernel where it takes the dtypes)."""
    return backend.of(a).mm(a, b, trans_a=trans_a, trans_b=trans_b)


class MatMul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        if a.ndim == 2 and b.ndim == 2:
            return gemm(a, b)
        if _amp.is_low_precision(a.dtype) or _amp.is_low_precision(b.dtype):  # fp32 accumulate, as mm
            return get_array_module(a).matmul(a.astype(np.float32), b.astype(np.float32))
        return get_array_module(a).matmul(a, b)

    def backward(self, gy):
        a, b = self.a, self.b
        ga = gb = None
        if a.ndim == 2 and b.ndim == 2:
            if self.needs_input_grad[0]:
                ga = gemm(gy, b, trans_b=True)
            if self.needs_input_grad[1]:
                gb = gemm(a, gy, trans_a=True)
            return ga, gb
        # Vectors become matrices (a row for a, a column for b) so one batched rule covers every
        # rank: gy is reshaped to the matrices' product shape (a 1-D @ 1-D gives a 0-d gy).
        xp = get_array_module(gy)
        a2 = a.reshape((1,) + a.shape) if a.ndim == 1 else a
        b2 = b.reshape(b.shape + (1,)) if b.ndim == 1 else b
        batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
        gy2 = gy.reshape(batch + (a2.shape[-2], b2.shape[-1]))
        if self.needs_input_grad[0]:
            ga = sum_to(xp.matmul(gy2, xp.swapaxes(b2, -1, -2)), a2.shape, a.dtype).reshape(a.shape)
        if self.needs_input_grad[1]:
            gb = sum_to(xp.matmul(xp.swapaxes(a2, -1, -2), gy2), b2.shape, b.dtype).reshape(b.shape)
        return ga, gb


class Linear(Function):
    """y = act(x @ W^T + b) for x of shape (..., in), W (out, in), b (out,) or absent."""

    def __init__(self, relu=False):
        self.relu = relu

    def forward(self, x, w, b=None):
        be = backend.of(x)
        x2 = x if x.ndim == 2 else x.reshape(-1, x.shape[-1])
        if not x2.flags.c_contiguous:
            x2 = backend.xp(x2).ascontiguousarray(x2)
        self.empty = x2.size == 0 or w.size == 0  # the kernels refuse zero-size operands
        if self.empty:
            y = self._forward_empty(x2, w, b)
        else:
            y = be.gemm(x2, w, trans_b=True)
            if b is not None or self.relu:
                be.bias_relu(y, b, relu=self.relu, out=y)
        self.x2, self.w = x2, w
        self.lead = x.shape[:-1]
        if self.relu:
            self.y = y
        return y if x.ndim == 2 else y.reshape(self.lead + (w.shape[0],))

    def _forward_empty(self, x2, w, b):
        # no rows, or no inputs per row (then every output is the bias)
        xp = backend.xp(x2)
        dtype = np.float32 if _amp.is_low_precision(x2.dtype) else x2.dtype
        y = xp.zeros((x2.shape[0], w.shape[0]), dtype=dtype)
        if b is not None:
            y = y + b.astype(dtype)
        return xp.maximum(y, 0) if self.relu else y

    def backward(self, gy):
        w = self.w
        be = backend.of(gy)
        gy2 = gy if gy.ndim == 2 else gy.reshape(-1, w.shape[0])
        if not gy2.flags.c_contiguous:
            gy2 = backend.xp(gy2).ascontiguousarray(gy2)
        if self.relu:
            gy2 = gy2 * (self.y > 0) if self.empty else be.relu_backward(gy2, self.y)
        needs = self.needs_input_grad
        gx = gw = gb = None
        if needs[0]:
            gx = (gy2 @ w).astype(w.dtype) if self.empty else be.gemm(gy2, w)
            if len(self.lead) != 1:
                gx = gx.reshape(self.lead + (w.shape[1],))
        if needs[1]:
            gw = (gy2.T @ self.x2).astype(w.dtype) if self.empty else be.gemm(gy2, self.x2, trans_a=True)
        if len(needs) > 2 and needs[2]:
            gb = gy2.sum(axis=0)
        return gx, gw, gb


def matmul(a, b):
    """PyTorch's matmul: 1-D @ 1-D is a dot product, a 1-D operand acts as a row (left) or a
    column (right) that is dropped from the result, and the batch dims of N-D operands broadcast."""
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        raise TypeError(f"matmul: expected Tensors, got {type(a).__name__} and {type(b).__name__}")
    if not isinstance(a, Tensor):
        a = as_tensor_operand(a, b)
    elif not isinstance(b, Tensor):
        b = as_tensor_operand(b, a)
    sa, sb = a.data.shape, b.data.shape
    if not sa or not sb:
        raise ValueError(f"matmul: both operands need at least 1 dimension, got shapes {sa} and {sb}")
    ka = sa[-1]
    kb = sb[0] if len(sb) == 1 else sb[-2]
    if ka != kb:
        raise ValueError(f"matmul: shapes {sa} and {sb} cannot be multiplied ({ka} != {kb})")
    try:
        np.broadcast_shapes(sa[:-2], sb[:-2])
    except ValueError:
        raise ValueError(f"matmul: the batch dimensions of shapes {sa} and {sb} do not broadcast") from None
    if a.data.dtype != b.data.dtype and not _amp.active:  # autocast rounds both to one 16-bit dtype
        raise TypeError(f"matmul: expected both operands to have the same dtype, got {a.data.dtype} and "
                        f"{b.data.dtype}")
    return MatMul().apply(a, b)


def _check_ndim(fn, t, ndims, what):
    if t.data.ndim not in ndims:
        raise ValueError(f"{fn}: {what} must be {' or '.join(f'{n}-D' for n in ndims)}, got shape {t.data.shape}")


def mm(input, mat2):
    """Matrix product of two 2-D tensors."""
    _check_ndim("mm", input, (2,), "input")
    _check_ndim("mm", mat2, (2,), "mat2")
    return matmul(input, mat2)


def bmm(input, mat2):
    """Batched matrix product of (b, n, m) and (b, m, p) tensors (no broadcasting)."""
    _check_ndim("bmm", input, (3,), "input")
    _check_ndim("bmm", mat2, (3,), "mat2")
    if input.data.shape[0] != mat2.data.shape[0]:
        raise ValueError(f"bmm: batch sizes differ: {input.data.shape} and {mat2.data.shape}")
    return matmul(input, mat2)


def mv(input, vec):
    """Matrix (n, m) times vector (m,)."""
    _check_ndim("mv", input, (2,), "input")
    _check_ndim("mv", vec, (1,), "vec")
    return matmul(input, vec)


def dot(input, other):
    """Dot product of two 1-D tensors of the same length."""
    _check_ndim("dot", input, (1,), "input")
    _check_ndim("dot", other, (1,), "other")
    return matmul(input, other)


def outer(input, vec2):
    """Outer product of two 1-D tensors: (n,) x (m,) -> (n, m)."""
    _check_ndim("outer", input, (1,), "input")
    _check_ndim("outer", vec2, (1,), "vec2")
    return input.reshape(-1, 1) * vec2.reshape(1, -1)


def linear(x, weight, bias=None, activation=None):
    """``x @ weight.T + bias``, optionally followed by ``activation`` ("relu" fuses it in)."""
    shape = x.data.shape
    wshape = weight.data.shape
    if len(wshape) != 2 or not shape or shape[-1] != wshape[1]:
        raise ValueError(f"linear: input of shape {shape} does not match weight of shape {wshape} "
                         f"(expected input (..., {wshape[-1] if wshape else '?'}))")
    if activation is None:
        relu = False
    elif activation == "relu":
        relu = True
    else:
        raise ValueError(f"linear: activation must be None or 'relu', got {activation!r}")
    if x.data.dtype != weight.data.dtype and not _amp.active:  # autocast rounds both to one 16-bit dtype
        raise TypeError(f"linear: input dtype {x.data.dtype} differs from weight dtype {weight.data.dtype}")
    if bias is None:
        return Linear(relu).apply(x, weight)
    return Linear(relu).apply(x, weight, bias)
