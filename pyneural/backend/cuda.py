"""The CUDA backend: CuPy arrays (or the emulated device's) and pyneural's own CUDA kernels
(``pyneural.cuda``), with the CPU backend's function signatures. Where a kernel covers only part of
what the CPU function takes (float64 inputs, label smoothing), the rest runs as whole-array code.

16-bit operands (autocast): GEMMs and convolutions run on the tensor cores (mma.sync; wgmma on sm_90a
for GEMMs) with fp32 accumulation and fp32 results; an fp32 operand met by a 16-bit one is rounded to
16 bits first, as on the CPU."""
import numpy as np

from pyneural import backend as _layout
from pyneural import backends
from pyneural.cuda import _backend
from pyneural.cuda import conv as _conv
from pyneural.cuda import conv_tc as _conv_tc
from pyneural.cuda import elementwise as _ew
from pyneural.cuda import gemm as _gemm
from pyneural.cuda import pool as _pool
from pyneural.cuda import softmax as _softmax
from pyneural.kernels import layernorm as _layernorm

name = "cuda"
_F32 = np.dtype(np.float32)


def require(dev):
    """RuntimeError unless CUDA device ``dev`` can run kernels here."""
    reason = _backend.unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"{dev} is not available: {reason}. Without a GPU, PYNEURAL_CUDA_EMULATE=1 gives an "
                           f"emulated CUDA device")
    count = _backend.cupy().cuda.runtime.getDeviceCount()
    if dev.index is not None and dev.index >= count:
        raise RuntimeError(f"{dev} is not available: this machine has {count} CUDA device(s)")


def from_host(a):
    cp = _backend.cupy()
    return cp.asarray(a if a.flags.c_contiguous else a.copy(order="C"))  # (ascontiguousarray makes 0-d 1-d)


