"""Elementwise math: exp, log, sqrt, abs, sin, cos, clamp/clip (number or tensor bounds), where,
triu/tril, and the copy/cast ops."""
import numpy as np

from pyneural.functions import arithmetic as _arith
from pyneural.functions.arithmetic import sum_to
from pyneural.tensor import Function, Tensor, get_array_module, is_floating_dtype, wrap


class Exp(Function):
    def forward(self, x):
        self.y = get_array_module(x).exp(x)
        return self.y

    def backward(self, gy):
        return (gy * self.y,)


class Log(Function):
    def forward(self, x):
        self.x = x
        return get_array_module(x).log(x)

    def backward(self, gy):
        return (gy / self.x,)


class Sqrt(Function):
    def forward(self, x):
        self.y = get_array_module(x).sqrt(x)
        return self.y

    def backward(self, gy):
        return (gy / (2.0 * self.y),)


class Abs(Function):
    def forward(self, x):
        self.x = x
        return get_array_module(x).abs(x)

    def backward(self, gy):
        # sign(0) = 0: the subgradient PyTorch picks at the kink
        return (gy * get_array_module(self.x).sign(self.x),)


class Sin(Function):
    def forward(self, x):
        self.x = x
        return get_array_module(x).sin(x)

    def backward(self, gy):
        return (gy * get_array_module(self.x).cos(self.x),)


class Cos(Function):
    def forward(self, x):
        self.x = x
        return get_array_module(x).cos(x)

    def backward(self, gy):
        return (-gy * get_array_module(self.x).sin(self.x),)


class Clamp(Function):
    def __init__(self, low, high):
        self.low, self.high = low, high

    def forward(self, x):
        xp = get_array_module(x)
        self.x = x
        return xp.clip(x, self.low, self.high)

    def backward(self, gy):
        x = self.x
        inside = True
        if self.low is not None:
            inside = x >= self.low
        if self.high is not None:
            inside = inside & (x <= self.high)
        return (gy * inside,)


class ClampTensor(Function):
    """min(max(x, low), high) with tensor bounds (broadcasting; either may be absent). x gets the
    gradient where low <= x <= high, ``low`` where x < low <= high, ``high`` where x > high or
    low > high (every output is then ``high``: PyTorch's rule, and numpy's)."""

    def __init__(self, has_low, has_high):
        self.has_low, self.has_high = has_low, has_high

    def forward(self, x, *bounds):
        xp = get_array_module(x)
        low = bounds[0] if self.has_low else None
        high = bounds[-1] if self.has_high else None
        self.x, self.low, self.high = x, low, high
        y = x if low is None else xp.maximum(x, low)
        return y if high is None else xp.minimum(y, high)

    def backward(self, gy):
        x, low, high = self.x, self.low, self.high
        xp = get_array_module(gy)
        inside = xp.ones(gy.shape, dtype=bool)
        if low is not None:
            inside = inside & (x >= low)
        if high is not None:
            inside = inside & (x <= high)
        grads = [sum_to(gy * inside, x.shape, x.dtype) if self.needs_input_grad[0] else None]
        if low is not None:
            below = x < low if high is None else (x < low) & (low <= high)
            grads.append(sum_to(gy * below, low.shape, low.dtype) if self.needs_input_grad[1] else None)
        if high is not None:
            above = x > high if low is None else (x > high) | (low > high)
            grads.append(sum_to(gy * above, high.shape, high.dtype) if self.needs_input_grad[-1] else None)
        return tuple(grads)


class Where(Function):
    def __init__(self, condition):
        self.condition = condition

    def forward(self, a, b):
        self.a_meta = (a.shape, a.dtype)
        self.b_meta = (b.shape, b.dtype)
        return get_array_module(a).where(self.condition, a, b)

    def backward(self, gy):
        cond = self.condition
        ga = gb = None
        if self.needs_input_grad[0]:
            ga = sum_to(gy * cond, *self.a_meta)
        if self.needs_input_grad[1]:
            gb = sum_to(gy * ~cond, *self.b_meta)
        return ga, gb


class Copy(Function):
    def forward(self, x):
        return x.copy()

    def backward(self, gy):
        return (gy,)


class Cast(Function):
    def __init__(self, dtype):
        self.dtype = dtype

    def forward(self, x):
        self.in_dtype = x.dtype
        return x.astype(self.dtype)

    def backward(self, gy):
        return (gy.astype(self.in_dtype),)


def _float_input(x):
    """PyTorch's rule for float-valued math: integer and bool inputs compute in float32 (the default
    dtype), not in numpy's float64."""
    return x if is_floating_dtype(x.data.dtype) else cast(x, np.float32)


