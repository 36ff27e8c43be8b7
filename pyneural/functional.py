"""pyneural.functional (import as F): the differentiable ops as plain functions, PyTorch-style.

Thin wrappers over pyneural.functions; each documents its arguments. The layer classes in
pyneural.nn call these.
"""
import numpy as np

from pyneural.functions import activation as _activation
from pyneural.functions import conv as _conv
from pyneural.functions import dropout as _dropout
from pyneural.functions import embedding as _embedding
from pyneural.functions import indexing as _indexing
from pyneural.functions import loss as _loss
from pyneural.functions import matmul as _matmul
from pyneural.functions import normalization as _norm
from pyneural.functions import padding as _padding
from pyneural.functions import pool as _pool
from pyneural.functions import resample as _resample
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


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """1-D convolution: input (N, C, L), weight (O, C/groups, k), bias (O,); the 2-D kernels at height 1."""
    return _conv.conv1d(input, weight, bias, stride, padding, dilation, groups)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """Transposed 2-D convolution (conv2d's adjoint): input (N, C_in, H, W), weight (C_in, C_out/groups,
    kh, kw), bias (C_out,); output side (H-1)*stride - 2*padding + dilation*(kh-1) + output_padding + 1."""
    return _conv.conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """Max over kernel_size windows of (N, C, H, W) with taps ``dilation`` apart; stride defaults to
    kernel_size; padding never wins. ``ceil_mode`` keeps a last partial window (PyTorch's rule: it must
    start inside the input or the left padding); ``return_indices`` also returns each max's flat
    index h*W + w."""
    return _pool.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """Mean over kernel_size windows; with count_include_pad=False the zero padding is left out
    of each window's divisor, and ``divisor_override`` replaces the divisor. ``ceil_mode`` as in
    max_pool2d."""
    return _pool.avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def adaptive_avg_pool2d(input, output_size):
    """Mean over the windows that split (H, W) into ``output_size`` (int, pair, None keeps a side):
    output i of n covers input [floor(i*H/n), ceil((i+1)*H/n))."""
    return _pool.adaptive_avg_pool2d(input, output_size)


def adaptive_max_pool2d(input, output_size, return_indices=False):
    """Max over the windows of adaptive_avg_pool2d."""
    return _pool.adaptive_max_pool2d(input, output_size, return_indices)


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None, recompute_scale_factor=None):
    """Resize (N, C, H, W) to ``size`` or by ``scale_factor`` with mode 'nearest' or 'bilinear'
    (``align_corners`` False by default), sampling as PyTorch does."""
    return _resample.interpolate(input, size, scale_factor, mode, align_corners, recompute_scale_factor)


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


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise over the trailing ``normalized_shape`` dimensions with each sample's own mean and
    biased variance, then ``* weight + bias`` (both of ``normalized_shape``, or None)."""
    return _norm.layer_norm(input, normalized_shape, weight, bias, eps)


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Normalise (N, C, *) over groups of C/num_groups channels per sample, then ``* weight[c] +
    bias[c]``."""
    return _norm.group_norm(input, num_groups, weight, bias, eps)


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True,
                  momentum=0.1, eps=1e-5):
    """Normalise (N, C, *) over each sample's own channel planes, then ``* weight[c] + bias[c]``:
    group_norm with one channel per group. Running statistics are not supported (PyTorch's
    default, and what style-transfer networks use): pass none and ``use_input_stats=True``."""
    if running_mean is not None or running_var is not None or not use_input_stats:
        raise ValueError("instance_norm: running statistics (running_mean/running_var, use_input_stats=False) "
                         "are not supported; InstanceNorm normalises each instance by its own statistics here")
    if input.data.ndim < 3:
        raise ValueError(f"instance_norm: expected an input (N, C, *) of at least 3 dimensions, got shape "
                         f"{tuple(input.data.shape)}")
    return _norm.group_norm(input, input.data.shape[1], weight, bias, eps)


def dropout(input, p=0.5, training=True):
    """Zero elements with probability p and scale the rest by 1/(1-p) (training only)."""
    return _dropout.dropout(input, p, training)


def one_hot(tensor, num_classes=-1):
    """int64 one-hot encoding of an int64 tensor, a last dimension of ``num_classes`` (-1: inferred)."""
    return _indexing.one_hot(tensor, num_classes)


def pixel_shuffle(input, upscale_factor):
    """(*, C r^2, H, W) -> (*, C, H r, W r) (sub-pixel convolution's rearrangement)."""
    return _shape.pixel_shuffle(input, upscale_factor)


def pixel_unshuffle(input, downscale_factor):
    return _shape.pixel_unshuffle(input, downscale_factor)


def embedding(input, weight, padding_idx=None):
    """Rows of weight (num_embeddings, dim) picked by the integer indices in ``input``."""
    return _embedding.embedding(input, weight, padding_idx)


