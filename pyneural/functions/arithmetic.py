"""+ - * / // % neg pow, maximum/minimum, with broadcasting and Python scalars; comparisons and the
logical and bitwise ops (bool results outside the graph).

Binary ops broadcast like numpy; backward sums each gradient back to its input's shape
(``sum_to``). A Python scalar operand never becomes a Tensor: it has its own op (``AddScalar``
...), which keeps the common ``x * 0.5`` off the broadcasting path.

Result dtypes follow PyTorch, not numpy (``result_type``): an integer tensor times a float gives
float32, not float64; int / int divides into float32; a 0-d tensor or a Python number does not
widen a tensor of its own category (float32 tensor * float64 scalar stays float32). Where the
operands' dtypes differ from the result's they are cast first (a differentiable cast, whose
backward casts the gradient back).
"""
import math
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


# ---- PyTorch's type promotion ------------------------------------------------------------------

_BOOL, _INT, _FLOAT, _COMPLEX = range(4)
_F32 = np.dtype(np.float32)


def _category(dtype):
    if dtype == np.bool_:
        return _BOOL
    if dtype.kind in "iu":
        return _INT
    return _COMPLEX if dtype.kind == "c" else _FLOAT  # 'f', and bfloat16 (kind 'V')


def promote_types(a, b):
    """PyTorch's promotion of two dtypes: the dtype of the higher category (bool < integer <
    floating < complex), numpy's promotion within one category (int32 + int64 -> int64)."""
    a, b = np.dtype(a), np.dtype(b)
    if a == b:
        return a
    ca, cb = _category(a), _category(b)
    if ca == cb:
        return np.promote_types(a, b)
    return a if ca > cb else b


def _scalar_dtype(c):
    """The dtype PyTorch gives a Python number: bool, int64, or the default float32."""
    if isinstance(c, (bool, np.bool_)):
        return np.dtype(np.bool_)
    if isinstance(c, numbers.Integral):
        return np.dtype(np.int64)
    if isinstance(c, numbers.Real):
        return _F32
    return np.dtype(np.complex64)


def _combine(higher, lower):
    # PyTorch's combine_categories: a lower-priority participant (0-d tensor, Python number)
    # changes the result only when it is of a higher category.
    if higher is None:
        return lower
    if lower is None:
        return higher
    ch, cl = _category(higher), _category(lower)
    if ch == _COMPLEX or (ch == _FLOAT and cl != _COMPLEX):
        return higher
    if ch == _BOOL or cl >= _FLOAT:
        return promote_types(higher, lower)
    return higher


def result_type(*operands):
    """The dtype of an arithmetic op between the operands (Tensors, arrays or Python numbers), by
    PyTorch's rules: tensors with dimensions decide; 0-d tensors, then Python numbers, count only
    when they are of a higher category."""
    dims = zero = number = None
    for x in operands:
        if isinstance(x, numbers.Number):
            dt = _scalar_dtype(x)
            number = dt if number is None else promote_types(number, dt)
            continue
        arr = x.data if isinstance(x, Tensor) else np.asarray(x)
        if arr.ndim:
            dims = arr.dtype if dims is None else promote_types(dims, arr.dtype)
        else:
            zero = arr.dtype if zero is None else promote_types(zero, arr.dtype)
    return _combine(dims, _combine(zero, number))


def _cast(t, dtype):
    from pyneural.functions import elementwise  # elementwise imports this module
    return elementwise.cast(t, dtype)


def _tensor_pair(a, b):
    if not isinstance(a, Tensor):
        a = as_tensor_operand(a, b)
    elif not isinstance(b, Tensor):
        b = as_tensor_operand(b, a)
    return a, b


def _promoted(a, b, floating=False):
    """``a`` and ``b`` cast to their result dtype (a floating one when ``floating``: true division)."""
    dt = a.data.dtype
    if b.data.dtype != dt or (floating and _category(dt) < _FLOAT):
        dt = result_type(a, b)
        if floating and _category(dt) < _FLOAT:
            dt = _F32
        if a.data.dtype != dt:
            a = _cast(a, dt)
        if b.data.dtype != dt:
            b = _cast(b, dt)
    return a, b


