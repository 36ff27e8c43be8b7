"""+ - * / neg pow, with broadcasting and Python scalars, and the comparison operators.

Binary ops broadcast like numpy; backward sums each gradient back to its input's shape
(``sum_to``). A Python scalar operand never becomes a Tensor: it has its own op (``AddScalar``
...), which keeps the common ``x * 0.5`` off the broadcasting path.
"""
import numbers

import numpy as np

from pyneural.tensor import Function, Tensor, get_array_module, wrap

_ndarray = np.ndarray


def sum_to(g, shape, dtype):
    """Reduce the broadcast gradient ``g`` to ``shape`` (the inverse of broadcasting) and cast it
    to ``dtype`` (a float32 input combined with a float64 one gets a float32 gradient)."""
    if g.shape != shape:
        lead = g.ndim - len(shape)
        axes = tuple(range(lead)) + tuple(
            i + lead for i, n in enumerate(shape) if n == 1 and g.shape[i + lead] != 1)
        if axes:
            g = g.sum(axis=axes, keepdims=True)
        if lead:
            g = g.reshape(shape)
    if g.dtype != dtype:
        g = g.astype(dtype)
    return g


def as_tensor_operand(other, like):
    """A non-Tensor operand (array, list) as a constant Tensor; numpy keeps its dtype."""
    if isinstance(other, Tensor):
        return other
    xp = get_array_module(like.data)
    arr = xp.asarray(other)
    if arr.dtype == np.float64 and type(other) is not _ndarray:
        arr = arr.astype(like.data.dtype if like.data.dtype.kind == "f" else np.float32)
    return wrap(arr)


def _is_scalar(x):
    return isinstance(x, numbers.Number)


def _py(c):
    # A numpy float64 scalar would promote a float32 tensor to float64 (NEP 50); a Python
    # float never does.
    return c.item() if isinstance(c, np.generic) else c


class Add(Function):
    def forward(self, a, b):
        self.a_meta = (a.shape, a.dtype)
        self.b_meta = (b.shape, b.dtype)
        return a + b

    def backward(self, gy):
        ga = gb = None
        if self.needs_input_grad[0]:
            ga = sum_to(gy, *self.a_meta)
        if self.needs_input_grad[1]:
            gb = sum_to(gy, *self.b_meta)
        return ga, gb


class Sub(Function):
    def forward(self, a, b):
        self.a_meta = (a.shape, a.dtype)
        self.b_meta = (b.shape, b.dtype)
        return a - b

    def backward(self, gy):
        ga = gb = None
        if self.needs_input_grad[0]:
            ga = sum_to(gy, *self.a_meta)
        if self.needs_input_grad[1]:
            gb = sum_to(-gy, *self.b_meta)
        return ga, gb


class Mul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, gy):
        a, b = self.a, self.b
        ga = gb = None
        if self.needs_input_grad[0]:
            ga = sum_to(gy * b, a.shape, a.dtype)
        if self.needs_input_grad[1]:
            gb = sum_to(gy * a, b.shape, b.dtype)
        return ga, gb


class Div(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, gy):
        a, b = self.a, self.b
        ga = gb = None
        g_over_b = gy / b
        if self.needs_input_grad[0]:
            ga = sum_to(g_over_b, a.shape, a.dtype)
        if self.needs_input_grad[1]:
            gb = sum_to(-g_over_b * a / b, b.shape, b.dtype)
        return ga, gb


class AddScalar(Function):
    def __init__(self, c):
        self.c = c

    def forward(self, x):
        return x + self.c

    def backward(self, gy):
        return (gy,)


class MulScalar(Function):
    def __init__(self, c):
        self.c = c

    def forward(self, x):
        return x * self.c

    def backward(self, gy):
        return (gy * self.c,)


class DivScalar(Function):
    def __init__(self, c):
        self.c = c

    def forward(self, x):
        return x / self.c

    def backward(self, gy):
        return (gy / self.c,)


class RSubScalar(Function):
    """c - x"""

    def __init__(self, c):
        self.c = c

    def forward(self, x):
        return self.c - x

    def backward(self, gy):
        return (-gy,)


