"""The CPU backend: numpy arrays and the C++ kernels (``pyneural.kernels``, over ``pyneural._C``).

16-bit operands (bfloat16, float16: autocast's lower-precision ops) multiply as 16-bit values with
float32 accumulation and give float32 results; a float32 operand met by a 16-bit one is rounded to
16 bits first, as tensor cores would see it. bf16 GEMMs and convolutions (forward and both
backwards) run on pyneural's bf16 kernels (AMX tiles or AVX512-BF16) where the CPU has one;
otherwise, and for float16, the 16-bit values are widened and the fp32 kernels accumulate them.
"""
import numpy as np

from pyneural import amp as _amp
from pyneural import backend as _layout
from pyneural.kernels import activation as _act
from pyneural.kernels import batchnorm as _bn
from pyneural.kernels import conv as _conv
from pyneural.kernels import conv_bf16 as _conv_bf16
from pyneural.kernels import embedding as _emb
from pyneural.kernels import gemm as _gemm
from pyneural.kernels import layernorm as _layernorm
from pyneural.kernels import pool as _pool
from pyneural.kernels import softmax as _softmax
from pyneural import _C

name = "cpu"

_F32 = np.dtype(np.float32)


_low_dtype = _layout.low_dtype
_widened = _layout.widened


def _f32(a):
    return a if a is None or a.dtype == _F32 else a.astype(_F32)


def _bf16_kernel():
    """Whether the bf16 GEMM kernel beats the fp32 one here: on AMX tiles or AVX512-BF16's
    vdpbf16ps (2-16x the fp32 FMA rate); its portable path does not."""
    from pyneural.kernels import bf16
    return bf16.gemm_isa() in ("amx", "avx512bf16")


def to_low(a, low):
    """``a`` rounded to the 16-bit dtype ``low`` (round to nearest even)."""
    return a if a.dtype == low else a.astype(low)


def gemm(a, b, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, out=None):
    low = _low_dtype(a, b)
    if low is None:
        return _gemm.gemm(a, b, trans_a=trans_a, trans_b=trans_b, alpha=alpha, beta=beta, out=out)
    if _amp.is_bfloat16(low) and _bf16_kernel() and (out is None or out.dtype == _F32):
        a, b = (np.ascontiguousarray(to_low(x, low)) for x in (a, b))
        return _gemm.gemm_bf16(a, b, trans_a=trans_a, trans_b=trans_b, alpha=alpha, beta=beta, out=out)
    a, b = _widened(low, a, b)
    return _gemm.gemm(a, b, trans_a=trans_a, trans_b=trans_b, alpha=alpha, beta=beta, out=out)


# ---- layouts: a channels_last activation runs the NHWC kernels in place, and results stay channels_last ----
def _layout_of(a, depthwise=False):
    """'NHWC' for a channels_last activation (the NHWC kernels read its memory in place), else 'NCHW'.
    Depthwise convolutions stay on their direct NCHW kernel (conv_depthwise.h), run on copies."""
    return "NHWC" if _layout.is_channels_last(a) and not depthwise else "NCHW"


def _depthwise(groups, channels):
    return 1 < groups == channels


def _in(a, layout):
    return _layout.nhwc(a) if layout == "NHWC" else np.ascontiguousarray(a)


def _out(a, layout):
    return _layout.from_nhwc(a) if layout == "NHWC" else a


def _stored_shape(shape, layout):
    n, c, h, w = shape
    return (n, h, w, c) if layout == "NHWC" else tuple(shape)


def _conv_operands(layout, *arrays):
    """The kernels' operands: NHWC (OHWI weights) or C-contiguous NCHW, 16-bit ones widened."""
    low = _low_dtype(*arrays)
    arrays = arrays if low is None else _widened(low, *arrays)
    return tuple(_in(a, layout) for a in arrays)


def _on_bf16_conv(*arrays):
    """Whether a conv of these operands runs on the bf16 convolution kernel: autocast's bf16 ones, where
    the bf16 GEMM beats the fp32 one. The kernel takes NCHW and channels_last as they are."""
    return _amp.is_bfloat16(_low_dtype(*arrays)) and _bf16_kernel()


