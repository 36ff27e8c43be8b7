"""In-place operations (``add_``, ``mul_``, ``clamp_``, ``copy_``, ``x[k] = v`` ...) with PyTorch's rules.

* While grad mode is on, a leaf that requires grad cannot be written in place (its gradient would
  refer to a value that no longer exists); under ``no_grad`` (an optimizer step) it can.
* An in-place op on a tensor in the graph is a node of its own: the tensor's history is *rebased*
  onto it, so later uses see the new value and backward runs through the op, as in PyTorch.
* Every write bumps the version of the memory it writes (``tensor.bump_version``). A node that
  saved that memory for its backward then fails at backward with a clear message, instead of
  computing a gradient from overwritten values. So each Function here keeps copies of what it
  needs from the target, never the target's own memory.
* Views: an in-place op on a basic-index view (``x[0]``, ``x[:, 1:3]``, a ``split``/``chunk``
  piece) that is in the graph writes through to its base: the op runs on a copy of the view, the
  copy is assigned into the base (rebasing the base's history) and the view is re-derived from
  the new base. Other views in the graph (reshape, permute, expand, flip) refuse with a clear
  error. Not tracked, as for writes through ``.data``: a view taken *before* an in-place write to
  its base and consumed afterwards keeps its old history.
"""
import numbers
import weakref

import numpy as np

from pyneural.functions.arithmetic import sum_to
from pyneural.tensor import Function, Tensor, bump_version, get_array_module, is_grad_enabled, wrap


def _check_result_fits(what, target, result_dtype, other_shape=None):
    """PyTorch's two checks on an in-place result: its dtype must cast to the target's within
    the same kind, and it must broadcast to the target's shape without growing it."""
    if not np.can_cast(result_dtype, target.dtype, casting="same_kind"):
        raise RuntimeError(f"{what}: result type {result_dtype} can't be cast to the desired output type "
                           f"{target.dtype} of the tensor written in place")
    if other_shape is not None and other_shape != target.shape:
        try:
            shape = np.broadcast_shapes(target.shape, other_shape)
        except ValueError:
            shape = None
        if shape != target.shape:
            raise RuntimeError(f"{what}: output with shape {target.shape} doesn't match the broadcast shape of "
                               f"{target.shape} and {other_shape}")


def _operand(what, target, other, true_division=False):
    """``other`` as a Tensor: a Python number becomes a 0-d constant of the target's dtype (a float
    into an integer tensor is refused, as PyTorch does; so is true division of integers)."""
    xp = get_array_module(target.data)
    number = isinstance(other, numbers.Number)
    if not number and not isinstance(other, Tensor):
        other = wrap(xp.asarray(other))
    result = np.result_type(target.data.dtype, other if number else other.data.dtype)
    if true_division and result.kind in "biu":
        result = np.dtype(np.float32)
    _check_result_fits(what, target.data, result, None if number else other.data.shape)
    return wrap(xp.asarray(other, dtype=target.data.dtype)) if number else other


class AddInplace(Function):
    """a += alpha * b"""

    def __init__(self, alpha):
        self.alpha = alpha

    def forward(self, a, b):
        self.b_meta = (b.shape, b.dtype)
        xp = get_array_module(a)
        xp.add(a, b if self.alpha == 1 else b * self.alpha, out=a)
        return a

    def backward(self, gy):
        gb = sum_to(gy * self.alpha if self.alpha != 1 else gy, *self.b_meta) if self.needs_input_grad[1] else None
        return gy, gb


def _needs(fn):
    """Which inputs want gradients (nothing is recorded outside the graph: no flags are set)."""
    return getattr(fn, "needs_input_grad", (False, False))


class MulInplace(Function):
    def forward(self, a, b):
        needs = _needs(self)
        if needs[0]:
            self.b = b
        if needs[1]:
            self.a_before = a.copy()
        self.b_meta = (b.shape, b.dtype)
        get_array_module(a).multiply(a, b, out=a)
        return a

    def backward(self, gy):
        ga = gy * self.b if self.needs_input_grad[0] else None
        gb = sum_to(gy * self.a_before, *self.b_meta) if self.needs_input_grad[1] else None
        return ga, gb


