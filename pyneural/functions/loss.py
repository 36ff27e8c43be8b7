"""Losses with PyTorch's arguments and reductions ("mean", "sum", "none"; the legacy
``size_average``/``reduce`` flags map onto them with PyTorch's warning).

* cross_entropy: class-index targets run one fused kernel that returns per-sample losses and the
  softmax probabilities (all its backward keeps; the kernel turns them into dlogits in one pass).
  Class weights, class-probability targets and empty batches are composed from log_softmax and
  nll_loss instead, with PyTorch's normalisation (a weighted mean divides by the weights of the
  targets; a mean over probability targets by the number of samples).
* nll_loss, binary_cross_entropy(_with_logits), smooth_l1, huber, kl_div: one Function each that
  computes the elementwise losses, reduces them, and differentiates input and target.
* mse_loss one Function; l1_loss composed (abs of the difference).

Inputs with extra dims (N, C, d1, ...) are moved to (N*d1*..., C) rows first. Where PyTorch
broadcasts a target of another shape with a warning (mse, l1, smooth_l1, huber), so does this.
"""
import warnings

import numpy as np

from pyneural import backend
from pyneural.functions.arithmetic import sum_to
from pyneural.tensor import Function, Tensor, get_array_module, wrap

_REDUCTIONS = ("mean", "sum", "none")
_BCE_EPS = 1e-12  # PyTorch's floor on x(1 - x) in the BCE gradient


def _mean(total, count):
    return total / count if count else total * np.nan  # 0/0 without numpy's warning


def _mean_scale(c, count):
    return c / count if count else np.nan


def _reduce(losses, reduction):
    if reduction == "none":
        return losses
    total = losses.sum()
    return total if reduction == "sum" else _mean(total, losses.size)


def _grad_scale(gy, reduction, count):
    """The factor a reduction's backward multiplies each elementwise gradient by."""
    if reduction == "none":
        return gy
    return gy if reduction == "sum" else gy * _mean_scale(1.0, count)


class CrossEntropy(Function):
    def __init__(self, labels, reduction, label_smoothing, valid, out_shape):
        self.labels, self.reduction = labels, reduction
        self.label_smoothing = label_smoothing
        self.valid = valid            # None, or the bool mask of targets != ignore_index
        self.out_shape = out_shape    # shape of the 'none' output

    def forward(self, logits):
        xp = get_array_module(logits)
        x2 = logits
        self.in_shape = None
        if logits.ndim != 2:
            x2 = xp.moveaxis(logits, 1, -1).reshape(-1, logits.shape[1])
            self.in_shape = logits.shape
        if not x2.flags.c_contiguous:
            x2 = xp.ascontiguousarray(x2)
        losses, self.saved = backend.of(x2).cross_entropy_forward(x2, self.labels, self.label_smoothing)
        self.n, self.dtype = x2.shape[0], x2.dtype
        if self.valid is not None:
            losses = losses * self.valid
        if self.reduction == "none":
            return losses.reshape(self.out_shape)
        total = losses.sum()
        if self.reduction == "sum":
            return total
        self.count = losses.shape[0] if self.valid is None else int(self.valid.sum())
        return _mean(total, self.count)

    def backward(self, gy):
        xp = get_array_module(gy)
        n, dtype = self.n, self.dtype
        if self.reduction == "none":
            dlosses = xp.ascontiguousarray(gy.reshape(-1), dtype=dtype)
        else:
            scale = gy if self.reduction == "sum" else gy / self.count
            dlosses = xp.full((n,), scale, dtype=dtype)
        if self.valid is not None:
            dlosses = dlosses * self.valid
        g = backend.of(dlosses).cross_entropy_backward(self.saved, self.labels, dlosses,
                                                            self.label_smoothing)
        shape = self.in_shape
        if shape is not None:
            g = xp.moveaxis(g.reshape((shape[0],) + shape[2:] + (shape[1],)), -1, 1)
        return (g,)