def _promoted_for_scalar(x, c, floating=False):
    """``x`` cast to the result dtype of ``x op c`` for a Python number ``c``."""
    dt = x.data.dtype
    if _category(dt) >= _FLOAT:
        return x
    dt = _combine(dt, _scalar_dtype(c))
    if floating and _category(dt) < _FLOAT:
        dt = _F32
    return x if dt == x.data.dtype else _cast(x, dt)


# ---- Functions ---------------------------------------------------------------------------------

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
    """x ** p for a Python scalar p. PyTorch's gradient at p == 0 is 0 everywhere (also at
    x == 0, where p * x ** (p - 1) would be 0 * inf)."""

    def __init__(self, p):
        self.p = p

    def forward(self, x):
        self.x = x
        with np.errstate(divide="ignore", invalid="ignore"):
            return x ** self.p

    def backward(self, gy):
        p = self.p
        if p == 0:
            return (gy * 0,)
        if p == 2:
            return (gy * (2.0 * self.x),)
        with np.errstate(divide="ignore", invalid="ignore"):
            return (gy * (p * self.x ** (p - 1)),)


def _log_of_base(c):
    # log of a Python-number base: -inf at 0, NaN below (PyTorch's real log of a scalar)
    return math.log(c) if c > 0 else (-math.inf if c == 0 else math.nan)


class RPowScalar(Function):
    """c ** x for a Python number base c; d/dx = c ** x * log c, taken as 0 where c == 0 and
    x >= 0 (PyTorch's rule)."""

    def __init__(self, c):
        self.c = c

    def forward(self, x):
        with np.errstate(divide="ignore", invalid="ignore"):
            self.y = self.c ** x
        if self.c == 0:
            self.x = x
        return self.y

    def backward(self, gy):
        with np.errstate(invalid="ignore"):
            g = gy * self.y * _log_of_base(self.c)
        if self.c == 0:
            g = get_array_module(g).where(self.x >= 0, 0, g)
        return (g,)


class Pow(Function):
    """a ** b for two tensors (broadcasting). d/da = b a^(b-1) (0 where b == 0);
    d/db = a^b log a (0 where a == 0 and b >= 0, the limit PyTorch takes)."""

    def forward(self, a, b):
        self.a, self.b = a, b
        with np.errstate(divide="ignore", invalid="ignore"):
            self.y = a ** b
        return self.y

    def backward(self, gy):
        a, b, y = self.a, self.b, self.y
        xp = get_array_module(gy)
        ga = gb = None
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.needs_input_grad[0]:
                ga = sum_to(xp.where(b == 0, 0, gy * b * a ** (b - 1)), a.shape, a.dtype)
            if self.needs_input_grad[1]:
                gb = sum_to(xp.where((a == 0) & (b >= 0), 0, gy * y * xp.log(a)), b.shape, b.dtype)
        return ga, gb


