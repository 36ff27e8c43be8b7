"""pyneural.functional (import as F): the differentiable ops as plain functions, PyTorch-style.

Thin wrappers over pyneural.functions; each documents its arguments. The layer classes in
pyneural.nn call these.
"""
import numpy as np

from pyneural.functions import activation as _activation
from pyneural.functions import conv as _conv
from pyneural.functions import dropout as _dropout
from pyneural.functions import embedding as _embedding
from pyneural.functions import loss as _loss
from pyneural.functions import matmul as _matmul
from pyneural.functions import normalization as _norm
from pyneural.functions import pool as _pool
from pyneural.functions import shape as _shape
from pyneural.tensor import Tensor, wrap


def linear(input, weight, bias=None, activation=None):
    """``input @ weight.T + bias`` for input (..., in), weight (out, in), bias (out,).
    ``activation="relu"`` fuses a ReLU into the same kernel pass."""
    return _matmul.linear(input, weight, bias, activation)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, activation=None):
    """2-D convolution: input (N, C, H, W), weight (O, C/groups, kh, kw), bias (O,).
    stride, padding and dilation are ints or (h, w) pairs; ``activation="relu"`` fuses a ReLU."""
    return _conv.conv2d(input, weight, bias, stride, padding, dilation, groups, activation)


def max_pool2d(input, kernel_size, stride=None, padding=0):
    """Max over kernel_size windows of (N, C, H, W); stride defaults to kernel_size; padding
    counts as -inf."""
    return _pool.max_pool2d(input, kernel_size, stride, padding)


def avg_pool2d(input, kernel_size, stride=None, padding=0, count_include_pad=True):
    """Mean over kernel_size windows; with count_include_pad=False the zero padding is left out
    of each window's divisor."""
    return _pool.avg_pool2d(input, kernel_size, stride, padding, count_include_pad)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
               eps=1e-5, activation=None):
    """Normalise (N, C, ...) over every axis but the channel axis 1.

    training=True uses the batch statistics and updates ``running_mean``/``running_var`` (Tensors
    or arrays, updated in place; None skips the update) with ``momentum``; training=False uses
    the running statistics. ``activation="relu"`` fuses a ReLU into the same pass."""
    if activation not in (None, "relu"):
        raise ValueError(f"batch_norm: activation must be None or 'relu', got {activation!r}")
    shape = input.data.shape
    if len(shape) < 2:
        raise ValueError(f"batch_norm: expected input (N, C, ...), got shape {shape}")
    channels = shape[1]
    rm = running_mean.data if isinstance(running_mean, Tensor) else running_mean
    rv = running_var.data if isinstance(running_var, Tensor) else running_var
    if training:
        if input.data.size // channels <= 1:
            raise ValueError(f"batch_norm: expected more than 1 value per channel when training, "
                             f"got input of shape {shape}")
    elif rm is None or rv is None:
        raise ValueError("batch_norm: evaluation (training=False) needs running_mean and running_var")
    for name, t in (("running_mean", rm), ("running_var", rv), ("weight", weight), ("bias", bias)):
        s = t.shape if t is not None else None
        if s is not None and tuple(s) != (channels,):
            raise ValueError(f"batch_norm: {name} has shape {tuple(s)}, expected ({channels},) for input {shape}")
    if (rm is None) != (rv is None):
        raise ValueError("batch_norm: pass both running_mean and running_var, or neither")
    fn = _norm.BatchNorm(bool(training), rm, rv, float(momentum), float(eps), relu=activation == "relu")
    if weight is None and bias is not None:
        weight = wrap(np.ones(channels, dtype=input.data.dtype))
    if weight is None:
        return fn.apply(input)
    if bias is None:
        return fn.apply(input, weight)
    return fn.apply(input, weight, bias)


def dropout(input, p=0.5, training=True):
    """Zero elements with probability p and scale the rest by 1/(1-p) (training only)."""
    return _dropout.dropout(input, p, training)


def embedding(input, weight, padding_idx=None):
    """Rows of weight (num_embeddings, dim) picked by the integer indices in ``input``."""
    return _embedding.embedding(input, weight, padding_idx)


def cross_entropy(input, target, reduction="mean", label_smoothing=0.0, ignore_index=-100):
    """Softmax cross-entropy of logits (N, C[, d...]) against class indices (N[, d...]).
    reduction: "mean" (over non-ignored targets), "sum" or "none"."""
    return _loss.cross_entropy(input, target, reduction, label_smoothing, ignore_index)


def mse_loss(input, target, reduction="mean"):
    """Mean (or summed, or elementwise) squared error; shapes must match."""
    return _loss.mse_loss(input, target, reduction)


def relu(input):
    return _activation.relu(input)


def gelu(input, approximate="none"):
    """GELU; ``approximate="none"`` is the exact erf form (PyTorch's default), "tanh" the
    tanh approximation."""
    return _activation.gelu(input, approximate)


def tanh(input):
    return _activation.tanh(input)


def sigmoid(input):
    return _activation.sigmoid(input)


def softmax(input, dim):
    return _activation.softmax(input, dim)


def log_softmax(input, dim):
    return _activation.log_softmax(input, dim)


def flatten(input, start_dim=0, end_dim=-1):
    return _shape.flatten(input, start_dim, end_dim)
