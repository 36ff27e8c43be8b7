"""Shape ops: reshape, transpose/permute, squeeze/unsqueeze, expand, indexing, cat and stack.

Forward returns a numpy view wherever numpy gives one; backward undoes the shape change on the
gradient. Indexing scatters its gradient back: plain assignment for basic (slice) indexing,
``add.at`` when an integer array may repeat an index.
"""
import numpy as np

from pyneural.functions.arithmetic import sum_to
from pyneural.tensor import Function, Tensor, get_array_module


def _dim(d, ndim, fn):
    if not -ndim <= d < max(ndim, 1):
        raise IndexError(f"{fn}: dimension {d} out of range for a tensor with {ndim} dimensions")
    return d % ndim if ndim else 0


class Reshape(Function):
    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        self.in_shape = x.shape
        return x.reshape(self.shape)

    def backward(self, gy):
        return (gy.reshape(self.in_shape),)


class Permute(Function):
    def __init__(self, axes):
        self.axes = axes

    def forward(self, x):
        return x.transpose(self.axes)

    def backward(self, gy):
        return (gy.transpose(np.argsort(self.axes)),)


class Expand(Function):
    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        self.in_meta = (x.shape, x.dtype)
        return get_array_module(x).broadcast_to(x, self.shape)

    def backward(self, gy):
        return (sum_to(gy, *self.in_meta),)


class Contiguous(Function):
    def forward(self, x):
        return get_array_module(x).ascontiguousarray(x)

    def backward(self, gy):
        return (gy,)


class GetItem(Function):
    def __init__(self, key, basic):
        self.key = key
        self.basic = basic

    def forward(self, x):
        self.in_meta = (x.shape, x.dtype)
        return x[self.key]

    def backward(self, gy):
        xp = get_array_module(gy)
        gx = xp.zeros(*self.in_meta)
        if self.basic:
            gx[self.key] = gy
        elif xp is np:
            np.add.at(gx, self.key, gy)
        else:
            xp.add.at(gx, self.key, gy)
        return (gx,)


class Concat(Function):
    def __init__(self, axis):
        self.axis = axis

    def forward(self, *xs):
        self.sizes = [x.shape[self.axis] for x in xs]
        return get_array_module(xs[0]).concatenate(xs, axis=self.axis)

    def backward(self, gy):
        grads, start = [], 0
        index = [slice(None)] * gy.ndim
        for size, needed in zip(self.sizes, self.needs_input_grad):
            if needed:
                index[self.axis] = slice(start, start + size)
                grads.append(gy[tuple(index)])
            else:
                grads.append(None)
            start += size
        return tuple(grads)


class Stack(Function):
    def __init__(self, axis):
        self.axis = axis

    def forward(self, *xs):
        return get_array_module(xs[0]).stack(xs, axis=self.axis)

    def backward(self, gy):
        index = [slice(None)] * gy.ndim
        grads = []
        for i, needed in enumerate(self.needs_input_grad):
            index[self.axis] = i
            grads.append(gy[tuple(index)] if needed else None)
        return tuple(grads)


def reshape(x, shape):
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    shape = tuple(int(s) for s in shape)
    if shape == x.data.shape:
        return x
    try:
        return Reshape(shape).apply(x)
    except ValueError:
        raise ValueError(f"reshape: cannot reshape a tensor of shape {x.data.shape} "
                         f"({x.data.size} elements) into {shape}") from None


def permute(x, axes):
    ndim = x.data.ndim
    axes = tuple(_dim(int(a), ndim, "permute") for a in axes)
    if sorted(axes) != list(range(ndim)):
        raise ValueError(f"permute: {axes} is not a permutation of the {ndim} dimensions of shape {x.data.shape}")
    return Permute(axes).apply(x)


def transpose(x, dim0, dim1):
    ndim = x.data.ndim
    axes = list(range(ndim))
    d0, d1 = _dim(dim0, ndim, "transpose"), _dim(dim1, ndim, "transpose")
    axes[d0], axes[d1] = axes[d1], axes[d0]
    return Permute(tuple(axes)).apply(x)


def flatten(x, start_dim=0, end_dim=-1):
    shape = x.data.shape
    if not shape:
        return reshape(x, (1,))
    start, end = _dim(start_dim, len(shape), "flatten"), _dim(end_dim, len(shape), "flatten")
    if start > end:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} for shape {shape}")
    merged = 1
    for n in shape[start:end + 1]:
        merged *= n
    return reshape(x, shape[:start] + (merged,) + shape[end + 1:])


def squeeze(x, dim=None):
    shape = x.data.shape
    if dim is None:
        return reshape(x, tuple(n for n in shape if n != 1))
    dims = (dim,) if isinstance(dim, (int, np.integer)) else dim
    dims = {_dim(int(d), len(shape), "squeeze") for d in dims}
    return reshape(x, tuple(n for i, n in enumerate(shape) if not (i in dims and n == 1)))


def unsqueeze(x, dim):
    shape = x.data.shape
    d = _dim(dim, len(shape) + 1, "unsqueeze")
    return reshape(x, shape[:d] + (1,) + shape[d:])


def expand(x, sizes):
    sizes = tuple(int(s) for s in sizes)
    shape = x.data.shape
    if len(sizes) < len(shape):
        raise ValueError(f"expand: target {sizes} has fewer dimensions than the tensor's shape {shape}")
    lead = len(sizes) - len(shape)
    target = tuple(shape[i - lead] if s == -1 and i >= lead else s for i, s in enumerate(sizes))
    for i, n in enumerate(shape):
        if n != 1 and n != target[i + lead]:
            raise ValueError(f"expand: cannot expand shape {shape} to {sizes}")
    return Expand(target).apply(x)


def contiguous(x):
    if x.data.flags.c_contiguous:
        return x
    return Contiguous().apply(x)


def index_key(key):
    """Tensors inside an index become their arrays."""
    if isinstance(key, Tensor):
        return key.data
    if isinstance(key, tuple):
        return tuple(k.data if isinstance(k, Tensor) else k for k in key)
    return key


def _is_basic(key):
    parts = key if isinstance(key, tuple) else (key,)
    for k in parts:
        if not (k is None or k is Ellipsis or isinstance(k, (slice, int, np.integer))):
            return False
    return True


def getitem(x, key):
    key = index_key(key)
    if isinstance(key, list):
        key = np.asarray(key)
    return GetItem(key, _is_basic(key)).apply(x)


def cat(tensors, dim=0):
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: expected a non-empty sequence of tensors")
    first = tensors[0].data
    axis = _dim(dim, first.ndim, "cat")
    for i, t in enumerate(tensors):
        s = t.data.shape
        if len(s) != first.ndim or s[:axis] + s[axis + 1:] != first.shape[:axis] + first.shape[axis + 1:]:
            raise ValueError(f"cat: tensor {i} has shape {s}, incompatible with tensor 0's {first.shape} "
                             f"for concatenation along dim {dim}")
    return Concat(axis).apply(*tensors)


def stack(tensors, dim=0):
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack: expected a non-empty sequence of tensors")
    first = tensors[0].data
    for i, t in enumerate(tensors):
        if t.data.shape != first.shape:
            raise ValueError(f"stack: tensor {i} has shape {t.data.shape}, tensor 0 has {first.shape}; "
                             f"all must match")
    axis = _dim(dim, first.ndim + 1, "stack")
    return Stack(axis).apply(*tensors)