def pinned_empty(shape, dtype):
    """An uninitialised host (numpy) array in page-locked memory, from which a copy to the device
    can run asynchronously on a stream; from CuPy's pinned memory pool (on the emulated device,
    host memory that its runtime reports as pinned)."""
    dtype = np.dtype(dtype)
    shape = tuple(int(s) for s in shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes == 0:
        return np.empty(shape, dtype)
    return np.ndarray(shape, dtype, buffer=_backend.cupy().cuda.alloc_pinned_memory(nbytes))


def is_pinned(a):
    """True when host array ``a`` lies in page-locked memory (asked of the CUDA runtime)."""
    if not isinstance(a, np.ndarray) or a.size == 0:
        return False
    runtime = _backend.cupy().cuda.runtime
    try:
        attributes = runtime.pointerGetAttributes(a.ctypes.data)
    except runtime.CUDARuntimeError:  # CUDA < 11 refuses pageable pointers instead of reporting them
        return False
    memory_type = getattr(attributes, "type", getattr(attributes, "memoryType", 0))
    return memory_type == 1  # cudaMemoryTypeHost


def _f32(*arrays):
    return all(a is None or a.dtype == _F32 for a in arrays)


def _contig(a):
    return a if a is None or a.flags.c_contiguous else _backend.cupy().ascontiguousarray(a)


_low_dtype = _layout.low_dtype
_widened = _layout.widened


def gemm(a, b, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, out=None):
    low = _low_dtype(a, b)
    if low is not None and a.size and b.size:  # tensor cores: 16-bit operands, fp32 accumulate and result
        from pyneural.cuda import tensor_core as _tc
        a, b = (_contig(x if x.dtype == low else x.astype(low)) for x in (a, b))
        return _tc.matmul_tc(a, b, trans_a=trans_a, trans_b=trans_b, alpha=alpha, beta=beta, out=out,
                             out_dtype=np.float32)
    if low is not None:
        a, b = _widened(low, a, b)
    if _f32(a, b, out) and a.size and b.size and backends.cuda.matmul.allow_tf32:  # tensor cores, tf32
        from pyneural.cuda import tensor_core as _tc
        return _tc.matmul_tc(_contig(a), _contig(b), trans_a=trans_a, trans_b=trans_b, alpha=alpha, beta=beta,
                             out=out, out_dtype=np.float32, kernel="mma")
    if _f32(a, b, out) and a.size and b.size:
        return _gemm.gemm(_contig(a), _contig(b), trans_a=trans_a, trans_b=trans_b, alpha=alpha, beta=beta, out=out)
    cp = _backend.cupy()
    r = alpha * cp.matmul(a.T if trans_a else a, b.T if trans_b else b)
    if out is None:
        return r
    out[...] = r + beta * out if beta else r
    return out


def mm(a, b, trans_a=False, trans_b=False):
    """op(a) @ op(b) for 2-D arrays (the SGEMM / tensor-core kernels, see gemm)."""
    return gemm(a, b, trans_a=trans_a, trans_b=trans_b)


def bias_relu(x, bias=None, relu=True, out=None):
    if _f32(x, bias, out) and _layout.is_channels_last(x) and (out is None or out is x):  # stays channels_last
        y = _ew.bias_act(_layout.nhwc(x), bias, relu=relu, axis=3, out=None if out is None else _layout.nhwc(out))
        return _layout.from_nhwc(y)
    if _f32(x, bias, out):
        return _ew.bias_act(_contig(x), bias, relu=relu, axis=1, out=out)
    cp = _backend.cupy()
    y = x if bias is None else x + bias.reshape((1, -1) + (1,) * (x.ndim - 2))
    y = cp.maximum(y, 0) if relu else y
    if out is None:
        return y
    out[...] = y
    return out


def relu_backward(dy, y, out=None):
    if _f32(dy, y, out) and out is None and _layout.is_channels_last(y):  # stays channels_last
        return _layout.from_nhwc(_ew.relu_backward(_layout.nhwc(dy), _layout.nhwc(y)))
    if _f32(dy, y, out):
        return _ew.relu_backward(_contig(dy), _contig(y), out=out)
    r = dy * (y > 0)
    if out is None:
        return r
    out[...] = r
    return out


def _rounded(low, *arrays):
    """``arrays`` in the 16-bit dtype ``low``, in their own layout (the callers make them contiguous)."""
    return tuple(a if a.dtype == low else a.astype(low) for a in arrays)


def _conv_layout(*arrays):
    """'NHWC' when the activation operand is channels_last (the NHWC kernels then read it in place), else 'NCHW'."""
    return "NHWC" if _layout.is_channels_last(arrays[0]) else "NCHW"


def _in(a, layout):
    return _layout.nhwc(a) if layout == "NHWC" else _contig(a)


def _nhwc_shape(shape, layout):
    n, c, h, w = shape
    return (n, h, w, c) if layout == "NHWC" else tuple(shape)


def _out(a, layout):
    return _layout.from_nhwc(a) if layout == "NHWC" else a


def conv2d_forward(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, relu=False):
    """NCHW or, for a channels_last x, the NHWC kernels (OHWI weights; the result channels_last)."""
    layout = _conv_layout(x)
    low = _low_dtype(x, w)
    if low is not None:  # tensor cores: 16-bit operands, fp32 accumulation and result
        x, w = _rounded(low, x, w)
        return _out(_conv_tc.conv2d_forward(_in(x, layout), _in(w, layout), bias, stride, padding, dilation, groups,
                                            relu=relu, layout=layout, out_dtype=_F32), layout)
    if bias is not None and bias.dtype != _F32:
        bias = bias.astype(_F32)
    return _out(_conv.conv2d_forward(_in(x, layout), _in(w, layout), bias, stride, padding, dilation, groups,
                                     relu=relu, layout=layout), layout)


def conv2d_backward_data(dy, w, x_shape, stride=1, padding=0, dilation=1, groups=1):
    layout = _conv_layout(dy)
    shape = _nhwc_shape(x_shape, layout)
    low = _low_dtype(dy, w)
    if low is not None:
        dy, w = _rounded(low, dy, w)
        return _out(_conv_tc.conv2d_backward_data(_in(dy, layout), _in(w, layout), shape, stride, padding, dilation,
                                                  groups, layout=layout, out_dtype=_F32), layout)
    return _out(_conv.conv2d_backward_data(_in(dy, layout), _in(w, layout), shape, stride, padding, dilation, groups,
                                           layout=layout), layout)


def conv2d_backward_weight(dy, x, w_shape, stride=1, padding=0, dilation=1, groups=1):
    layout = _conv_layout(x)
    shape = _nhwc_shape(w_shape, layout)
    low = _low_dtype(dy, x)
    if low is not None:
        dy, x = _rounded(low, dy, x)
        return _out(_conv_tc.conv2d_backward_weight(_in(dy, layout), _in(x, layout), shape, stride, padding,
                                                    dilation, groups, layout=layout, out_dtype=_F32), layout)
    return _out(_conv.conv2d_backward_weight(_in(dy, layout), _in(x, layout), shape, stride, padding, dilation, groups,
                                             layout=layout), layout)


def max_pool2d_forward(x, kernel_size, stride=None, padding=0):
    """``(y, argmax)``; a channels_last x runs the NHWC kernel and both results stay channels_last."""
    layout = _conv_layout(x)
    y, argmax = _pool.max_pool2d_forward(_in(x, layout), kernel_size, stride, padding, layout=layout)
    return _out(y, layout), _out(argmax, layout)


def max_pool2d_backward(dy, argmax, x_shape, kernel_size, stride, padding):
    layout = _conv_layout(argmax)  # the layout the forward ran in
    return _out(_pool.max_pool2d_backward(_in(dy, layout), _in(argmax, layout), _nhwc_shape(x_shape, layout),
                                          kernel_size, stride, padding, layout=layout), layout)


def avg_pool2d_forward(x, kernel_size, stride=None, padding=0, count_include_pad=True):
    layout = _conv_layout(x)
    return _out(_pool.avg_pool2d_forward(_in(x, layout), kernel_size, stride, padding, count_include_pad,
                                         layout=layout), layout)


def avg_pool2d_backward(dy, x_shape, kernel_size, stride=None, padding=0, count_include_pad=True):
    layout = _conv_layout(dy)
    return _out(_pool.avg_pool2d_backward(_in(dy, layout), _nhwc_shape(x_shape, layout), kernel_size, stride, padding,
                                          count_include_pad, layout=layout), layout)


def _log_softmax_rows(x):
    # the float32 kernel's job for other dtypes, as whole-array code
    cp = _backend.cupy()
    shifted = x - x.max(1, keepdims=True)
    return shifted - cp.log(cp.exp(shifted).sum(1, keepdims=True))


def softmax(x):
    if x.dtype != _F32:
        return _backend.cupy().exp(_log_softmax_rows(x))
    return _softmax.softmax(_contig(x))


def log_softmax(x):
    if x.dtype != _F32:
        return _log_softmax_rows(x)
    return _softmax.softmax(_contig(x), log=True)


def cross_entropy_forward(logits, labels, label_smoothing=0.0):
    """``(losses, saved)`` as on the CPU; ``saved`` is what cross_entropy_backward takes."""
    logits, labels = _contig(logits), _contig(labels)
    if label_smoothing == 0.0 and logits.dtype == _F32:
        losses, lse = _softmax.softmax_cross_entropy(logits, labels, validate=False)
        return losses, (logits, lse)
    cp = _backend.cupy()
    if logits.dtype == _F32:
        log_probs = _softmax.softmax(logits, log=True)
    else:
        shifted = logits - logits.max(1, keepdims=True)
        log_probs = shifted - cp.log(cp.exp(shifted).sum(1, keepdims=True))
    c = logits.shape[1]
    picked = cp.take_along_axis(log_probs, labels.reshape(-1, 1), 1).reshape(-1)
    losses = -(1.0 - label_smoothing) * picked - (label_smoothing / c) * log_probs.sum(1)
    return losses.astype(logits.dtype), cp.exp(log_probs)


def cross_entropy_backward(saved, labels, dlosses, label_smoothing=0.0):
    cp = _backend.cupy()
    labels = _contig(labels)
    if isinstance(saved, tuple):  # the kernel: dx = dloss * scale * (softmax - onehot), then per-row weights
        logits, lse = saved
        one = cp.ones((1,), dtype=_F32)
        g = _softmax.softmax_cross_entropy_backward(logits, labels, lse, one, scale=1.0)
        g *= dlosses.reshape(-1, 1).astype(_F32)
        return g
    probs = saved
    n, c = probs.shape
    target = cp.full((n, c), label_smoothing / c, dtype=probs.dtype)
    target[cp.arange(n), labels] += 1.0 - label_smoothing
    return (probs - target) * dlosses.reshape(-1, 1)


def norm_rows_forward(x, weight=None, bias=None, eps=1e-5, groups=1, inner=1):
    """LayerNorm / GroupNorm rows (see pyneural.kernels.layernorm) as whole-array code on the device."""
    return _layernorm.forward_arrays(_contig(x), weight, bias, eps, groups, inner)


def norm_rows_backward(dy, x, mean, rstd, weight=None, groups=1, inner=1, needs=(True, True, True)):
    return _layernorm.backward_arrays(_contig(dy), x, mean, rstd, weight, groups, inner, needs)


# ---- batch normalisation: csrc/cuda/batchnorm.cu (float32; NCHW or channels_last), else whole-array ------
def batch_norm_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps, relu):
    """``(y, saved)`` as on the CPU; a channels_last x runs the NHWC kernels and y stays channels_last."""
    from pyneural.cuda import batchnorm as _k
    if not (_f32(x, gamma, beta, running_mean, running_var) and (training or running_mean is not None)):
        return _batch_norm_forward_xp(x, gamma, beta, running_mean, running_var, training, momentum, eps, relu)
    cl = _layout.is_channels_last(x)
    xk = _layout.nhwc(x) if cl else _contig(x)
    if training:
        mean, var = _k.batch_stats(xk, running_mean, running_var, momentum=momentum, channels_last=cl)
    else:  # evaluation: the running estimates (copied: the module goes on updating its own)
        mean, var = running_mean.copy(), running_var.copy()
    y = _k.batch_norm_apply(xk, mean, var, gamma, beta, eps=eps, channels_last=cl)
    if relu:
        _ew.bias_act(y, None, relu=True, axis=1, out=y)
    saved = ("kernel", xk, mean, var, gamma, y if relu else None, training, cl, eps)
    return (_layout.from_nhwc(y) if cl else y), saved


