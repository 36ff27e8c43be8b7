"""Indexing ops with PyTorch's semantics: gather, scatter, scatter_add, index_select, masked_fill.

``gather``/``scatter`` address one dimension with an int64 ``index`` tensor of the input's rank;
in every other dimension the index may be shorter than the input (PyTorch's rule), and then only
that leading block takes part. Their backwards swap roles: gather's is a scatter-add (an index
may repeat, so contributions must add up), scatter's is a gather.

The scatter-add runs as one ``bincount`` over raveled positions, so it is the same code on numpy
and on device arrays (no ``ufunc.at``).
"""
import numpy as np

from pyneural.functions.arithmetic import sum_to
from pyneural.tensor import Function, Tensor, get_array_module, wrap


def add_at(shape, dtype, positions, values):
    """zeros(shape) plus ``values`` added at ``positions`` (a tuple of broadcastable integer
    arrays, one per dimension); repeated positions accumulate."""
    xp = get_array_module(values)
    size = int(np.prod(shape, dtype=np.int64))
    if size == 0 or values.size == 0:
        return xp.zeros(shape, dtype=dtype)
    positions = xp.broadcast_arrays(*positions, values)
    flat = xp.ravel_multi_index(tuple(p.ravel() for p in positions[:-1]), shape)
    summed = xp.bincount(flat, weights=positions[-1].ravel(), minlength=size)
    return summed.reshape(shape).astype(dtype, copy=False)


def _positions(index, axis):
    """The full position tuple of ``index`` along ``axis``: aranges in the other dimensions."""
    xp = get_array_module(index)
    out = []
    for d, n in enumerate(index.shape):
        if d == axis:
            out.append(index)
        else:
            shape = [1] * index.ndim
            shape[d] = n
            out.append(xp.arange(n).reshape(shape))
    return tuple(out)


def _leading_block(shape, index_shape, axis=None):
    """Slices selecting the first ``index_shape[d]`` entries of every dim but ``axis`` (all dims
    when ``axis`` is None: the part of ``src`` a scatter reads)."""
    return tuple(slice(None) if d == axis else slice(0, index_shape[d]) for d in range(len(shape)))


class Gather(Function):
    def __init__(self, axis, index):
        self.axis, self.index = axis, index

    def forward(self, x):
        self.in_meta = (x.shape, x.dtype)
        block = x[_leading_block(x.shape, self.index.shape, self.axis)]
        return get_array_module(x).take_along_axis(block, self.index, axis=self.axis)

    def backward(self, gy):
        return (add_at(*self.in_meta, _positions(self.index, self.axis), gy),)


class Scatter(Function):
    """out = input with out[index[i][j]][j] = src[i][j] (dim 0); ``add`` accumulates instead."""

    def __init__(self, axis, index, add, scalar=None):
        self.axis, self.index, self.add, self.scalar = axis, index, add, scalar

    def forward(self, x, src=None):
        positions = _positions(self.index, self.axis)
        if src is not None:
            self.src_meta = (src.shape, src.dtype)
            values = src[_leading_block(src.shape, self.index.shape)]
        else:
            values = get_array_module(x).full(self.index.shape, self.scalar, dtype=x.dtype)
        if self.add:
            return x + add_at(x.shape, x.dtype, positions, values)
        out = x.copy()
        out[positions] = values
        return out

    def backward(self, gy):
        positions = _positions(self.index, self.axis)
        gx = gsrc = None
        if self.needs_input_grad[0]:
            gx = gy
            if not self.add:
                gx = gy.copy()
                gx[positions] = 0
        if len(self.needs_input_grad) > 1 and self.needs_input_grad[1]:
            gsrc = get_array_module(gy).zeros(*self.src_meta)
            gsrc[_leading_block(gsrc.shape, self.index.shape)] = gy[positions]
        return gx, gsrc