class MSE(Function):
    def __init__(self, reduction):
        self.reduction = reduction

    def forward(self, x, t):
        self.diff = x - t
        sq = self.diff * self.diff
        if self.reduction == "none":
            return sq
        return _reduce(sq, self.reduction)

    def backward(self, gy):
        scale = 2.0 if self.reduction != "mean" else _mean_scale(2.0, self.diff.size)
        g = (gy * scale) * self.diff
        needs = self.needs_input_grad
        return (g if needs[0] else None), (-g if needs[1] else None)


class NLLLoss(Function):
    """-weight[t] * input[n, t] per row (0 for ignored targets); the mean divides by the summed
    weights of the counted targets, as PyTorch's ``total_weight``."""

    def __init__(self, labels, weight, valid, reduction, out_shape):
        self.labels, self.weight, self.valid = labels, weight, valid
        self.reduction, self.out_shape = reduction, out_shape

    def forward(self, x):
        xp = get_array_module(x)
        x2, self.in_shape = _rows(x)
        picked = xp.take_along_axis(x2, self.labels[:, None], axis=1)[:, 0]
        w = xp.ones(picked.shape, dtype=x.dtype) if self.weight is None else self.weight[self.labels].astype(x.dtype)
        if self.valid is not None:
            w = w * self.valid
        self.row_weight, self.rows_shape = w, x2.shape
        losses = -(w * picked)
        if self.reduction == "none":
            return losses.reshape(self.out_shape)
        total = losses.sum()
        if self.reduction == "sum":
            return total
        self.total_weight = w.sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            return total / self.total_weight

    def backward(self, gy):
        xp = get_array_module(gy)
        if self.reduction == "none":
            dl = gy.reshape(-1)
        elif self.reduction == "sum":
            dl = gy
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                dl = gy / self.total_weight
        g2 = xp.zeros(self.rows_shape, dtype=gy.dtype)
        values = xp.broadcast_to(-(self.row_weight * dl), self.labels.shape).astype(gy.dtype)
        xp.put_along_axis(g2, self.labels[:, None], values[:, None], axis=1)
        return (_unrows(g2, self.in_shape),)


class _Pointwise(Function):
    """An elementwise loss of (input, target), reduced. Subclasses define ``losses(x, t)`` and
    ``grads(x, t)`` -> (d/dx, d/dt), both elementwise; ``weight`` (a constant array that
    broadcasts to the input) multiplies both."""

    def __init__(self, reduction, weight=None):
        self.reduction, self.weight = reduction, weight

    def forward(self, x, t):
        self.x, self.t = x, t
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            losses = self.losses(x, t)
        if self.weight is not None:
            losses = losses * self.weight
        return _reduce(losses, self.reduction)

    def backward(self, gy):
        scale = _grad_scale(gy, self.reduction, self.x.size)
        if self.weight is not None:
            scale = scale * self.weight
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            dx, dt = self.grads(self.x, self.t)
        needs = self.needs_input_grad
        gx = sum_to(dx * scale, self.x.shape, self.x.dtype) if needs[0] else None
        gt = sum_to(dt * scale, self.t.shape, self.t.dtype) if needs[1] and dt is not None else None
        return gx, gt


class BCE(_Pointwise):
    """-(t log x + (1 - t) log(1 - x)), each log floored at -100 (PyTorch's clamp)."""

    def losses(self, x, t):
        xp = get_array_module(x)
        return -(t * xp.maximum(xp.log(x), -100.0) + (1.0 - t) * xp.maximum(xp.log1p(-x), -100.0))

    def grads(self, x, t):
        xp = get_array_module(x)
        dx = (x - t) / xp.maximum((1.0 - x) * x, _BCE_EPS)
        dt = xp.maximum(xp.log1p(-x), -100.0) - xp.maximum(xp.log(x), -100.0)
        return dx, dt


class BCEWithLogits(_Pointwise):
    """(1 - t) x + (1 + (pos_weight - 1) t) softplus(-x), the stable form of BCE(sigmoid(x))."""

    def __init__(self, reduction, weight=None, pos_weight=None):
        super().__init__(reduction, weight)
        self.pos_weight = pos_weight

    def _log_weight(self, t):
        return 1.0 if self.pos_weight is None else 1.0 + (self.pos_weight - 1.0) * t

    def losses(self, x, t):
        xp = get_array_module(x)
        return (1.0 - t) * x + self._log_weight(t) * _softplus(xp, -x)

    def grads(self, x, t):
        xp = get_array_module(x)
        sig_neg = 0.5 * (xp.tanh(-0.5 * x) + 1.0)  # sigmoid(-x), no overflow
        dx = (1.0 - t) - self._log_weight(t) * sig_neg
        dt = -x if self.pos_weight is None else -x + (self.pos_weight - 1.0) * _softplus(xp, -x)
        return dx, dt


