"""The CPU backend: numpy arrays and the C++ kernels (``pyneural.kernels``, over ``pyneural._C``)."""
from pyneural.kernels import activation as _act
from pyneural.kernels import conv as _conv
from pyneural.kernels import gemm as _gemm
from pyneural.kernels import pool as _pool
from pyneural.kernels import softmax as _softmax

name = "cpu"

gemm = _gemm.gemm
bias_relu = _act.bias_relu
relu_backward = _act.relu_backward
conv2d_forward = _conv.conv2d_forward
conv2d_backward_data = _conv.conv2d_backward_data
conv2d_backward_weight = _conv.conv2d_backward_weight
max_pool2d_forward = _pool.max_pool2d_forward
avg_pool2d_forward = _pool.avg_pool2d_forward
avg_pool2d_backward = _pool.avg_pool2d_backward
softmax = _softmax.softmax
log_softmax = _softmax.log_softmax
cross_entropy_forward = _softmax.softmax_cross_entropy      # -> (losses, probs)
cross_entropy_backward = _softmax.softmax_cross_entropy_backward


def max_pool2d_backward(dy, argmax, x_shape, kernel_size, stride, padding):
    return _pool.max_pool2d_backward(dy, argmax, x_shape)


def from_host(a):
    return a