def exp(x):
    return Exp().apply(_float_input(x))


def log(x):
    return Log().apply(_float_input(x))


def sqrt(x):
    return Sqrt().apply(_float_input(x))


def abs(x):
    return Abs().apply(x)


def sin(x):
    return Sin().apply(_float_input(x))


def cos(x):
    return Cos().apply(_float_input(x))


def clamp(x, min=None, max=None):
    """Limit x to [min, max]; bounds are Python numbers or tensors (broadcasting), either may be
    None. The gradient passes where min <= x <= max (both ends included, as PyTorch)."""
    if min is None and max is None:
        raise ValueError("clamp: at least one of min and max must be given")
    if not isinstance(min, Tensor) and not isinstance(max, Tensor):
        dt = x.data.dtype
        for bound in (min, max):
            if bound is not None:
                dt = _arith._combine(dt, _arith._scalar_dtype(bound))
        if dt != x.data.dtype:
            x = cast(x, dt)
        return Clamp(min, max).apply(x)
    xp = get_array_module(x.data)
    bounds = [b if isinstance(b, Tensor) else wrap(xp.asarray(b)) for b in (min, max) if b is not None]
    dt = _arith.result_type(x, *bounds)
    x, bounds = (cast(x, dt) if x.data.dtype != dt else x), [cast(b, dt) if b.data.dtype != dt else b for b in bounds]
    return ClampTensor(min is not None, max is not None).apply(x, *bounds)


clip = clamp


def where(condition, a=None, b=None):
    """``a`` where ``condition`` holds, else ``b`` (broadcasting; Tensors or numbers, the result
    dtype by PyTorch's promotion); differentiable in a and b. ``where(condition)`` alone is
    ``nonzero(condition, as_tuple=True)``."""
    if a is None and b is None:
        return nonzero(condition, as_tuple=True)
    like = a if isinstance(a, Tensor) else b if isinstance(b, Tensor) else condition
    if not isinstance(like, Tensor):
        raise TypeError(f"where: expected a Tensor condition or operand, got {type(condition).__name__}")
    xp = get_array_module(like.data)
    cond = condition.data if isinstance(condition, Tensor) else xp.asarray(condition)
    if cond.dtype != np.bool_:
        raise TypeError(f"where: condition must be a bool tensor, got dtype {cond.dtype}")
    dt = _arith.result_type(a, b)
    a = cast(a, dt) if isinstance(a, Tensor) and a.data.dtype != dt else a
    b = cast(b, dt) if isinstance(b, Tensor) and b.data.dtype != dt else b
    if not isinstance(a, Tensor):
        a = wrap(xp.asarray(a, dtype=dt))
    if not isinstance(b, Tensor):
        b = wrap(xp.asarray(b, dtype=dt))
    return Where(cond).apply(a, b)


def _triangle(fn, x, diagonal, upper):
    if x.data.ndim < 2:
        raise RuntimeError(f"{fn}: input tensor must have at least 2 dimensions, got shape {tuple(x.data.shape)}")
    xp = get_array_module(x.data)
    rows, cols = x.data.shape[-2:]
    # tri(k=d): ones on and below diagonal d. Upper keeps column - row >= d, i.e. not below diagonal d - 1.
    below = xp.tri(rows, cols, k=diagonal - 1 if upper else diagonal, dtype=bool)
    return where(wrap(~below if upper else below), x, 0)


def triu(input, diagonal=0):
    """The elements on and above ``diagonal`` of the last two dimensions; the rest zero."""
    return _triangle("triu", input, int(diagonal), True)


def tril(input, diagonal=0):
    """The elements on and below ``diagonal`` of the last two dimensions; the rest zero."""
    return _triangle("tril", input, int(diagonal), False)


def nonzero(input, as_tuple=False):
    """Indices of the nonzero elements: an (n, ndim) int64 tensor, or one 1-D tensor per
    dimension with ``as_tuple=True``."""
    xp = get_array_module(input.data)
    if input.data.ndim == 0:
        count = int(bool(input.data.item()))
        return (wrap(xp.zeros(count, dtype=np.int64)),) if as_tuple else wrap(xp.zeros((count, 0), dtype=np.int64))
    index = xp.nonzero(input.data)
    if as_tuple:
        return tuple(wrap(i.astype(np.int64)) for i in index)
    return wrap(xp.stack(index, axis=1).astype(np.int64))


def clone(x):
    return Copy().apply(x)


def cast(x, dtype):
    if x.requires_grad and not is_floating_dtype(np.dtype(dtype)):
        return wrap(x.data.astype(dtype))  # integer/bool results are outside the graph
    return Cast(dtype).apply(x)