class SmoothL1Loss(_Pointwise):
    """0.5 d^2 / beta where |d| < beta, |d| - beta / 2 elsewhere (d = x - t); beta 0 is L1."""

    def __init__(self, reduction, beta):
        super().__init__(reduction)
        self.beta = beta

    def losses(self, x, t):
        xp = get_array_module(x)
        d = x - t
        ad = xp.abs(d)
        if self.beta == 0:
            return ad
        return xp.where(ad < self.beta, 0.5 * d * d / self.beta, ad - 0.5 * self.beta)

    def grads(self, x, t):
        xp = get_array_module(x)
        d = x - t
        dx = xp.sign(d) if self.beta == 0 else xp.where(xp.abs(d) < self.beta, d / self.beta, xp.sign(d))
        return dx, -dx


class HuberLoss(_Pointwise):
    """0.5 d^2 where |d| < delta, delta (|d| - delta / 2) elsewhere."""

    def __init__(self, reduction, delta):
        super().__init__(reduction)
        self.delta = delta

    def losses(self, x, t):
        xp = get_array_module(x)
        d = x - t
        ad = xp.abs(d)
        return xp.where(ad < self.delta, 0.5 * d * d, self.delta * (ad - 0.5 * self.delta))

    def grads(self, x, t):
        xp = get_array_module(x)
        dx = xp.clip(x - t, -self.delta, self.delta)
        return dx, -dx


class KLDiv(_Pointwise):
    """Pointwise t (log t - x) (0 where t == 0), or exp(t) (t - x) with ``log_target``; the
    'batchmean' reduction divides the sum by the batch size."""

    def __init__(self, reduction, log_target, batch):
        super().__init__("sum" if reduction == "batchmean" else reduction)
        self.log_target, self.batch, self.batchmean = log_target, batch, reduction == "batchmean"

    def forward(self, x, t):
        y = super().forward(x, t)
        return _mean(y, self.batch) if self.batchmean else y

    def backward(self, gy):
        return super().backward(_mean(gy, self.batch) if self.batchmean else gy)

    def losses(self, x, t):
        xp = get_array_module(x)
        if self.log_target:
            return xp.exp(t) * (t - x)
        return xp.where(t == 0, 0.0, t * xp.log(t)).astype(x.dtype) - t * x

    def grads(self, x, t):
        xp = get_array_module(x)
        if self.log_target:
            e = xp.exp(t)
            return -e, e * (t - x + 1.0)
        # d/dt of xlogy(t, t) - t x, as PyTorch differentiates it (NaN at t == 0)
        return -t, xp.where(t != 0, xp.log(t), 0.0) + t / t - x


def _softplus(xp, z):
    return xp.log1p(xp.exp(-xp.abs(z))) + xp.maximum(z, 0)


def _rows(x):
    """(N, C, d...) as C-contiguous (N*d..., C) rows, and what ``_unrows`` needs to undo it."""
    if x.ndim == 2:
        return x, None
    xp = get_array_module(x)
    return xp.ascontiguousarray(xp.moveaxis(x, 1, -1).reshape(-1, x.shape[1])), x.shape


def _unrows(g2, shape):
    if shape is None:
        return g2
    return get_array_module(g2).moveaxis(g2.reshape((shape[0],) + shape[2:] + (shape[1],)), -1, 1)


# ---- argument handling ---------------------------------------------------------------------------

def _check_reduction(fn, reduction, extra=()):
    if reduction not in _REDUCTIONS + tuple(extra):
        raise ValueError(f"{fn}: reduction must be one of {_REDUCTIONS + tuple(extra)}, got {reduction!r}")


