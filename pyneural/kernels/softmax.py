"""Softmax, log-softmax and the fused softmax cross-entropy, along the last axis.

All are the numerically stable forms (the row max is subtracted before any exp; log-softmax and
the loss use log-sum-exp, never log of a probability). float32 runs the C++ kernels in
``pyneural._C`` (csrc/cpu/softmax.cpp) on a 2-D view of the rows, with the GIL released; float64
runs plain numpy (the gradient-check and reference path).
"""
import numpy as np

from pyneural import _C
from pyneural.kernels._checks import check_array, check_output, check_same_dtype


def _rows_view(x):
    return x.reshape(-1, x.shape[-1])


def _check_x(fn, x):
    check_array(fn, "x", x)
    if x.ndim < 1:
        raise ValueError(f"{fn}: x must have at least 1 dimension, got a scalar array")


def softmax(x):
    """Return ``exp(x) / sum(exp(x))`` along the last axis of ``x`` (any ndim >= 1)."""
    _check_x("softmax", x)
    y = np.empty_like(x)
    if x.dtype == np.float32:
        _C.softmax_rows(_rows_view(x), _rows_view(y))
        return y
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    np.divide(e, e.sum(axis=-1, keepdims=True), out=y)
    return y


def log_softmax(x):
    """Return ``x - log(sum(exp(x)))`` along the last axis of ``x`` (any ndim >= 1)."""
    _check_x("log_softmax", x)
    y = np.empty_like(x)
    if x.dtype == np.float32:
        _C.log_softmax_rows(_rows_view(x), _rows_view(y))
        return y
    d = x - x.max(axis=-1, keepdims=True)
    np.subtract(d, np.log(np.exp(d).sum(axis=-1, keepdims=True)), out=y)
    return y


def _check_labels(fn, labels, n, c):
    check_array(fn, "labels", labels, ndim=1, dtypes=(np.int64,))
    if labels.shape[0] != n:
        raise ValueError(f"{fn}: labels has shape {labels.shape} but there are {n} rows; expected ({n},)")
    lo, hi = labels.min(), labels.max()
    if lo < 0 or hi >= c:
        i = int(np.flatnonzero((labels < 0) | (labels >= c))[0])
        raise ValueError(f"{fn}: labels[{i}] = {labels[i]} is out of range for C={c} classes "
                         f"(expected 0 <= label < {c})")


def _check_smoothing(fn, label_smoothing):
    e = float(label_smoothing)
    if not 0.0 <= e <= 1.0:
        raise ValueError(f"{fn}: label_smoothing must be in [0, 1], got {label_smoothing!r}")
    return e


def softmax_cross_entropy(logits, labels, label_smoothing=0.0):
    """Per-sample cross-entropy of ``softmax(logits)`` against integer ``labels``.

    ``logits`` is (N, C) float, ``labels`` int64 (N,) with each label in [0, C). With smoothing e,
    ``losses[n] = -(1-e) log p[n, y_n] - (e/C) sum_c log p[n, c]``. Returns ``(losses, probs)``:
    losses (N,) and the softmax probs (N, C), which the backward needs.
    """
    fn = "softmax_cross_entropy"
    check_array(fn, "logits", logits, ndim=2)
    n, c = logits.shape
    _check_labels(fn, labels, n, c)
    e = _check_smoothing(fn, label_smoothing)
    losses = np.empty(n, dtype=logits.dtype)
    probs = np.empty_like(logits)
    if logits.dtype == np.float32:
        _C.softmax_xent_forward(logits, labels, losses, probs, e)
        return losses, probs

    d = logits - logits.max(axis=1, keepdims=True)
    log_probs = d - np.log(np.exp(d).sum(axis=1, keepdims=True))
    np.exp(log_probs, out=probs)
    losses[:] = -(1.0 - e) * log_probs[np.arange(n), labels] - (e / c) * log_probs.sum(axis=1)
    return losses, probs


def softmax_cross_entropy_backward(probs, labels, dlosses, label_smoothing=0.0, out=None):
    """Gradient of ``sum(dlosses * losses)`` with respect to the logits.

    ``dlogits[n] = dlosses[n] * (probs[n] - ((1-e) onehot(labels[n]) + e/C))``. ``out`` (N, C, the
    dtype of ``probs``) receives it and may be ``probs`` itself.
    """
    fn = "softmax_cross_entropy_backward"
    check_array(fn, "probs", probs, ndim=2)
    n, c = probs.shape
    _check_labels(fn, labels, n, c)
    check_array(fn, "dlosses", dlosses, ndim=1)
    check_same_dtype(fn, probs=probs, dlosses=dlosses)
    if dlosses.shape[0] != n:
        raise ValueError(f"{fn}: dlosses has shape {dlosses.shape} but probs {probs.shape} has {n} rows; "
                         f"expected ({n},)")
    e = _check_smoothing(fn, label_smoothing)
    if out is None:
        out = np.empty_like(probs)
    else:
        check_output(fn, "out", out, probs.shape, probs.dtype)
        for name, a in (("probs", probs), ("labels", labels), ("dlosses", dlosses)):
            same = a is probs and out.__array_interface__["data"][0] == a.__array_interface__["data"][0]
            if np.may_share_memory(out, a) and not same:
                raise ValueError(f"{fn}: out (shape {out.shape}) overlaps {name} (shape {a.shape}); "
                                 f"pass probs itself for in-place, or a separate array")
    if probs.dtype == np.float32:
        _C.softmax_xent_backward(probs, labels, dlosses, out, e)
        return out

    target = np.full((n, c), e / c)
    target[np.arange(n), labels] += 1.0 - e
    np.multiply(dlosses[:, None], probs - target, out=out)
    return out