class IndexSelect(Function):
    def __init__(self, axis, index):
        self.axis, self.index = axis, index

    def forward(self, x):
        self.in_meta = (x.shape, x.dtype)
        return get_array_module(x).take(x, self.index, axis=self.axis)

    def backward(self, gy):
        xp = get_array_module(gy)
        shape = [1] * gy.ndim
        shape[self.axis] = self.index.size
        index = xp.broadcast_to(self.index.reshape(shape), gy.shape)
        return (add_at(*self.in_meta, _positions(index, self.axis), gy),)


class MaskedFill(Function):
    """where(mask, value, x), broadcasting; ``value`` a 0-d tensor."""

    def __init__(self, mask):
        self.mask = mask

    def forward(self, x, value):
        self.x_meta, self.value_meta = (x.shape, x.dtype), (value.shape, value.dtype)
        return get_array_module(x).where(self.mask, value.astype(x.dtype), x)

    def backward(self, gy):
        gx = sum_to(gy * ~self.mask, *self.x_meta) if self.needs_input_grad[0] else None
        gv = sum_to((gy * self.mask).sum(), *self.value_meta) if self.needs_input_grad[1] else None
        return gx, gv


def _axis(dim, ndim, fn):
    if not -max(ndim, 1) <= dim < max(ndim, 1):
        raise IndexError(f"{fn}: dimension {dim} out of range for a tensor with {ndim} dimensions")
    return dim % ndim if ndim else 0


def _index_array(fn, index, like):
    arr = index.data if isinstance(index, Tensor) else get_array_module(like.data).asarray(index)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{fn}: index must be an integer tensor, got dtype {arr.dtype}")
    from pyneural import backend
    backend.check_same_device(fn, [like.data, arr])
    return arr


def _check_bounds(fn, index, size, axis):
    """PyTorch's rule for these ops: 0 <= index < size (no negative indices)."""
    if index.size:
        low, high = int(index.min()), int(index.max())
        if low < 0 or high >= size:
            bad = low if low < 0 else high
            raise IndexError(f"{fn}: index {bad} is out of bounds for dimension {axis} with size {size}")


def _check_gather_shapes(fn, x_shape, index, axis, src_shape=None):
    if index.ndim != len(x_shape):
        raise RuntimeError(f"{fn}: index has {index.ndim} dimensions, the input has {len(x_shape)} "
                           f"(shape {x_shape}); they must match")
    for d, n in enumerate(index.shape):
        if d != axis and n > x_shape[d]:
            raise RuntimeError(f"{fn}: index of shape {index.shape} is larger than the input of shape {x_shape} "
                               f"in dimension {d} (only dimension {axis} may differ)")
        if src_shape is not None and n > src_shape[d]:
            raise RuntimeError(f"{fn}: index of shape {index.shape} is larger than src of shape {src_shape} "
                               f"in dimension {d}")


def gather(input, dim, index):
    """out[i][j] = input[index[i][j]][j] for dim 0 (and likewise for other dims)."""
    axis = _axis(dim, input.data.ndim, "gather")
    idx = _index_array("gather", index, input)
    if input.data.ndim == 0:  # as a 1-element vector
        _check_bounds("gather", idx, 1, 0)
        return Gather(0, idx.reshape(-1)).apply(input.reshape(1)).reshape(idx.shape)
    _check_gather_shapes("gather", input.data.shape, idx, axis)
    _check_bounds("gather", idx, input.data.shape[axis], axis)
    return Gather(axis, idx).apply(input)


def _scatter(fn, input, dim, index, src, value, add):
    axis = _axis(dim, input.data.ndim, fn)
    idx = _index_array(fn, index, input)
    if (src is None) == (value is None):
        raise TypeError(f"{fn}: pass exactly one of src (a tensor) and value (a number)")
    src_shape = src.data.shape if isinstance(src, Tensor) else None
    _check_gather_shapes(fn, input.data.shape, idx, axis, src_shape)
    _check_bounds(fn, idx, input.data.shape[axis] if input.data.ndim else 1, axis)
    if isinstance(src, Tensor):
        if src.data.dtype != input.data.dtype:
            raise TypeError(f"{fn}: src dtype {src.data.dtype} differs from the input's {input.data.dtype}")
        return Scatter(axis, idx, add).apply(input, src)
    return Scatter(axis, idx, add, scalar=value).apply(input)


