"""Shape ops: reshape, transpose/permute, squeeze/unsqueeze, expand, repeat, flip, roll, indexing,
narrow, split/chunk, cat and stack; ``unfold`` (sliding windows) and ``pixel_shuffle`` /
``pixel_unshuffle``, composed from them.

Forward returns a numpy view wherever numpy gives one; backward undoes the shape change on the
gradient. Indexing scatters its gradient back: plain assignment for basic (slice) indexing,
``add.at`` when an integer array may repeat an index.
"""
import weakref

import numpy as np

from pyneural.functions.arithmetic import sum_to
from pyneural.tensor import Function, Tensor, get_array_module


def _dim(d, ndim, fn):
    if not -ndim <= d < max(ndim, 1):
        raise IndexError(f"{fn}: dimension {d} out of range for a tensor with {ndim} dimensions")
    return d % ndim if ndim else 0


class Reshape(Function):
    is_view = True  # an in-place op on the result would write into the input's memory

    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        self.in_shape = x.shape
        return x.reshape(self.shape)

    def backward(self, gy):
        return (gy.reshape(self.in_shape),)


class Permute(Function):
    is_view = True

    def __init__(self, axes):
        self.axes = axes

    def forward(self, x):
        return x.transpose(self.axes)

    def backward(self, gy):
        return (gy.transpose(np.argsort(self.axes)),)


class Expand(Function):
    is_view = True

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
    """x[key]. A basic key (ints, slices, None, ...) gives a view of x: the node then knows its
    base tensor (``self.base``) so that an in-place op on the view can write through to it."""

    def __init__(self, key, basic):
        self.key = key
        self.basic = basic
        self.is_view = basic

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
        else:  # no ufunc.at on every device: sum by flat position instead
            size = gx.size
            flat = xp.arange(size).reshape(gx.shape)[self.key]
            gx = xp.bincount(flat.ravel(), weights=gy.ravel(), minlength=size).reshape(gx.shape).astype(gx.dtype)
        return (gx,)


class Repeat(Function):
    """``np.tile`` with PyTorch's rule that ``repeats`` covers every dimension (new ones lead)."""

    def __init__(self, repeats):
        self.repeats = repeats

    def forward(self, x):
        self.in_shape = x.shape
        padded = (1,) * (len(self.repeats) - x.ndim) + x.shape
        return get_array_module(x).tile(x.reshape(padded), self.repeats)

    def backward(self, gy):
        padded = (1,) * (len(self.repeats) - len(self.in_shape)) + self.in_shape
        split = []  # (repeat, size) pairs: summing the repeat axes undoes the tiling
        for r, n in zip(self.repeats, padded):
            split += [r, n]
        g = gy.reshape(split).sum(axis=tuple(range(0, len(split), 2)))
        return (g.reshape(self.in_shape),)


class Flip(Function):
    is_view = True

    def __init__(self, axes):
        self.axes = axes

    def forward(self, x):
        return get_array_module(x).flip(x, axis=self.axes)

    def backward(self, gy):
        return (get_array_module(gy).flip(gy, axis=self.axes),)


class Roll(Function):
    def __init__(self, shifts, axes):
        self.shifts, self.axes = shifts, axes

    def forward(self, x):
        return get_array_module(x).roll(x, self.shifts, axis=self.axes)

    def backward(self, gy):
        back = tuple(-s for s in self.shifts) if isinstance(self.shifts, tuple) else -self.shifts
        return (get_array_module(gy).roll(gy, back, axis=self.axes),)


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
    if any(s == -1 for s in sizes[:lead]) or any(s < -1 for s in sizes):
        raise ValueError(f"expand: sizes {sizes} for shape {shape}: -1 keeps an existing dimension and is not "
                         f"allowed for a new leading one, other sizes must be >= 0")
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


def _list_index(k):
    # [] is an empty list of indices (numpy would make it a float array)
    return np.asarray(k, dtype=np.int64) if isinstance(k, list) and not k else np.asarray(k)