# ---- losses (PyTorch's argument order; size_average/reduce are the deprecated flags) ----------

def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean",
                  label_smoothing=0.0):
    """Softmax cross-entropy of logits (N, C[, d...]) or (C,) against class indices (N[, d...])
    or class probabilities shaped like the input. ``weight`` (C,) weighs classes (a weighted mean
    divides by the targets' weights); targets equal to ``ignore_index`` count for nothing;
    ``label_smoothing`` mixes the target with the uniform distribution."""
    return _loss.cross_entropy(input, target, weight, size_average, ignore_index, reduce, reduction, label_smoothing)


def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean"):
    """Negative log-likelihood of log-probabilities (N, C[, d...]) at class indices (N[, d...])."""
    return _loss.nll_loss(input, target, weight, size_average, ignore_index, reduce, reduction)


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """Mean (or summed, or elementwise) squared error; a target of another shape broadcasts, with
    PyTorch's warning."""
    return _loss.mse_loss(input, target, size_average, reduce, reduction)


def l1_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """Mean (or summed, or elementwise) absolute error."""
    return _loss.l1_loss(input, target, size_average, reduce, reduction)


def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean", beta=1.0):
    """Squared error / (2 beta) below ``beta``, absolute error - beta/2 above (beta=0: L1)."""
    return _loss.smooth_l1_loss(input, target, size_average, reduce, reduction, beta)


def huber_loss(input, target, reduction="mean", delta=1.0):
    """Squared error / 2 below ``delta``, delta * (absolute error - delta/2) above."""
    return _loss.huber_loss(input, target, reduction, delta)


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None, reduction="mean"):
    """BCE of probabilities in [0, 1]; each log is floored at -100 as in PyTorch."""
    return _loss.binary_cross_entropy(input, target, weight, size_average, reduce, reduction)


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None, reduction="mean",
                                     pos_weight=None):
    """BCE of sigmoid(input), computed stably from the logits; ``pos_weight`` weighs positives per class."""
    return _loss.binary_cross_entropy_with_logits(input, target, weight, size_average, reduce, reduction, pos_weight)


def kl_div(input, target, size_average=None, reduce=None, reduction="mean", log_target=False):
    """KL divergence of ``target`` from log-probabilities ``input``; use reduction='batchmean'."""
    return _loss.kl_div(input, target, size_average, reduce, reduction, log_target)


# ---- activations ------------------------------------------------------------------------------

def relu(input, inplace=False):
    return _activation.relu(input, inplace)


def relu6(input, inplace=False):
    return _activation.relu6(input, inplace)


def leaky_relu(input, negative_slope=0.01, inplace=False):
    """x for x > 0, negative_slope * x otherwise."""
    return _activation.leaky_relu(input, negative_slope, inplace)


def elu(input, alpha=1.0, inplace=False):
    """x for x > 0, alpha * (exp(x) - 1) otherwise."""
    return _activation.elu(input, alpha, inplace)


def selu(input, inplace=False):
    """scale * elu(x, alpha) with the self-normalising constants."""
    return _activation.selu(input, inplace)


def silu(input, inplace=False):
    """x * sigmoid(x) (swish)."""
    return _activation.silu(input, inplace)


def softplus(input, beta=1.0, threshold=20.0):
    """log(1 + exp(beta x)) / beta, linear where beta x > threshold."""
    return _activation.softplus(input, beta, threshold)


def hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False):
    """x clipped to [min_val, max_val]."""
    return _activation.hardtanh(input, min_val, max_val, inplace)


def hardsigmoid(input, inplace=False):
    """relu6(x + 3) / 6."""
    return _activation.hardsigmoid(input, inplace)


def hardswish(input, inplace=False):
    """x * relu6(x + 3) / 6."""
    return _activation.hardswish(input, inplace)


def mish(input, inplace=False):
    """x * tanh(softplus(x))."""
    return _activation.mish(input, inplace)


def gelu(input, approximate="none"):
    """GELU; ``approximate="none"`` is the exact erf form (PyTorch's default), "tanh" the
    tanh approximation."""
    return _activation.gelu(input, approximate)


def tanh(input):
    return _activation.tanh(input)


def sigmoid(input):
    return _activation.sigmoid(input)


def softmax(input, dim=None, _stacklevel=3, dtype=None):
    """exp(x) / sum(exp(x)) along ``dim`` (computed in ``dtype`` when given)."""
    return _activation.softmax(input, dim, dtype)


def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    return _activation.log_softmax(input, dim, dtype)


def pad(input, pad, mode="constant", value=None):
    """Pad (or crop, with negative amounts in constant mode) by ``pad`` = (left, right, top,
    bottom, ...) from the last dim backwards; mode "constant" (``value``), "reflect",
    "replicate" or "circular"."""
    return _padding.pad(input, pad, mode, value)


def flatten(input, start_dim=0, end_dim=-1):
    return _shape.flatten(input, start_dim, end_dim)