def legacy_reduction(size_average, reduce, reduction):
    """PyTorch's mapping of the deprecated ``size_average``/``reduce`` flags onto ``reduction``."""
    if size_average is None and reduce is None:
        return reduction
    warnings.warn("size_average and reduce args will be deprecated, please use reduction='"
                  f"{_legacy(size_average, reduce)}' instead.", UserWarning, stacklevel=3)
    return _legacy(size_average, reduce)


def _legacy(size_average, reduce):
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    if not reduce:
        return "none"
    return "mean" if size_average else "sum"


def _constant(x, like, fn):
    """An optional constant argument (class weights, pos_weight) as an array on ``like``'s device."""
    if x is None:
        return None
    arr = x.data if isinstance(x, Tensor) else get_array_module(like.data).asarray(x)
    backend.check_same_device(fn, [like.data, arr])
    return arr.astype(like.data.dtype, copy=False)


def _target_tensor(target, input):
    if isinstance(target, Tensor):
        if target.data.dtype != input.data.dtype and target.is_floating_point() and input.is_floating_point():
            from pyneural.functions import elementwise
            return elementwise.cast(target, input.data.dtype)
        return target
    return wrap(get_array_module(input.data).asarray(target, dtype=input.data.dtype))


def _broadcast_pair(fn, input, target, warn=True):
    """input and target expanded to one shape, warning like PyTorch when they differ."""
    a, b = input.data.shape, target.data.shape
    if a == b:
        return input, target
    try:
        shape = np.broadcast_shapes(a, b)
    except ValueError:
        raise ValueError(f"{fn}: input shape {a} and target shape {b} differ and do not broadcast") from None
    if warn:
        warnings.warn(f"Using a target size ({b}) that is different to the input size ({a}). This will likely lead "
                      f"to incorrect results due to broadcasting. Please ensure they have the same size.",
                      UserWarning, stacklevel=3)
    from pyneural.functions import shape as _shape
    return _shape.expand(input, shape), _shape.expand(target, shape)


def _class_labels(fn, target, input, ignore_index):
    """Integer class targets as a flat int64 array, checked against the number of classes, with
    the mask of the counted ones (None when none is ignored)."""
    xp = get_array_module(input.data)
    labels = target.data if isinstance(target, Tensor) else xp.asarray(target)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{fn}: target must hold integer class indices, got dtype {labels.dtype}")
    backend.check_same_device(fn, [input.data, labels])
    labels = xp.ascontiguousarray(labels.reshape(-1), dtype=np.int64)
    ignored = labels == ignore_index
    valid = None
    if ignored.any():
        valid = (~ignored).astype(input.data.dtype)
        labels = xp.where(ignored, 0, labels)
    classes = input.data.shape[1]
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
        raise IndexError(f"{fn}: target {bad} is out of bounds for {classes} classes")
    return labels, valid


def _batched(fn, input, target):
    """Unbatched (C,) input with a 0-d target (or (C,) probabilities) as a batch of one."""
    if input.data.ndim == 1:
        t = target if isinstance(target, Tensor) else wrap(get_array_module(input.data).asarray(target))
        return input.reshape(1, -1), t.reshape((1,) + t.data.shape), True
    if input.data.ndim < 2:
        raise ValueError(f"{fn}: input must be (C,), (N, C) or (N, C, d1, ...), got shape {input.data.shape}")
    return input, target, False


# ---- the losses ----------------------------------------------------------------------------------