class RDivScalar(Function):
    """c / x"""

    def __init__(self, c):
        self.c = c

    def forward(self, x):
        self.x = x
        self.y = self.c / x
        return self.y

    def backward(self, gy):
        return (-gy * self.y / self.x,)


class Neg(Function):
    def forward(self, x):
        return -x

    def backward(self, gy):
        return (-gy,)


class PowScalar(Function):
    """x ** p for a Python scalar p."""

    def __init__(self, p):
        self.p = p

    def forward(self, x):
        self.x = x
        return x ** self.p

    def backward(self, gy):
        p = self.p
        if p == 2:
            return (gy * (2.0 * self.x),)
        return (gy * (p * self.x ** (p - 1)),)


class RPowScalar(Function):
    """c ** x for a Python scalar base c > 0."""

    def __init__(self, c):
        self.c = c

    def forward(self, x):
        self.y = self.c ** x
        return self.y

    def backward(self, gy):
        return (gy * self.y * float(np.log(self.c)),)


def add(a, b):
    if isinstance(b, Tensor):
        if not isinstance(a, Tensor):
            a = as_tensor_operand(a, b)
        return Add().apply(a, b)
    if _is_scalar(b):
        return AddScalar(_py(b)).apply(a)
    return Add().apply(a, as_tensor_operand(b, a))


def sub(a, b):
    if isinstance(b, Tensor):
        if not isinstance(a, Tensor):
            a = as_tensor_operand(a, b)
        return Sub().apply(a, b)
    if _is_scalar(b):
        return AddScalar(-_py(b)).apply(a)
    return Sub().apply(a, as_tensor_operand(b, a))


def rsub(a, b):
    """b - a, for ``scalar - tensor``."""
    if _is_scalar(b):
        return RSubScalar(_py(b)).apply(a)
    return Sub().apply(as_tensor_operand(b, a), a)


def mul(a, b):
    if isinstance(b, Tensor):
        if not isinstance(a, Tensor):
            a = as_tensor_operand(a, b)
        return Mul().apply(a, b)
    if _is_scalar(b):
        return MulScalar(_py(b)).apply(a)
    return Mul().apply(a, as_tensor_operand(b, a))


def div(a, b):
    if isinstance(b, Tensor):
        if not isinstance(a, Tensor):
            a = as_tensor_operand(a, b)
        return Div().apply(a, b)
    if _is_scalar(b):
        return DivScalar(_py(b)).apply(a)
    return Div().apply(a, as_tensor_operand(b, a))


def rdiv(a, b):
    """b / a, for ``scalar / tensor``."""
    if _is_scalar(b):
        return RDivScalar(_py(b)).apply(a)
    return Div().apply(as_tensor_operand(b, a), a)


def neg(x):
    return Neg().apply(x)


def pow(x, exponent):
    if isinstance(exponent, Tensor):
        if exponent.data.ndim == 0 and not exponent.requires_grad:
            exponent = exponent.item()
        else:
            raise TypeError("pow: only a scalar (Python number) exponent is supported; "
                            "use exp(b * log(x)) for a tensor exponent")
    if not _is_scalar(exponent):
        raise TypeError(f"pow: exponent must be a Python number, got {type(exponent).__name__}")
    if exponent == 1:
        return MulScalar(1).apply(x)
    return PowScalar(_py(exponent)).apply(x)


def rpow(x, base):
    """base ** x for a Python number base."""
    if not _is_scalar(base):
        raise TypeError(f"pow: base must be a Python number, got {type(base).__name__}")
    if base <= 0:
        raise ValueError(f"pow: a scalar base must be > 0 to differentiate base ** x, got {base}")
    return RPowScalar(_py(base)).apply(x)


_COMPARE = {
    "equal": np.equal, "not_equal": np.not_equal, "less": np.less,
    "less_equal": np.less_equal, "greater": np.greater, "greater_equal": np.greater_equal,
}


def compare(a, b, op):
    """Elementwise comparison; the result is a bool tensor outside the graph."""
    b = b.data if isinstance(b, Tensor) else b
    xp = get_array_module(a.data)
    return wrap(getattr(xp, op)(a.data, b))
