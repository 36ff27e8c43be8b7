"""Elementwise math: exp, log, sqrt, abs, clamp, where, and the copy/cast ops."""
import numpy as np

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


def exp(x):
    return Exp().apply(x)


def log(x):
    return Log().apply(x)


def sqrt(x):
    return Sqrt().apply(x)


def abs(x):
    return Abs().apply(x)


def clamp(x, min=None, max=None):
    if min is None and max is None:
        raise ValueError("clamp: at least one of min and max must be given")
    return Clamp(min, max).apply(x)


def where(condition, a, b):
    """``a`` where ``condition`` holds, else ``b`` (broadcasting); differentiable in a and b."""
    cond = condition.data if isinstance(condition, Tensor) else np.asarray(condition)
    if cond.dtype != np.bool_:
        raise TypeError(f"where: condition must be a bool tensor, got dtype {cond.dtype}")
    like = a if isinstance(a, Tensor) else b
    if not isinstance(like, Tensor):
        raise TypeError("where: at least one of a and b must be a Tensor")
    xp = get_array_module(like.data)
    if not isinstance(a, Tensor):
        a = wrap(xp.asarray(a, dtype=like.data.dtype))
    if not isinstance(b, Tensor):
        b = wrap(xp.asarray(b, dtype=like.data.dtype))
    return Where(cond).apply(a, b)


def clone(x):
    return Copy().apply(x)


def cast(x, dtype):
    if x.requires_grad and not is_floating_dtype(np.dtype(dtype)):
        return wrap(x.data.astype(dtype))  # integer/bool results are outside the graph
    return Cast(dtype).apply(x)