class DivInplace(Function):
    def forward(self, a, b):
        self.b = b
        if _needs(self)[1]:
            self.a_before = a.copy()
        get_array_module(a).divide(a, b, out=a)
        return a

    def backward(self, gy):
        b = self.b
        ga = gy / b if self.needs_input_grad[0] else None
        gb = sum_to(-gy * self.a_before / (b * b), b.shape, b.dtype) if self.needs_input_grad[1] else None
        return ga, gb


class ClampInplace(Function):
    """a = min(max(a, low), high) with Python-number bounds; the gradient passes where
    low <= a <= high (inclusive, as ``clamp``)."""

    def __init__(self, low, high):
        self.low, self.high = low, high

    def forward(self, a):
        xp = get_array_module(a)
        inside = xp.ones(a.shape, dtype=bool)
        if self.low is not None:
            inside &= a >= self.low
        if self.high is not None:
            inside &= a <= self.high
        self.inside = inside
        xp.clip(a, self.low, self.high, out=a)
        return a

    def backward(self, gy):
        return (gy * self.inside,)


class Overwrite(Function):
    """a[...] = value (``fill_``, ``zero_``, ``copy_``, the random fills): the old value gets a
    zero gradient; a value Tensor gets the gradient summed back to its shape."""

    def forward(self, a, value):
        self.value_meta = (value.shape, value.dtype)
        a[...] = value
        return a

    def backward(self, gy):
        ga = gy * 0 if self.needs_input_grad[0] else None  # a zero gradient, as PyTorch gives
        return ga, (sum_to(gy, *self.value_meta) if self.needs_input_grad[1] else None)


class MaskedFillInplace(Function):
    """a[mask] = value, ``mask`` broadcast to a's shape; ``value`` a 0-d Tensor."""

    def __init__(self, mask):
        self.mask = mask

    def forward(self, a, value):
        self.value_meta = (value.shape, value.dtype)
        get_array_module(a).copyto(a, value, where=self.mask)
        return a

    def backward(self, gy):
        ga = gy * ~self.mask if self.needs_input_grad[0] else None
        gv = sum_to((gy * self.mask).sum(), *self.value_meta) if self.needs_input_grad[1] else None
        return ga, gv


class SetItem(Function):
    """a[key] = value (numpy indexing rules, ``value`` broadcast to ``a[key]``)."""

    def __init__(self, key):
        self.key = key

    def forward(self, a, value):
        self.value_meta = (value.shape, value.dtype)
        a[self.key] = value
        return a

    def backward(self, gy):
        ga = gv = None
        if self.needs_input_grad[0]:
            ga = gy.copy()
            ga[self.key] = 0
        if self.needs_input_grad[1]:
            gv = sum_to(gy[self.key], *self.value_meta)
        return ga, gv


def _records(target, operands):
    return is_grad_enabled() and (target.requires_grad or any(o.requires_grad for o in operands))


def run(what, target, fn, *operands):
    """Apply in-place Function ``fn`` (whose forward writes into its first input and returns it)
    to ``target``, bump the version of the memory written and rebase ``target``'s history."""
    if _records(target, operands):
        creator = target._creator
        if creator is None and target.requires_grad:
            raise RuntimeError(f"{what}: a leaf tensor that requires grad is being used in an in-place operation; "
                               f"do it inside pyneural.no_grad(), or on a clone()")
        if creator is not None and getattr(creator, "is_view", False):
            base = view_base(creator)
            if base is not None:
                return _write_through(what, target, base, fn, operands)
            if "base" not in creator.__dict__:  # reshape, permute, expand, flip
                raise RuntimeError(f"{what}: in-place operation on a view ({creator.name}) of a tensor in the graph "
                                   f"is not supported; do it on the base tensor, or on a clone() of the view")
            # an index view whose base tensor is gone: nothing else can see the base's history
    out = fn.apply(target, *operands)
    bump_version(target.data)
    if out.requires_grad:
        target._creator = out._creator
        target.requires_grad = True
    return target


def view_base(creator):
    """The base Tensor of an index view's node while that tensor lives (the node holds it weakly,
    so a view never keeps a large base array alive), else None."""
    ref = creator.__dict__.get("base")
    return ref() if isinstance(ref, weakref.ref) else ref


def _write_through(what, view, base, fn, operands):
    """The in-place op on a view in the graph: run it on a copy of the view, assign the copy into
    the base (its history rebased onto a SetItem) and re-derive the view from the new base."""
    creator = view._creator
    key = creator.__dict__["key"]
    from pyneural.functions import elementwise, shape
    updated = run(what, elementwise.clone(view), fn, *operands)
    setitem(base, key, updated)
    view._creator = shape.getitem(base, key, user_key=creator.__dict__.get("user_key"))._creator
    view.requires_grad = True
    return view