def conv2d_forward(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, relu=False):
    if _on_bf16_conv(x, w):
        low = _amp.bfloat16
        return _conv_bf16.conv2d_bf16_forward(to_low(x, low), to_low(w, low), _f32(bias), stride, padding, dilation,
                                              groups, relu=relu)
    if _low_dtype(x, w, bias) is not None:
        bias = _f32(bias)
    layout = _layout_of(x, _depthwise(groups, x.shape[1]))
    x, w = _conv_operands(layout, x, w)
    return _out(_conv.conv2d_forward(x, w, bias, stride, padding, dilation, groups, relu=relu, layout=layout), layout)


def conv2d_backward_data(dy, w, x_shape, stride=1, padding=0, dilation=1, groups=1):
    if _on_bf16_conv(dy, w):  # the incoming fp32 gradient is rounded, as tensor cores would see it
        low = _amp.bfloat16
        return _conv_bf16.conv2d_bf16_backward_data(to_low(dy, low), to_low(w, low), x_shape, stride, padding,
                                                    dilation, groups)
    layout = _layout_of(dy, _depthwise(groups, x_shape[1]))
    dy, w = _conv_operands(layout, dy, w)
    return _out(_conv.conv2d_backward_data(dy, w, _stored_shape(x_shape, layout), stride, padding, dilation, groups,
                                           layout=layout), layout)


def conv2d_backward_weight(dy, x, w_shape, stride=1, padding=0, dilation=1, groups=1):
    if _on_bf16_conv(dy, x):
        low = _amp.bfloat16
        return _conv_bf16.conv2d_bf16_backward_weight(to_low(dy, low), to_low(x, low), w_shape, stride, padding,
                                                      dilation, groups)
    layout = _layout_of(x, _depthwise(groups, x.shape[1]))
    dy, x = _conv_operands(layout, dy, x)
    return _out(_conv.conv2d_backward_weight(dy, x, _stored_shape(w_shape, layout), stride, padding, dilation, groups,
                                             layout=layout), layout)


def bias_relu(x, bias=None, relu=True, out=None):
    if _layout.is_channels_last(x) and (out is None or out is x):  # the kernel is NCHW; the layout is kept
        if bias is None:  # elementwise: run over the memory in order
            y = _layout.from_nhwc(_act.bias_relu(_layout.flat(x)[None], None, relu=relu).reshape(_layout.nhwc(x).shape))
        else:
            y = _layout.same_layout(_act.bias_relu(np.ascontiguousarray(x), bias, relu=relu), x)
        if out is x:
            x[...] = y
            return x
        return y
    return _act.bias_relu(x, bias, relu=relu, out=out)


def relu_backward(dy, y, out=None):
    if _layout.is_channels_last(y) and out is None:  # elementwise in memory order, layout kept
        g = _act.relu_backward(_layout.nhwc(dy).reshape(-1), _layout.flat(y))
        return _layout.from_nhwc(g.reshape(_layout.nhwc(y).shape))
    return _act.relu_backward(dy, y, out=out)


def max_pool2d_forward(x, kernel_size, stride=None, padding=0):
    """``(y, argmax)``; a channels_last x runs the NHWC kernel and both results stay channels_last."""
    layout = _layout_of(x)
    y, argmax = _pool.max_pool2d_forward(_in(x, layout), kernel_size, stride, padding, layout=layout)
    return _out(y, layout), _out(argmax, layout)


def avg_pool2d_forward(x, kernel_size, stride=None, padding=0, count_include_pad=True):
    layout = _layout_of(x)
    return _out(_pool.avg_pool2d_forward(_in(x, layout), kernel_size, stride, padding, count_include_pad,
                                         layout=layout), layout)


def avg_pool2d_backward(dy, x_shape, kernel_size, stride=None, padding=0, count_include_pad=True):
    layout = _layout_of(dy)
    return _out(_pool.avg_pool2d_backward(_in(dy, layout), _stored_shape(x_shape, layout), kernel_size, stride,
                                          padding, count_include_pad, layout=layout), layout)


norm_rows_forward = _layernorm.norm_rows_forward          # LayerNorm / GroupNorm -> (y, mean, rstd)
norm_rows_backward = _layernorm.norm_rows_backward
softmax = _softmax.softmax
log_softmax = _softmax.log_softmax
cross_entropy_forward = _softmax.softmax_cross_entropy      # -> (losses, probs)
cross_entropy_backward = _softmax.softmax_cross_entropy_backward