class Remainder(Function):
    """``a - floor(a / b) * b``: the sign of the divisor, as Python's ``%`` and PyTorch's remainder."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return get_array_module(a).mod(a, b)

    def backward(self, gy):
        a, b = self.a, self.b
        ga = gb = None
        if self.needs_input_grad[0]:
            ga = sum_to(gy, a.shape, a.dtype)
        if self.needs_input_grad[1]:
            gb = sum_to(-gy * get_array_module(a).floor_divide(a, b), b.shape, b.dtype)
        return ga, gb


class Maximum(Function):
    """Elementwise max (``use_min``: min) of two tensors. The winner gets the gradient and a tie
    splits it evenly; at a NaN both get it (PyTorch's masks)."""

    def __init__(self, use_min):
        self.use_min = use_min

    def forward(self, a, b):
        self.a, self.b = a, b
        xp = get_array_module(a)
        return xp.minimum(a, b) if self.use_min else xp.maximum(a, b)

    def backward(self, gy):
        a, b = self.a, self.b
        xp = get_array_module(gy)
        tie = a == b
        a_loses, b_loses = (a > b, a < b) if self.use_min else (a < b, a > b)
        ga = gb = None
        if self.needs_input_grad[0]:
            ga = sum_to(gy * xp.where(tie, 0.5, ~a_loses).astype(gy.dtype), a.shape, a.dtype)
        if self.needs_input_grad[1]:
            gb = sum_to(gy * xp.where(tie, 0.5, ~b_loses).astype(gy.dtype), b.shape, b.dtype)
        return ga, gb


# ---- the public functions ----------------------------------------------------------------------

def add(a, b, alpha=1):
    if alpha != 1:
        b = mul(b, alpha) if isinstance(b, Tensor) else b * alpha
    if isinstance(b, Tensor) or not _is_scalar(b):
        return Add().apply(*_promoted(*_tensor_pair(a, b)))
    return AddScalar(_py(b)).apply(_promoted_for_scalar(a, b))


def sub(a, b, alpha=1):
    if alpha != 1:
        b = mul(b, alpha) if isinstance(b, Tensor) else b * alpha
    if isinstance(b, Tensor) or not _is_scalar(b):
        return Sub().apply(*_promoted(*_tensor_pair(a, b)))
    return AddScalar(-_py(b)).apply(_promoted_for_scalar(a, b))


def rsub(a, b):
    """b - a, for ``scalar - tensor``."""
    if _is_scalar(b):
        return RSubScalar(_py(b)).apply(_promoted_for_scalar(a, b))
    return Sub().apply(*_promoted(as_tensor_operand(b, a), a))


def mul(a, b):
    if isinstance(b, Tensor) or not _is_scalar(b):
        return Mul().apply(*_promoted(*_tensor_pair(a, b)))
    return MulScalar(_py(b)).apply(_promoted_for_scalar(a, b))


def div(a, b):
    if isinstance(b, Tensor) or not _is_scalar(b):
        return Div().apply(*_promoted(*_tensor_pair(a, b), floating=True))
    return DivScalar(_py(b)).apply(_promoted_for_scalar(a, b, floating=True))


def rdiv(a, b):
    """b / a, for ``scalar / tensor``."""
    if _is_scalar(b):
        return RDivScalar(_py(b)).apply(_promoted_for_scalar(a, b, floating=True))
    return Div().apply(*_promoted(as_tensor_operand(b, a), a, floating=True))


def neg(x):
    if x.data.dtype == np.bool_:
        raise TypeError("neg: negation, the `-` operator, on a bool tensor is not supported; use ~ or "
                        "logical_not() instead")
    return Neg().apply(x)


def pow(x, exponent):
    """``x ** exponent``: tensor or Python-number base and exponent (not both numbers)."""
    if not isinstance(x, Tensor):
        if not isinstance(exponent, Tensor):
            raise TypeError(f"pow: expected a Tensor base or exponent, got {type(x).__name__} and "
                            f"{type(exponent).__name__}")
        if not _is_scalar(x):
            return Pow().apply(*_promoted(as_tensor_operand(x, exponent), exponent))
        return rpow(exponent, x)
    if isinstance(exponent, Tensor) or not _is_scalar(exponent):
        return Pow().apply(*_promoted(*_tensor_pair(x, exponent)))
    x = _promoted_for_scalar(x, exponent)
    if exponent == 1:
        return MulScalar(1).apply(x)
    return PowScalar(_py(exponent)).apply(x)


def rpow(x, base):
    """base ** x for a Python number base (``2 ** t``)."""
    if not _is_scalar(base):
        return Pow().apply(*_promoted(as_tensor_operand(base, x), x))
    return RPowScalar(_py(base)).apply(_promoted_for_scalar(x, base))


def _common_operands(a, b):
    """``a`` and ``b`` as Tensors of their result dtype; either may be a Python number."""
    if isinstance(a, Tensor) and _is_scalar(b):
        a = _promoted_for_scalar(a, b)
        return a, wrap(get_array_module(a.data).asarray(b, dtype=a.data.dtype))
    if isinstance(b, Tensor) and _is_scalar(a):
        b, a = _common_operands(b, a)
        return a, b
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        raise TypeError(f"expected a Tensor operand, got {type(a).__name__} and {type(b).__name__}")
    return _promoted(*_tensor_pair(a, b))


def _check_integer_divisor(fn, a, b):
    if _category(a.data.dtype) < _FLOAT and bool((b.data == 0).any()):
        raise ZeroDivisionError(f"{fn}: integer division by zero")


def floor_divide(input, other):
    """``input // other`` rounded toward minus infinity (PyTorch's floor_divide, Python's ``//``),
    broadcasting, with PyTorch's result dtype. Not differentiable (PyTorch has no derivative for
    it either): the result is outside the graph."""
    a, b = _common_operands(input, other)
    _check_devices("floor_divide", a.data, b.data)
    _check_integer_divisor("floor_divide", a, b)
    return wrap(get_array_module(a.data).floor_divide(a.data, b.data))


def remainder(input, other):
    """``input % other`` with the sign of ``other`` (Python's ``%``, PyTorch's remainder),
    broadcasting; differentiable in both (d/d other is ``-floor(input / other)``)."""
    a, b = _common_operands(input, other)
    _check_devices("remainder", a.data, b.data)
    _check_integer_divisor("remainder", a, b)
    return Remainder().apply(a, b)


def _max_min(a, b, use_min):
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        raise TypeError(f"{'minimum' if use_min else 'maximum'}: expected Tensors, got "
                        f"{type(a).__name__} and {type(b).__name__}")
    a, b = _tensor_pair(a, b)
    return Maximum(use_min).apply(*_promoted(a, b))


def maximum(input, other):
    """Elementwise maximum of two tensors (broadcasting); NaN wins, as in PyTorch."""
    return _max_min(input, other, False)


def minimum(input, other):
    return _max_min(input, other, True)


# ---- comparisons, logical and bitwise ops: bool (or integer) results outside the graph ----------

def _operand_array(other, like, fn):
    if isinstance(other, Tensor):
        return other.data
    if _is_scalar(other):
        return other
    return get_array_module(like.data).asarray(other)


def _check_devices(fn, a, b):
    if type(b) is not type(a) and not _is_scalar(b):
        from pyneural import backend
        backend.check_same_device(fn, [a, b])


_COMPARE = {
    "equal": "eq", "not_equal": "ne", "less": "lt", "less_equal": "le", "greater": "gt", "greater_equal": "ge",
}


def compare(a, b, op):
    """Elementwise comparison ``op`` (numpy's name: "equal", "less", ...); a bool tensor."""
    if not isinstance(a, Tensor):
        raise TypeError(f"{_COMPARE.get(op, op)}: expected a Tensor, got {type(a).__name__}")
    other = _operand_array(b, a, op)
    _check_devices(_COMPARE.get(op, op), a.data, other)
    return wrap(getattr(get_array_module(a.data), op)(a.data, other))


def eq(input, other):
    return compare(input, other, "equal")


def ne(input, other):
    return compare(input, other, "not_equal")


def lt(input, other):
    return compare(input, other, "less")


def le(input, other):
    return compare(input, other, "less_equal")


def gt(input, other):
    return compare(input, other, "greater")


def ge(input, other):
    return compare(input, other, "greater_equal")


def _logical(fn, a, b, op):
    if not isinstance(a, Tensor):
        raise TypeError(f"{fn}: expected a Tensor, got {type(a).__name__}")
    other = _operand_array(b, a, fn)
    _check_devices(fn, a.data, other)
    return wrap(getattr(get_array_module(a.data), op)(a.data, other))


def logical_and(input, other):
    """Elementwise AND of the truth values (nonzero is true); a bool tensor."""
    return _logical("logical_and", input, other, "logical_and")


def logical_or(input, other):
    return _logical("logical_or", input, other, "logical_or")


def logical_xor(input, other):
    return _logical("logical_xor", input, other, "logical_xor")


def logical_not(input):
    return wrap(get_array_module(input.data).logical_not(input.data))


def _check_integral(fn, *arrays):
    for arr in arrays:
        dtype = getattr(arr, "dtype", None)
        if dtype is None:
            if isinstance(arr, float):
                raise TypeError(f"{fn}: bitwise operations need bool or integer operands, got a float")
        elif _category(dtype) > _INT:
            raise TypeError(f"{fn}: bitwise operations need bool or integer tensors, got dtype {dtype}")


def bitwise(fn, a, b, op):
    """``&``, ``|``, ``^`` on bool or integer tensors (PyTorch's bitwise_and/or/xor)."""
    other = _operand_array(b, a, fn)
    _check_integral(fn, a.data, other)
    _check_devices(fn, a.data, other)
    return wrap(getattr(get_array_module(a.data), op)(a.data, other))


def bitwise_not(input):
    """``~``: logical not of a bool tensor, bitwise not of an integer one."""
    _check_integral("bitwise_not", input.data)
    return wrap(get_array_module(input.data).invert(input.data))