def batch_norm_backward(saved, gy, needs):
    if saved[0] == "xp":
        return _batch_norm_backward_xp(saved, gy, needs)
    from pyneural.cuda import batchnorm as _k
    _, xk, mean, var, gamma, y, training, cl, eps = saved
    g = _layout.nhwc(gy) if cl else _contig(gy)
    if y is not None:
        g = _ew.relu_backward(g, y)
    if training:
        gx, ggamma, gbeta = _k.batch_norm_backward(xk, g, mean, var, gamma, eps=eps, channels_last=cl)
    else:  # fixed statistics: y is an affine map of x
        cp = _backend.cupy()
        axes = tuple(range(xk.ndim - 1)) if cl else (0,) + tuple(range(2, xk.ndim))
        bshape = (1,) * (xk.ndim - 1) + (-1,) if cl else (1, -1) + (1,) * (xk.ndim - 2)
        invstd = 1.0 / cp.sqrt(var + eps)
        gbeta = g.sum(axis=axes)
        ggamma = (g * (xk - mean.reshape(bshape)) * invstd.reshape(bshape)).sum(axis=axes)
        scale = invstd if gamma is None else gamma * invstd
        gx = g * scale.reshape(bshape) if needs[0] else None
    if gx is not None and cl:
        gx = _layout.from_nhwc(gx)
    return gx, ggamma, gbeta