def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean"):
    """Negative log-likelihood of log-probabilities (N, C[, d...]) at class indices (N[, d...]);
    ``weight`` (C,) weighs each class, targets equal to ``ignore_index`` count for nothing."""
    fn = "nll_loss"
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_reduction(fn, reduction)
    input, target, unbatched = _batched(fn, input, target)
    shape = input.data.shape
    labels_shape = target.data.shape if isinstance(target, Tensor) else np.shape(target)
    expected = (shape[0],) + shape[2:]
    if tuple(labels_shape) != expected:
        raise ValueError(f"{fn}: target has shape {tuple(labels_shape)}, expected {expected} for input {shape}")
    w = _constant(weight, input, fn)
    if w is not None and w.shape != (shape[1],):
        raise ValueError(f"{fn}: weight has shape {w.shape}, expected ({shape[1]},) for {shape[1]} classes")
    labels, valid = _class_labels(fn, target, input, ignore_index)
    out = NLLLoss(labels, w, valid, reduction, expected).apply(input)
    return out.reshape(()) if unbatched and reduction == "none" else out


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean",
                  label_smoothing=0.0):
    """Softmax cross-entropy of logits (N, C[, d...]) or (C,) against class indices (N[, d...])
    or class probabilities shaped like the input. ``weight`` weighs classes; ``label_smoothing``
    mixes the target with the uniform distribution; ``ignore_index`` (index targets only)."""
    fn = "cross_entropy"
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_reduction(fn, reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{fn}: label_smoothing must be in [0, 1], got {label_smoothing}")
    input, target, unbatched = _batched(fn, input, target)
    shape = input.data.shape
    if isinstance(target, Tensor) and target.is_floating_point() and target.data.shape == shape:
        if ignore_index >= 0:
            raise ValueError(f"{fn}: ignore_index is not supported for floating point (class-probability) targets")
        out = _cross_entropy_probabilities(input, target, weight, reduction, label_smoothing)
    else:
        labels_shape = target.data.shape if isinstance(target, Tensor) else np.shape(target)
        expected = (shape[0],) + shape[2:]
        if tuple(labels_shape) != expected:
            raise ValueError(f"{fn}: target has shape {tuple(labels_shape)}, expected {expected} (class indices) or "
                             f"{shape} (class probabilities) for input {shape}")
        if weight is None and input.data.size:
            labels, valid = _class_labels(fn, target, input, ignore_index)
            out = CrossEntropy(labels, reduction, float(label_smoothing), valid, expected).apply(input)
        else:
            out = _cross_entropy_weighted(input, target, weight, ignore_index, reduction, label_smoothing)
    return out.reshape(()) if unbatched and reduction == "none" else out


def _class_shape(weight, ndim):
    return weight.reshape((1, -1) + (1,) * (ndim - 2))


def _cross_entropy_probabilities(input, target, weight, reduction, label_smoothing):
    from pyneural.functions import activation, reduction as _red
    classes = input.data.shape[1]
    log_probs = activation.log_softmax(input, 1)
    if label_smoothing:
        target = target * (1.0 - label_smoothing) + label_smoothing / classes
    w = _constant(weight, input, "cross_entropy")
    terms = log_probs * target if w is None else log_probs * target * wrap(_class_shape(w, input.data.ndim))
    losses = -_red.sum(terms, 1)
    if reduction == "none":
        return losses
    total = _red.sum(losses)
    return total if reduction == "sum" else total * _mean_scale(1.0, input.data.size // max(classes, 1))


def _cross_entropy_weighted(input, target, weight, ignore_index, reduction, label_smoothing):
    """(1 - eps) nll(log_softmax) + eps/C * the smoothing term, PyTorch's composition."""
    from pyneural.functions import activation, reduction as _red
    log_probs = activation.log_softmax(input, 1)
    nll = nll_loss(log_probs, target, weight, None, ignore_index, None, reduction)
    if not label_smoothing:
        return nll
    classes = input.data.shape[1]
    w = _constant(weight, input, "cross_entropy")
    labels, valid = _class_labels("cross_entropy", target, input, ignore_index)
    terms = log_probs if w is None else log_probs * wrap(_class_shape(w, input.data.ndim))
    smooth = -_red.sum(terms, 1)
    if valid is not None:
        smooth = smooth * wrap(valid.reshape(smooth.data.shape))
    if reduction == "none":
        smooth_reduced = smooth
    elif reduction == "sum":
        smooth_reduced = _red.sum(smooth)
    else:
        xp = get_array_module(input.data)
        counted = xp.ones(labels.shape, dtype=input.data.dtype) if w is None else w[labels]
        if valid is not None:
            counted = counted * valid
        denominator = float(counted.sum())
        smooth_reduced = _red.sum(smooth) * _mean_scale(1.0, denominator)
    return nll * (1.0 - label_smoothing) + smooth_reduced * (label_smoothing / classes)


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """Mean (or summed, or elementwise) squared error."""
    fn = "mse_loss"
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_reduction(fn, reduction)
    input, target = _broadcast_pair(fn, input, _target_tensor(target, input))
    return MSE(reduction).apply(input, target)


def l1_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """Mean (or summed, or elementwise) absolute error; the gradient at a zero difference is 0."""
    fn = "l1_loss"
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_reduction(fn, reduction)
    input, target = _broadcast_pair(fn, input, _target_tensor(target, input))
    from pyneural.functions import elementwise, reduction as _red
    losses = elementwise.abs(input - target)
    if reduction == "none":
        return losses
    return _red.sum(losses) if reduction == "sum" else _red.mean(losses)


def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean", beta=1.0):
    fn = "smooth_l1_loss"
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_reduction(fn, reduction)
    if beta < 0:
        raise ValueError(f"{fn}: beta must be >= 0, got {beta}")
    input, target = _broadcast_pair(fn, input, _target_tensor(target, input))
    return SmoothL1Loss(reduction, float(beta)).apply(input, target)


def huber_loss(input, target, reduction="mean", delta=1.0):
    fn = "huber_loss"
    _check_reduction(fn, reduction)
    if delta <= 0:
        raise ValueError(f"{fn}: delta must be > 0, got {delta}")
    input, target = _broadcast_pair(fn, input, _target_tensor(target, input))
    return HuberLoss(reduction, float(delta)).apply(input, target)


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None, reduction="mean"):
    """BCE of probabilities ``input`` (in [0, 1]) against targets of the same shape."""
    fn = "binary_cross_entropy"
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_reduction(fn, reduction)
    target = _target_tensor(target, input)
    if target.data.shape != input.data.shape:
        raise ValueError(f"{fn}: using a target size ({target.data.shape}) that is different to the input size "
                         f"({input.data.shape}) is deprecated. Please ensure they have the same size.")
    x = input.data
    if x.size and (float(x.min()) < 0 or float(x.max()) > 1):
        raise RuntimeError(f"{fn}: all elements of input should be between 0 and 1")
    w = _constant(weight, input, fn)
    return BCE(reduction, _broadcast_weight(fn, w, x.shape)).apply(input, target)


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None, reduction="mean",
                                     pos_weight=None):
    """BCE of sigmoid(input) computed from the logits without overflow; ``pos_weight`` (broadcast
    along the last dim, one per class) weighs the positive term."""
    fn = "binary_cross_entropy_with_logits"
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_reduction(fn, reduction)
    target = _target_tensor(target, input)
    if target.data.shape != input.data.shape:
        raise ValueError(f"{fn}: target size ({target.data.shape}) must be the same as input size "
                         f"({input.data.shape})")
    w = _broadcast_weight(fn, _constant(weight, input, fn), input.data.shape)
    pw = _broadcast_weight(fn, _constant(pos_weight, input, fn), input.data.shape)
    return BCEWithLogits(reduction, w, pw).apply(input, target)