def setitem_key(key, like):
    """An index as the array ``like`` takes it: Tensors become their arrays, lists integer
    arrays, and index arrays move to ``like``'s device."""
    key = index_key(key)
    parts = key if isinstance(key, tuple) else (key,)
    parts = tuple(_list_index(k) if isinstance(k, list) else k for k in parts)
    if type(like) is not np.ndarray:
        xp = get_array_module(like)
        parts = tuple(xp.asarray(k) if type(k) is np.ndarray else k for k in parts)
    return parts if isinstance(key, tuple) else parts[0]


def getitem(x, key, user_key=None):
    """x[key]; ``user_key`` is the key as the caller wrote it (``Tensor.__setitem__`` recognises
    ``x[k] = x[k]``, the second half of ``x[k] += v``, by it)."""
    original = key
    key = setitem_key(key, x.data)
    basic = _is_basic(key)
    out = GetItem(key, basic).apply(x)
    if basic and out._creator is not None:
        # For in-place ops on the view (functions/inplace.py): a weak reference, so that the view's
        # node never keeps a large base alive, except to a base that is itself an index view (x[1][2:]),
        # which nothing else may hold.
        x_is_view = x._creator is not None and "base" in x._creator.__dict__
        out._creator.base = x if x_is_view else weakref.ref(x)
        out._creator.user_key = original if user_key is None else user_key
    return out


def narrow(x, dim, start, length):
    """``x`` restricted to ``start .. start + length`` along ``dim`` (a view, as PyTorch's)."""
    axis = _dim(dim, x.data.ndim, "narrow")
    size = x.data.shape[axis]
    start = int(start) + size if int(start) < 0 else int(start)
    if not 0 <= start <= size or length < 0 or start + length > size:
        raise IndexError(f"narrow: start ({start}) + length ({length}) exceeds dimension size ({size}) of dim {dim}")
    return getitem(x, (slice(None),) * axis + (slice(start, start + int(length)),))


def unfold(x, dimension, size, step):
    """Every ``size``-long window along ``dimension``, ``step`` apart: that dimension becomes the
    window count and a last dimension of ``size`` is added (PyTorch's ``Tensor.unfold``). Composed
    of a gather (``index_select``) and a reshape, so it is a copy, not a view."""
    from pyneural.functions.indexing import index_select
    axis = _dim(dimension, x.data.ndim, "unfold")
    n = x.data.shape[axis] if x.data.ndim else 1
    if size < 0 or size > n:
        raise RuntimeError(f"unfold: maximum size for tensor at dimension {axis} is {n} but size is {size}")
    if step <= 0:
        raise RuntimeError(f"unfold: step is {step} but must be > 0")
    windows = (n - size) // step + 1
    positions = (np.arange(windows)[:, None] * step + np.arange(size)[None, :]).reshape(-1)
    xp = get_array_module(x.data)
    picked = index_select(x if x.data.ndim else reshape(x, (1,)), axis, Tensor(xp.asarray(positions)))
    shape = x.data.shape[:axis] + (windows, size) + x.data.shape[axis + 1:]
    order = [d for d in range(len(shape)) if d != axis + 1] + [axis + 1]
    return permute(reshape(picked, shape), tuple(order))


def _check_shuffle(fn, x, factor):
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise ValueError(f"{fn}: the factor must be a positive int, got {factor!r}")
    if x.data.ndim < 3:
        raise RuntimeError(f"{fn}: expected an input of at least 3 dimensions (..., C, H, W), got shape "
                           f"{tuple(x.data.shape)}")