def max_pool2d_backward(dy, argmax, x_shape, kernel_size, stride, padding):
    layout = _layout_of(argmax)  # the layout the forward ran in
    return _out(_pool.max_pool2d_backward(_in(dy, layout), _in(argmax, layout), _stored_shape(x_shape, layout),
                                          layout=layout), layout)


def from_host(a):
    return a


# ---- batch normalisation (channel axis 1; a channels_last x as the (N*H*W, C) matrix of its memory) ----
def _channel_rows(a, rows):
    """The kernels' view of ``a``: for ``rows`` (a channels_last x) the (N*H*W, C) matrix of the NHWC
    memory (a view when ``a`` is channels_last), else ``a`` C-contiguous."""
    return _layout.nhwc(a).reshape(-1, a.shape[1]) if rows else np.ascontiguousarray(a)


def _from_rows(a, like):
    """A result of the kernels in ``like``'s shape and layout (a view of the rows)."""
    if a.ndim == like.ndim:
        return a
    n, c, h, w = like.shape
    return _layout.from_nhwc(a.reshape(n, h, w, c))


def batch_norm_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps, relu):
    """``(y, saved)``: y = x normalised per channel (batch statistics in training, updating the running
    estimates in place; the running ones otherwise), then the affine map and an optional ReLU."""
    layout = x
    x = _channel_rows(x, _layout.is_channels_last(x))
    if training:
        mean, var = _bn.channel_stats(x)
        if running_mean is not None:
            _layout.update_running_stats(running_mean, running_var, mean, var, x.size // x.shape[1], momentum)
    else:
        mean, var = running_mean.astype(x.dtype), running_var.astype(x.dtype)
    invstd = (1.0 / np.sqrt(var + eps)).astype(x.dtype)
    scale = invstd if gamma is None else gamma * invstd
    shift = -mean * scale if beta is None else beta - mean * scale
    y = _bn.channel_affine(x, scale, shift, relu=relu)
    return _from_rows(y, layout), (x, mean, invstd, scale, y if relu else None, training)


def batch_norm_backward(saved, gy, needs):
    """``(gx, ggamma, gbeta)`` for the ``saved`` of batch_norm_forward; gx keeps gy's layout (channels_last
    when the forward ran on rows)."""
    x, mean, invstd, scale, y, training = saved
    layout = gy
    gy = _channel_rows(gy, x.ndim == 2 and gy.ndim == 4)
    if training:
        gx, gbeta, ggamma = _bn.batch_norm_backward(gy, x, mean, invstd, scale, y)
    else:  # fixed statistics: y is an affine map of x, so dx = g * scale; the same parameter sums
        g = gy if y is None else _act.relu_backward(gy, y)
        _, gbeta, ggamma = _bn.batch_norm_backward(g, x, mean, invstd, scale)
        gx = _bn.channel_affine(g, scale, np.zeros_like(scale)) if needs[0] else None
    if gx is not None:
        gx = _from_rows(gx, layout) if gx.ndim != layout.ndim else _layout.same_layout(gx, layout)
    return gx, ggamma, gbeta


# ---- 2-D products for the autograd ops ----------------------------------------------------------------
_GEMM_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _operand(a):
    """``a`` as a C-contiguous array plus a transpose flag, so a transposed view (``W.T``)
    reaches the GEMM as its contiguous original with trans set instead of being copied."""
    if a.flags.c_contiguous:
        return a, False
    if a.T.flags.c_contiguous:
        return a.T, True
    return np.ascontiguousarray(a), False


def mm(a, b, trans_a=False, trans_b=False):
    """op(a) @ op(b) for 2-D arrays, through the GEMM kernel when the dtypes allow (else numpy)."""
    if a.size and b.size and ((a.dtype == b.dtype and a.dtype in _GEMM_DTYPES) or _amp.is_low_precision(a.dtype)
                              or _amp.is_low_precision(b.dtype)):
        a, ta = _operand(a.T) if trans_a else _operand(a)
        b, tb = _operand(b.T) if trans_b else _operand(b)
        return gemm(a, b, trans_a=ta, trans_b=tb)
    return (a.T if trans_a else a) @ (b.T if trans_b else b)


# ---- dropout: a mask from pyneural's seeded generator ------------------------------------------------
def dropout_forward(x, p):
    """``(x * mask / (1 - p), mask)``; the mask (already scaled) is what backward needs."""
    from pyneural import random as _random
    xp = _layout.xp(x)
    if p >= 1.0:
        mask = xp.zeros_like(x)
    else:
        mask = (_random.random(x.shape, x.dtype) >= p).astype(x.dtype)
        if _layout.device_of(mask) != _layout.device_of(x):
            mask = _layout.to_device(mask, _layout.device_of(x))
        mask *= 1.0 / (1.0 - p)
    return x * mask, mask


def dropout_backward(mask, gy):
    return gy * mask


# ---- embeddings (pyneural/kernels/embedding.py: C++) ---------------------------------------------------
def embedding_forward(weight, flat, validate=True):
    return _emb.embedding_forward(weight, flat)  # checks the index range itself


def embedding_backward_dense(dy, flat, num_rows):
    return _emb.embedding_backward_dense(dy, flat, num_rows)


def embedding_backward_sparse(dy, flat, num_rows, skip_row=None):
    """``(rows, grads)``: distinct rows ascending and their summed gradients, ``skip_row`` left out."""
    rows, grads = _emb.embedding_backward_sparse(dy, flat, num_rows)
    if skip_row is None:
        return rows, grads
    keep = rows != skip_row
    return rows[keep], grads[keep]


def embedding_dot_forward(a, ia, b, ib, bias_a, bias_b, offset, check=(True, True)):
    return _emb.embedding_dot_forward(a, ia, b, ib, bias_a, bias_b,
                                      0.0 if offset is None else float(offset.reshape(-1)[0]))


def embedding_group_rows(indices, sizes):
    """The CPU kernel groups each side inside ``embedding_dot_backward_rows``: nothing to do ahead."""
    return [None] * len(indices)


def embedding_dot_backward_rows(dy, idx, num_rows, groups, other_table, other_idx, want_bias, decay, own_table,
                                own_bias):
    return _emb.embedding_dot_backward_rows(dy, idx, num_rows, other_table, other_idx, want_bias, decay, own_table,
                                            own_bias)


# ---- optimizer steps -------------------------------------------------------------------------
def _dense_f32(*arrays):
    """Flat float32 views of ``arrays`` in one memory order (None entries kept), or None when one
    is not float32 or not dense in the first array's layout."""
    views = tuple(None if a is None else _layout.flat(a) if a.dtype == _F32 else None for a in arrays)
    first = arrays[0]
    if any(v is None and a is not None for v, a in zip(views, arrays)):
        return None
    if any(a is not None and a.strides != first.strides for a in arrays):
        return None
    return views


def sgd_update(param, grad, buf, lr, momentum, dampening, weight_decay, nesterov, first_step):
    """One torch.optim.SGD step in place: one fused pass (csrc/cpu/optim_update.cpp) over float32
    arrays of the parameter's layout, array ops otherwise (see backend.sgd_step_reference)."""
    grad = _layout.same_layout(grad, param)
    views = _dense_f32(param, grad, buf)
    if views is None:
        return _layout.sgd_step_reference(param, grad, buf, lr, momentum, dampening, weight_decay, nesterov,
                                          first_step)
    p, g, b = views
    _C.sgd_update(p, g, b, lr, momentum, dampening, weight_decay, nesterov, first_step)


def adam_update(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps, weight_decay, decoupled):
    """One Adam / AdamW step in place, fused like ``sgd_update``."""
    grad = _layout.same_layout(grad, param)
    views = _dense_f32(param, grad, exp_avg, exp_avg_sq)
    if views is None:
        return _layout.adam_step_reference(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps, weight_decay,
                                           decoupled)
    b1, b2 = betas
    _C.adam_update(*views, lr, b1, b2, eps, weight_decay, decoupled, 1.0 - b1 ** step, 1.0 - b2 ** step)


def sparse_sgd_update(param, rows, grads, lr, weight_decay=0.0, momentum=0.0, dampening=0.0, nesterov=False, buf=None):
    """SGD on the distinct ascending ``rows`` of an embedding table, one fused pass over them."""
    _emb.sparse_sgd_update(param, rows, grads, lr, weight_decay, momentum, dampening, nesterov, buf)


def sparse_adam_update(param, rows, grads, exp_avg, exp_avg_sq, step, lr, betas, eps, weight_decay=0.0,
                       decoupled=False):
    """Lazy Adam on the distinct ascending ``rows`` of an embedding table (moments of other rows kept)."""
    _emb.sparse_adam_update(param, rows, grads, exp_avg, exp_avg_sq, step, lr, betas, eps, weight_decay, decoupled)