def _broadcast_weight(fn, w, shape):
    if w is None:
        return None
    try:
        if np.broadcast_shapes(w.shape, shape) == tuple(shape):
            return w
    except ValueError:
        pass
    raise ValueError(f"{fn}: weight of shape {w.shape} does not broadcast to the input's {tuple(shape)}")


def kl_div(input, target, size_average=None, reduce=None, reduction="mean", log_target=False):
    """KL divergence with ``input`` as log-probabilities; ``target`` probabilities, or
    log-probabilities with ``log_target``. 'batchmean' divides the sum by the batch size (the
    true KL); 'mean' divides by the number of elements, with PyTorch's warning."""
    fn = "kl_div"
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_reduction(fn, reduction, extra=("batchmean",))
    if reduction == "mean":
        warnings.warn("reduction: 'mean' divides the total loss by both the batch size and the support size."
                      "'batchmean' divides only by the batch size, and aligns with the KL div math definition."
                      "'mean' will be changed to behave the same as 'batchmean' in the next major release.",
                      UserWarning, stacklevel=2)
    input, target = _broadcast_pair(fn, input, _target_tensor(target, input), warn=False)
    batch = input.data.shape[0] if input.data.ndim else 1
    return KLDiv(reduction, bool(log_target), batch).apply(input, target)
