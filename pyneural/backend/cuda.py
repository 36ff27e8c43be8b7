"""The CUDA backend: CuPy arrays (or the emulated device's) and pyneural's own CUDA kernels
(``pyneural.cuda``), with the CPU backend's function signatures. Where a kernel covers only part of
what the CPU function takes (float64 inputs, label smoothing), the rest runs as whole-array code.

16-bit operands (autocast): GEMMs and convolutions run on the tensor cores (mma.sync; wgmma on sm_90a
for GEMMs) with fp32 accumulation and fp32 results; an fp32 operand met by a 16-bit one is rounded to
16 bits first, as on the CPU."""
import numpy as np

from pyneural import amp as _amp
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


def _low_dtype(*arrays):
    for a in arrays:
        if a is not None and _amp.is_low_precision(a.dtype):
            return a.dtype
    return None


def _widened(low, *arrays):
    """Rounded to 16-bit ``low``, held as float32 (for the fp32 kernels)."""
    return tuple(None if a is None else (a if a.dtype == low else a.astype(low)).astype(_F32) for a in arrays)


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


def bias_relu(x, bias=None, relu=True, out=None):
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
    if _f32(dy, y, out):
        return _ew.relu_backward(_contig(dy), _contig(y), out=out)
    r = dy * (y > 0)
    if out is None:
        return r
    out[...] = r
    return out


def _rounded(low, *arrays):
    """``arrays`` in the 16-bit dtype ``low``, C-contiguous (for the tensor-core kernels)."""
    return tuple(_contig(a if a.dtype == low else a.astype(low)) for a in arrays)


def conv2d_forward(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, relu=False):
    low = _low_dtype(x, w)
    if low is not None:  # tensor cores: 16-bit operands, fp32 accumulation and result
        x, w = _rounded(low, x, w)
        return _conv_tc.conv2d_forward(x, w, bias, stride, padding, dilation, groups, relu=relu, out_dtype=_F32)
    if bias is not None and bias.dtype != _F32:
        bias = bias.astype(_F32)
    return _conv.conv2d_forward(_contig(x), _contig(w), bias, stride, padding, dilation, groups, relu=relu)


def conv2d_backward_data(dy, w, x_shape, stride=1, padding=0, dilation=1, groups=1):
    low = _low_dtype(dy, w)
    if low is not None:
        dy, w = _rounded(low, dy, w)
        return _conv_tc.conv2d_backward_data(dy, w, x_shape, stride, padding, dilation, groups, out_dtype=_F32)
    return _conv.conv2d_backward_data(_contig(dy), _contig(w), x_shape, stride, padding, dilation, groups)


def conv2d_backward_weight(dy, x, w_shape, stride=1, padding=0, dilation=1, groups=1):
    low = _low_dtype(dy, x)
    if low is not None:
        dy, x = _rounded(low, dy, x)
        return _conv_tc.conv2d_backward_weight(dy, x, w_shape, stride, padding, dilation, groups, out_dtype=_F32)
    return _conv.conv2d_backward_weight(_contig(dy), _contig(x), w_shape, stride, padding, dilation, groups)


def max_pool2d_forward(x, kernel_size, stride=None, padding=0):
    return _pool.max_pool2d_forward(_contig(x), kernel_size, stride, padding)


def max_pool2d_backward(dy, argmax, x_shape, kernel_size, stride, padding):
    return _pool.max_pool2d_backward(_contig(dy), argmax, x_shape, kernel_size, stride, padding)


def avg_pool2d_forward(x, kernel_size, stride=None, padding=0, count_include_pad=True):
    return _pool.avg_pool2d_forward(_contig(x), kernel_size, stride, padding, count_include_pad)


def avg_pool2d_backward(dy, x_shape, kernel_size, stride=None, padding=0, count_include_pad=True):
    return _pool.avg_pool2d_backward(_contig(dy), x_shape, kernel_size, stride, padding, count_include_pad)


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