def scatter(input, dim, index, src=None, value=None, reduce=None):
    """A copy of ``input`` with the entries ``index`` names along ``dim`` replaced by ``src`` (a
    tensor) or ``value`` (a number); ``reduce="add"`` adds them instead (``scatter_add``)."""
    if src is not None and not isinstance(src, Tensor):
        src, value = None, src  # scatter(input, dim, index, 1.0): the value overload
    if reduce not in (None, "add"):
        raise ValueError(f"scatter: reduce must be None or 'add', got {reduce!r}")
    return _scatter("scatter", input, dim, index, src, value, reduce == "add")


def scatter_add(input, dim, index, src):
    """``input`` plus ``src`` added at the entries ``index`` names (repeated entries add up)."""
    if not isinstance(src, Tensor):
        raise TypeError(f"scatter_add: src must be a Tensor, got {type(src).__name__}")
    return _scatter("scatter_add", input, dim, index, src, None, True)


def index_select(input, dim, index):
    """The entries of ``input`` along ``dim`` at the positions in the 1-D ``index``."""
    axis = _axis(dim, input.data.ndim, "index_select")
    idx = _index_array("index_select", index, input)
    if idx.ndim > 1:
        raise RuntimeError(f"index_select: index must be 0-d or 1-d, got shape {idx.shape}")
    idx = idx.reshape(-1)
    size = input.data.shape[axis] if input.data.ndim else 1
    _check_bounds("index_select", idx, size, axis)
    x = input if input.data.ndim else input.reshape(1)
    return IndexSelect(axis, idx).apply(x)


def one_hot(tensor, num_classes=-1):
    """int64 ``(*shape, num_classes)``: 1 at each entry's class, 0 elsewhere (``num_classes=-1``:
    one more than the largest entry). Not differentiable, as in PyTorch."""
    idx = _index_array("one_hot", tensor, tensor)
    if idx.dtype != np.int64:
        raise RuntimeError(f"one_hot is only applicable to index tensor of type int64, got {idx.dtype}")
    xp = get_array_module(idx)
    if num_classes == -1:
        if idx.size == 0:
            raise RuntimeError("one_hot: can not infer the total number of classes from an empty tensor")
        num_classes = int(idx.max()) + 1
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= num_classes):
        raise RuntimeError(f"one_hot: class values must be in [0, {num_classes}), got values from "
                           f"{int(idx.min())} to {int(idx.max())}")
    return wrap((idx[..., None] == xp.arange(num_classes)).astype(np.int64))


def masked_fill(input, mask, value):
    """``value`` where ``mask`` (bool, broadcasting) is True, ``input`` elsewhere."""
    xp = get_array_module(input.data)
    mask_arr = mask.data if isinstance(mask, Tensor) else xp.asarray(mask)
    if mask_arr.dtype != np.bool_:
        raise TypeError(f"masked_fill: mask must be a bool tensor, got dtype {mask_arr.dtype}")
    try:
        np.broadcast_shapes(input.data.shape, mask_arr.shape)
    except ValueError:
        raise ValueError(f"masked_fill: mask of shape {mask_arr.shape} does not broadcast with the input's "
                         f"{input.data.shape}") from None
    if isinstance(value, Tensor):
        if value.data.ndim != 0:
            raise RuntimeError(f"masked_fill only supports a 0-dimensional value tensor, got shape "
                               f"{value.data.shape}")
    else:
        value = wrap(xp.asarray(value, dtype=input.data.dtype))
    from pyneural import backend
    backend.check_same_device("masked_fill", [input.data, mask_arr])
    return MaskedFill(mask_arr).apply(input, value)
