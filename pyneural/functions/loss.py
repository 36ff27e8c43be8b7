"""Losses: cross_entropy (fused softmax + negative log-likelihood, class-index targets, label
smoothing, ignore_index) and mse_loss.

cross_entropy runs one kernel that returns per-sample losses and the softmax probabilities; the
probabilities are all backward keeps, and its kernel turns them into dlogits in one pass. Inputs
with extra dims (N, C, d1, ...) are moved to (N*d1*..., C) rows first.
"""
import numpy as np

from pyneural import backend
from pyneural.tensor import Function, Tensor, get_array_module

_REDUCTIONS = ("mean", "sum", "none")


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
        return total / self.count if self.count else total * np.nan

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
        total = sq.sum()
        return total if self.reduction == "sum" else total / sq.size

    def backward(self, gy):
        scale = 2.0 if self.reduction != "mean" else 2.0 / self.diff.size
        g = (gy * scale) * self.diff
        needs = self.needs_input_grad
        return (g if needs[0] else None), (-g if needs[1] else None)


def _check_reduction(fn, reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{fn}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def cross_entropy(input, target, reduction="mean", label_smoothing=0.0, ignore_index=-100):
    """Cross-entropy between ``input`` logits (N, C) or (N, C, d1, ...) and class indices
    ``target`` (N,) or (N, d1, ...)."""
    fn = "cross_entropy"
    _check_reduction(fn, reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{fn}: label_smoothing must be in [0, 1], got {label_smoothing}")
    labels = target.data if isinstance(target, Tensor) else np.asarray(target)
    shape = input.data.shape
    if len(shape) < 2:
        raise ValueError(f"{fn}: input must be (N, C) or (N, C, d1, ...) logits, got shape {shape}")
    expected = (shape[0],) + shape[2:]
    if labels.shape != expected:
        raise ValueError(f"{fn}: target has shape {labels.shape}, expected {expected} for input {shape}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{fn}: target must hold integer class indices, got dtype {labels.dtype}")
    labels = labels.reshape(-1)
    if labels.dtype != np.int64 or not labels.flags.c_contiguous:
        labels = np.ascontiguousarray(labels, dtype=np.int64)
    valid = None
    ignored = labels == ignore_index
    if ignored.any():
        valid = (~ignored).astype(input.data.dtype)
        labels = np.where(ignored, 0, labels)
    return CrossEntropy(labels, reduction, float(label_smoothing), valid, expected).apply(input)


def mse_loss(input, target, reduction="mean"):
    fn = "mse_loss"
    _check_reduction(fn, reduction)
    if not isinstance(target, Tensor):
        target = Tensor(np.asarray(target, dtype=input.data.dtype))
    if input.data.shape != target.data.shape:
        raise ValueError(f"{fn}: input shape {input.data.shape} and target shape {target.data.shape} differ")
    return MSE(reduction).apply(input, target)