def pixel_shuffle(x, upscale_factor):
    """(..., C r^2, H, W) -> (..., C, H r, W r): each group of r^2 channels becomes an r x r block."""
    r = upscale_factor
    _check_shuffle("pixel_shuffle", x, r)
    *lead, c, h, w = x.data.shape
    if c % (r * r):
        raise RuntimeError(f"pixel_shuffle expects its input's 'channel' dimension to be divisible by the square "
                           f"of upscale_factor, but input.size(-3)={c} is not divisible by {r * r}")
    k = len(lead)
    y = reshape(x, (*lead, c // (r * r), r, r, h, w))
    y = permute(y, tuple(range(k + 1)) + (k + 3, k + 1, k + 4, k + 2))
    return reshape(y, (*lead, c // (r * r), h * r, w * r))


def pixel_unshuffle(x, downscale_factor):
    """The inverse of ``pixel_shuffle``: (..., C, H r, W r) -> (..., C r^2, H, W)."""
    r = downscale_factor
    _check_shuffle("pixel_unshuffle", x, r)
    *lead, c, h, w = x.data.shape
    if h % r or w % r:
        raise RuntimeError(f"pixel_unshuffle expects height ({h}) and width ({w}) to be divisible by "
                           f"downscale_factor ({r})")
    k = len(lead)
    y = reshape(x, (*lead, c, h // r, r, w // r, r))
    y = permute(y, tuple(range(k + 1)) + (k + 2, k + 4, k + 1, k + 3))
    return reshape(y, (*lead, c * r * r, h // r, w // r))


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


def _ints(values, fn, what):
    if isinstance(values, (int, np.integer)):
        return (int(values),)
    values = tuple(values)
    if not all(isinstance(v, (int, np.integer)) for v in values):
        raise TypeError(f"{fn}: {what} must be integers, got {values}")
    return tuple(int(v) for v in values)


def repeat(x, sizes):
    """Tile ``x`` ``sizes[i]`` times along dim i; ``sizes`` may add leading dimensions."""
    repeats = _ints(sizes, "repeat", "repeats")
    if len(repeats) < x.data.ndim:
        raise ValueError(f"repeat: {len(repeats)} repeats given for a tensor of shape {x.data.shape}; "
                         f"the number of repeats can't be smaller than the number of dimensions")
    if any(r < 0 for r in repeats):
        raise ValueError(f"repeat: repeats {repeats} must be >= 0")
    return Repeat(repeats).apply(x)


def flip(x, dims):
    ndim = x.data.ndim
    axes = tuple(_dim(d, ndim, "flip") for d in _ints(dims, "flip", "dims"))
    if len(set(axes)) != len(axes):
        raise ValueError(f"flip: dims {dims} name a dimension twice")
    return Flip(axes).apply(x)


def roll(x, shifts, dims=None):
    """Shift elements circularly along ``dims`` (the flattened tensor when dims is None)."""
    shifts = _ints(shifts, "roll", "shifts")
    if dims is None:
        if len(shifts) != 1:
            raise ValueError(f"roll: {len(shifts)} shifts need as many dims, got dims=None")
        return Roll(shifts[0], None).apply(x)
    dims = _ints(dims, "roll", "dims")
    if len(dims) != len(shifts):
        raise ValueError(f"roll: shifts {shifts} and dims {dims} must have the same length")
    axes = tuple(_dim(d, x.data.ndim, "roll") for d in dims)
    return Roll(shifts, axes).apply(x)


def split(x, split_size_or_sections, dim=0):
    """Pieces of ``x`` along ``dim`` (views): every piece ``split_size`` long but the last, or
    the lengths listed in ``sections`` (they must add up to the dimension)."""
    axis = _dim(dim, x.data.ndim, "split")
    n = x.data.shape[axis]
    if isinstance(split_size_or_sections, (int, np.integer)):
        size = int(split_size_or_sections)
        if size < 0 or (size == 0 and n != 0):
            raise ValueError(f"split: split_size must be positive for a dimension of length {n}, got {size}")
        sizes = [min(size, n - start) for start in range(0, n, size)] if n else [0]
    else:
        sizes = list(_ints(split_size_or_sections, "split", "sections"))
        if sum(sizes) != n or any(s < 0 for s in sizes):
            raise ValueError(f"split: sections {sizes} must be >= 0 and sum to the length {n} of dim {dim} "
                             f"of shape {x.data.shape}")
    pieces, start = [], 0
    for size in sizes:
        key = (slice(None),) * axis + (slice(start, start + size),)
        pieces.append(getitem(x, key))
        start += size
    return tuple(pieces)


def chunk(x, chunks, dim=0):
    """``chunks`` pieces as equal as possible, each ceil(n / chunks) long (possibly fewer pieces)."""
    if not isinstance(chunks, (int, np.integer)) or chunks <= 0:
        raise ValueError(f"chunk: chunks must be a positive integer, got {chunks!r}")
    n = x.data.shape[_dim(dim, x.data.ndim, "chunk")]
    return split(x, max(-(-n // int(chunks)), 1), dim) if n else split(x, [0] * int(chunks), dim)
