"""Numerical gradient check: autograd against float64 central finite differences.

For a random cotangent ``v`` over the outputs, backward gives ``v^T J`` for every input that
requires grad in one pass; finite differences give the same vector one input element at a time as
``<v, f(x + eps e_i) - f(x - eps e_i)> / 2 eps``. Comparing the two checks every column of the
Jacobian (a wrong column can only hide behind an exact cancellation against a random ``v``) at
the cost of two forward calls per input element.
"""
import numpy as np

from pyneural.tensor import Tensor, no_grad, wrap


class GradcheckError(AssertionError):
    """Raised by ``gradcheck(..., raise_exception=True)`` when the gradients disagree."""


def _outputs(result):
    if isinstance(result, Tensor):
        return (result,)
    if isinstance(result, (tuple, list)) and all(isinstance(r, Tensor) for r in result):
        return tuple(result)
    raise TypeError(f"gradcheck: fn must return a Tensor or a tuple of Tensors, got {type(result).__name__}")


def _as_float64(inputs):
    out = []
    for x in inputs:
        if isinstance(x, Tensor) and x.data.dtype.kind == "f":
            t = wrap(np.array(x.data, dtype=np.float64, order="C"), requires_grad=x.requires_grad)
            out.append(t)
        else:
            out.append(x)
    return out


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True, seed=0):
    """Check ``fn(*inputs)``'s autograd gradients against finite differences.

    Floating inputs are converted to float64 copies first (so float32 tensors can be passed);
    every converted input that requires grad is checked. Returns True when all agree within
    ``|analytic - numeric| <= atol + rtol * |numeric|``; otherwise raises ``GradcheckError``
    (or returns False with ``raise_exception=False``) naming the input and its worst element.
    """
    if isinstance(inputs, Tensor):
        inputs = (inputs,)
    inputs = _as_float64(inputs)
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires grad")

    outs = _outputs(fn(*inputs))
    rng = np.random.default_rng(seed)
    cotangents = [rng.standard_normal(o.data.shape) for o in outs]
    differentiable = [o for o in outs if o.requires_grad]
    if not differentiable:
        raise ValueError("gradcheck: no output of fn requires grad")
    total = None
    from pyneural.functions.arithmetic import mul
    from pyneural.functions.reduction import sum as reduce_sum
    for o, v in zip(outs, cotangents):
        if not o.requires_grad:
            continue
        term = reduce_sum(mul(o, wrap(v.astype(o.data.dtype))))
        total = term if total is None else total + term
    for i in checked:
        inputs[i].grad = None
    total.backward()

    def objective():
        with no_grad():
            return sum(float(np.sum(o.data * v)) for o, v, in zip(_outputs(fn(*inputs)), cotangents)
                       if o.data.dtype.kind == "f")

    for i in checked:
        x = inputs[i]
        analytic = np.zeros(x.data.shape) if x.grad is None else x.grad.data.astype(np.float64)
        numeric = np.empty(x.data.shape)
        flat = x.data.reshape(-1)  # a view: perturbing it perturbs the input in place
        num_flat = numeric.reshape(-1)
        for j in range(flat.size):
            orig = flat[j]
            flat[j] = orig + eps
            f_plus = objective()
            flat[j] = orig - eps
            f_minus = objective()
            flat[j] = orig
            num_flat[j] = (f_plus - f_minus) / (2 * eps)
        err = np.abs(analytic - numeric)
        bound = atol + rtol * np.abs(numeric)
        if np.any(err > bound) or not np.all(np.isfinite(analytic)):
            worst = np.unravel_index(int(np.argmax(np.where(np.isfinite(err), err - bound, np.inf))), err.shape)
            message = (f"gradcheck: gradient of input {i} (shape {x.data.shape}) disagrees: worst element "
                       f"{tuple(int(w) for w in worst)} analytic={analytic[worst]:.8g} numeric={numeric[worst]:.8g} "
                       f"(atol={atol}, rtol={rtol}, {int(np.sum(err > bound))} of {err.size} elements off)")
            if raise_exception:
                raise GradcheckError(message)
            return False
    return True