def setitem(target, key, value):
    """``target[key] = value``: a node when it records (the target's history is rebased)."""
    if not isinstance(value, Tensor):
        xp = get_array_module(target.data)
        value = wrap(xp.asarray(value, dtype=target.data.dtype))
    elif value.device != target.device:
        value = value.to(target.device)
    return run("__setitem__", target, SetItem(key), value)


def add_(x, other, alpha=1):
    return run("add_", x, AddInplace(alpha), _operand("add_", x, other))


def sub_(x, other, alpha=1):
    return run("sub_", x, AddInplace(-alpha), _operand("sub_", x, other))


def mul_(x, other):
    return run("mul_", x, MulInplace(), _operand("mul_", x, other))


def div_(x, other):
    return run("div_", x, DivInplace(), _operand("div_", x, other, true_division=True))


def clamp_(x, min=None, max=None):
    """Clamp in place; Tensor bounds run the out-of-place clamp on a copy and write it back."""
    if min is None and max is None:
        raise ValueError("clamp_: at least one of min and max must be given")
    if isinstance(min, Tensor) or isinstance(max, Tensor):
        from pyneural.functions import elementwise
        clamped = elementwise.clamp(elementwise.clone(x), min, max)
        _check_result_fits("clamp_", x.data, clamped.data.dtype, clamped.data.shape)
        return run("clamp_", x, Overwrite(), clamped)
    for bound in (min, max):
        if bound is not None:
            _check_result_fits("clamp_", x.data, np.result_type(x.data.dtype, bound))
    return run("clamp_", x, ClampInplace(min, max))


def _fill_value(what, x, value):
    """A fill value as a 0-d Tensor of the target's dtype (PyTorch casts fill scalars freely)."""
    if isinstance(value, Tensor):
        if value.data.ndim != 0:
            raise RuntimeError(f"{what} only supports a 0-dimensional value tensor, got one with shape "
                               f"{value.data.shape}")
        return value
    if not isinstance(value, numbers.Number):
        raise TypeError(f"{what}: value must be a number or a 0-d tensor, got {type(value).__name__}")
    return wrap(get_array_module(x.data).asarray(value, dtype=x.data.dtype))


def fill_(x, value):
    return run("fill_", x, Overwrite(), _fill_value("fill_", x, value))


def zero_(x):
    return fill_(x, 0)


def copy_(x, src):
    """Copy ``src`` (broadcast to x's shape, cast to x's dtype, moved from its device) into x."""
    if not isinstance(src, Tensor):
        src = wrap(get_array_module(x.data).asarray(src))
    if src.device != x.device:
        src = src.to(x.device)
    _check_result_fits("copy_", x.data, x.data.dtype, src.data.shape)
    return run("copy_", x, Overwrite(), src)


def overwrite_(what, x, array):
    """x[...] = array, a constant (the random fills ``uniform_``/``normal_``)."""
    return run(what, x, Overwrite(), wrap(array))


def scatter_(x, dim, index, src=None, value=None, reduce=None):
    """``x.scatter_``: the out-of-place scatter of a copy, written back (as clamp_ with tensor bounds)."""
    from pyneural.functions import elementwise, indexing
    return run("scatter_", x, Overwrite(), indexing.scatter(elementwise.clone(x), dim, index, src, value, reduce))


def scatter_add_(x, dim, index, src):
    from pyneural.functions import elementwise, indexing
    return run("scatter_add_", x, Overwrite(), indexing.scatter_add(elementwise.clone(x), dim, index, src))


def masked_fill_(x, mask, value):
    mask_arr = mask.data if isinstance(mask, Tensor) else get_array_module(x.data).asarray(mask)
    if mask_arr.dtype != np.bool_:
        raise TypeError(f"masked_fill_: mask must be a bool tensor, got dtype {mask_arr.dtype}")
    _check_result_fits("masked_fill_", x.data, x.data.dtype, mask_arr.shape)
    from pyneural import backend
    backend.check_same_device("masked_fill_", [x.data, mask_arr])
    return run("masked_fill_", x, MaskedFillInplace(mask_arr), _fill_value("masked_fill_", x, value))
