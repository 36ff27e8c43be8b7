"""pyneural: a small deep-learning library built on hand-written kernels."""
__version__ = "0.1.0"

from pyneural import _allocator  # noqa: E402

_allocator.tune()  # reuse freed large arrays instead of page-faulting them in every step

from pyneural import _threads  # noqa: E402

_set_for_runtime = _threads.prepare()  # before _C loads libgomp, which reads its environment once
try:
    from pyneural import _C  # noqa: F401  (the compiled CPU kernels; everything below needs them)
except ImportError as _error:
    import os as _os
    raise ImportError(
        f"pyneural's compiled extension pyneural._C could not be imported from {_os.path.dirname(__file__)} "
        f"({_error}). If that is a source checkout, install it with 'pip install .' and run from another "
        f"directory, or build in place (see README, 'Development').") from _error
finally:
    _threads.restore(_set_for_runtime)
_C.set_team_load_sampling(_threads.helpers_sleep())

from pyneural.tensor import (Tensor, enable_grad, get_array_module, is_grad_enabled, no_grad,
                             set_grad_enabled)
from pyneural.creation import (arange, as_tensor, bool_, empty, empty_like, eye, float16, float32, float64,
                               from_numpy, full, full_like, int32, int64, linspace, ones, ones_like, rand,
                               rand_like, randint, randn, randn_like, randperm, tensor, uint8, zeros,
                               zeros_like)
from pyneural.random import Generator, get_rng_state, initial_seed, manual_seed, seed, set_rng_state
from pyneural.functions.activation import relu, sigmoid, softmax, log_softmax, tanh
from pyneural.functions.arithmetic import add, div, mul, neg, pow, sub
from pyneural.functions.elementwise import abs, clamp, exp, log, sqrt, where
from pyneural.functions.matmul import matmul
from pyneural.functions.reduction import argmax, argmin, max, mean, min, sum, var
from pyneural.functions.shape import (cat, flatten, permute, reshape, squeeze, stack, transpose,
                                      unsqueeze)
from pyneural.functions.activation import selu
from pyneural.functions.arithmetic import (bitwise_not, eq, ge, gt, le, logical_and, logical_not, logical_or,
                                           logical_xor, lt, maximum, minimum, ne, promote_types, result_type)
from pyneural.functions.elementwise import clip, cos, nonzero, sin, tril, triu
from pyneural.functions.indexing import gather, index_select, masked_fill, scatter, scatter_add
from pyneural.functions.matmul import bmm, dot, mm, mv, outer
from pyneural.functions.reduction import all, any, cumsum, logsumexp, norm, prod, std
from pyneural.functions.shape import chunk, flip, narrow, roll, split
from pyneural.functions.sorting import argsort, sort, topk
from pyneural.gradcheck import gradcheck
from pyneural.checkpoint import load, save
from pyneural.interop import from_dlpack, load_safetensors, save_safetensors
from pyneural import random, functional, nn, optim, data, datasets, utils  # noqa: E402
from pyneural.backend import channels_last, contiguous_format, device, preserve_format  # noqa: E402
from pyneural import cuda, accelerator, backends  # noqa: E402
from pyneural.backends import get_float32_matmul_precision, set_float32_matmul_precision  # noqa: E402

from pyneural import amp  # noqa: E402
from pyneural.amp import autocast, get_autocast_dtype, is_autocast_enabled  # noqa: E402

long = int64
bool = bool_
float = float32
double = float64
half = float16


def __getattr__(name):
    # pyneural.bfloat16 is looked up on first use, which imports ml_dtypes (amp.bfloat16_dtype).
    if name == "bfloat16":
        return amp.bfloat16_dtype()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