def _batch_norm_forward_xp(x, gamma, beta, running_mean, running_var, training, momentum, eps, relu):
    """Any dtype (float64, 16-bit): the same maths in whole-array operations."""
    xp = _backend.cupy()
    axes = (0,) + tuple(range(2, x.ndim))
    bshape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    if training:
        mean = x.mean(axis=axes)
        xhat = x - mean.reshape(bshape)
        var = xp.square(xhat).mean(axis=axes)
        if running_mean is not None:
            _layout.update_running_stats(running_mean, running_var, mean, var, x.size // x.shape[1], momentum)
    else:
        xhat = x - running_mean.reshape(bshape).astype(x.dtype)
        var = running_var.astype(x.dtype)
    invstd = 1.0 / xp.sqrt(var + eps)
    xhat *= invstd.reshape(bshape)
    y = xhat if gamma is None else xhat * gamma.reshape(bshape)
    if beta is not None:
        y = y + beta.reshape(bshape)
    if relu:
        y = xp.maximum(y, 0)
    y = y.copy() if y is xhat else y
    return y, ("xp", xhat, invstd, gamma, axes, bshape, y if relu else None, training)


def _batch_norm_backward_xp(saved, gy, needs):
    _, xhat, invstd, gamma, axes, bshape, y, training = saved
    if y is not None:
        gy = gy * (y > 0)
    gbeta = gy.sum(axis=axes)
    ggamma = (gy * xhat).sum(axis=axes)
    gx = None
    if needs[0]:
        scale = (invstd if gamma is None else gamma * invstd).reshape(bshape)
        if training:
            count = gy.size // gy.shape[1]
            gx = scale * (gy - (gbeta / count).reshape(bshape) - xhat * (ggamma / count).reshape(bshape))
        else:
            gx = gy * scale
    return gx, ggamma, gbeta


# ---- dropout: csrc/cuda/dropout.cu (float32, Philox: the mask is recomputed, never stored) ---------------
def dropout_forward(x, p):
    if x.dtype != _F32:
        from pyneural.backend import cpu
        return cpu.dropout_forward(x, p)  # the mask as an array, drawn like the CPU's, on the device
    from pyneural import random as _random
    from pyneural.cuda import dropout as _kernel
    seed = int(_random.integers(0, 2**63 - 1, ()))
    return _kernel.dropout_forward(_contig(x), p, seed), (p, seed)


def dropout_backward(saved, gy):
    if not isinstance(saved, tuple):
        return gy * saved
    from pyneural.cuda import dropout as _kernel
    p, seed = saved
    return _kernel.dropout_backward(_contig(gy), p, seed)


# ---- embeddings: csrc/cuda/embedding.cu (grouped, deterministic backwards) --------------------------------
def embedding_forward(weight, flat, validate=True):
    from pyneural.cuda import embedding as _k
    return _k.embedding_forward(weight, flat, validate=validate)


def embedding_backward_dense(dy, flat, num_rows):
    from pyneural.cuda import embedding as _k
    return _k.embedding_backward(dy, flat, num_rows, deterministic=True, validate=False)


def embedding_backward_sparse(dy, flat, num_rows, skip_row=None):
    from pyneural.cuda import embedding as _k
    return _k.embedding_backward_sparse(dy, flat, num_rows, skip_row)


def embedding_dot_forward(a, ia, b, ib, bias_a, bias_b, offset, check=(True, True)):
    """Sides not ``check``-ed here are range-checked when backward groups them."""
    from pyneural.cuda import embedding as _k
    _k.check_index_ranges("embedding_dot", [(name, idx, table.shape[0]) for name, idx, table, wanted
                                            in (("ia", ia, a, check[0]), ("ib", ib, b, check[1])) if wanted])
    return _k.embedding_dot_forward(a, ia, b, ib, bias_a, bias_b, offset, validate=False)


def embedding_group_rows(indices, sizes):
    from pyneural.cuda import embedding as _k
    return _k.group_rows(indices, sizes) if indices else []


def embedding_dot_backward_rows(dy, idx, num_rows, groups, other_table, other_idx, want_bias, decay, own_table,
                                own_bias):
    from pyneural.cuda import embedding as _k
    grads, bias = _k.embedding_dot_backward_rows(dy, groups, other_table, other_idx, want_bias, decay, own_table,
                                                 own_bias)
    return groups.rows, grads, bias


# ---- optimizer steps -------------------------------------------------------------------------
def sgd_update(param, grad, buf, lr, momentum, dampening, weight_decay, nesterov, first_step):
    """One torch.optim.SGD step in place: one fused kernel over float32 arrays (the kernel runs over
    memory in order: every array in the parameter's layout, channels_last too), array ops otherwise."""
    flat = _layout.flat
    if param.dtype != _F32 or flat(param) is None:
        return _layout.sgd_step_reference(param, grad, buf, lr, momentum, dampening, weight_decay, nesterov,
                                          first_step)
    _ew.sgd_update(flat(param), flat(_layout.same_layout(grad, param)), lr, momentum, dampening, weight_decay,
                   nesterov, None if buf is None else flat(buf), first_step=first_step)


def adam_update(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps, weight_decay, decoupled):
    flat = _layout.flat
    if param.dtype != _F32 or flat(param) is None:
        return _layout.adam_step_reference(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps, weight_decay,
                                           decoupled)
    _ew.adam_update(flat(param), flat(_layout.same_layout(grad, param)), flat(exp_avg), flat(exp_avg_sq), step, lr,
                    betas, eps, weight_decay, decoupled=decoupled)


def sparse_sgd_update(param, rows, grads, lr, weight_decay=0.0, momentum=0.0, dampening=0.0, nesterov=False, buf=None):
    """SGD on the distinct ascending ``rows`` of an embedding table, one fused pass over them."""
    from pyneural.cuda import embedding as _k
    _k.sparse_sgd_update(param, rows, grads, lr, weight_decay, momentum, dampening, nesterov, buf)


def sparse_adam_update(param, rows, grads, exp_avg, exp_avg_sq, step, lr, betas, eps, weight_decay=0.0,
                       decoupled=False):
    """Lazy Adam on the distinct ascending ``rows`` of an embedding table (moments of other rows kept)."""
    from pyneural.cuda import embedding as _k
    _k.sparse_adam_update(param, rows, grads, exp_avg, exp_avg_sq, step, lr, betas, eps, weight_decay, decoupled)
