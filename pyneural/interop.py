"""Exchange with other libraries: DLPack for arrays in memory, safetensors for weights on disk.

DLPack (``pn.from_dlpack``, and ``Tensor.__dlpack__`` the other way) hands over a pointer, its
shape, strides and dtype: no bytes are copied, so the two sides see the same memory and a write
on one side shows on the other. CPU arrays come in as numpy arrays, CUDA arrays as CuPy arrays.

safetensors (``pn.save_safetensors`` / ``pn.load_safetensors``) is a JSON header (names, dtypes,
shapes, byte offsets) followed by the raw little-endian bytes: no pickles, readable by
``safetensors.torch.load_file``. pyneural's state_dict already uses PyTorch's names and layouts
(Linear weight (out, in), Conv2d weight OIHW, BatchNorm ``running_mean`` / ``running_var`` /
``num_batches_tracked`` as an int64 scalar, Embedding (num, dim)), so a state_dict is written as
it is, and weights move between a pyneural model and its PyTorch twin (``bench/torch_models.py``)
with ``load_state_dict`` on either side. Should a layer ever differ, ``_to_torch_names`` and
``_from_torch_names`` are the one place to map it.
"""
import os
from collections import OrderedDict

import numpy as np

from pyneural import backend
from pyneural.checkpoint import CheckpointError, write_atomically
from pyneural.nn.module import Module
from pyneural.tensor import Tensor, wrap

_DLPACK_CPU, _DLPACK_CUDA, _DLPACK_CUDA_MANAGED = 1, 2, 13  # DLPack device types


def from_dlpack(x):
    """A Tensor sharing memory with ``x``: a numpy, CuPy or PyTorch array, a pyneural Tensor, or
    anything else with ``__dlpack__``. No copy is made (DLPack's contract); the result is a leaf
    that does not require grad. CPU memory becomes a numpy-backed tensor, CUDA memory a CuPy one."""
    if isinstance(x, Tensor):
        if x.requires_grad:
            raise BufferError("from_dlpack: can't share a tensor that requires grad; use tensor.detach()")
        return wrap(x.data)
    if isinstance(x, np.ndarray) or backend.is_device_array(x):
        return wrap(x)
    if not hasattr(x, "__dlpack__") or not hasattr(x, "__dlpack_device__"):
        hint = (" (a DLPack capsule from to_dlpack(): pass the array itself instead)"
                if type(x).__name__ == "PyCapsule" else "")
        raise TypeError(f"from_dlpack: expected an array with __dlpack__ and __dlpack_device__ (numpy, CuPy, "
                        f"torch.Tensor), got {type(x).__name__}{hint}")
    kind, index = x.__dlpack_device__()
    if kind == _DLPACK_CPU:
        return wrap(np.from_dlpack(x))
    if kind in (_DLPACK_CUDA, _DLPACK_CUDA_MANAGED):
        from pyneural.cuda import _backend, emulator
        if emulator.enabled():
            raise RuntimeError(f"from_dlpack: {type(x).__name__} lives on CUDA device {index}, but pyneural runs "
                               f"on the emulated CUDA device here (host memory); copy it to the CPU first")
        return wrap(_backend.cupy().from_dlpack(x))
    raise BufferError(f"from_dlpack: {type(x).__name__} lives on DLPack device type {kind}; pyneural takes CPU "
                      f"({_DLPACK_CPU}) and CUDA ({_DLPACK_CUDA}) memory")


# ---- safetensors ------------------------------------------------------------------------------

def _safetensors_numpy():
    try:
        import safetensors.numpy
    except ImportError:
        raise ImportError("pn.save_safetensors / pn.load_safetensors need the safetensors package: "
                          "pip install safetensors") from None
    return safetensors.numpy


def _to_torch_names(state):
    """pyneural state_dict -> PyTorch state_dict: the same names and layouts today (see the module
    docstring); each array as the contiguous host array safetensors writes byte for byte."""
    out = OrderedDict()
    for name, value in state.items():
        if not isinstance(name, str):
            raise TypeError(f"pn.save_safetensors: names must be strings, got {name!r}")
        array = value.data if isinstance(value, Tensor) else value
        if backend.is_device_array(array):
            array = backend.to_device(array, "cpu")
        if not isinstance(array, np.ndarray):
            raise TypeError(f"pn.save_safetensors: {name!r} is a {type(value).__name__}; expected an array or "
                            f"a Tensor (a module's state_dict)")
        if array.dtype.hasobject or (array.dtype.kind not in "biuf" and array.dtype.name != "bfloat16"):
            raise TypeError(f"pn.save_safetensors: {name!r} has dtype {array.dtype}; safetensors holds bool, "
                            f"integer and floating-point arrays")
        out[name] = array if array.flags.c_contiguous else array.copy(order="C")  # (ascontiguousarray makes 0-d 1-d)
    return out


def _from_torch_names(tensors):
    """PyTorch state_dict -> pyneural state_dict (the inverse of ``_to_torch_names``), in name
    order (the file does not keep the writer's order)."""
    return OrderedDict(sorted(tensors.items()))


def save_safetensors(state, path, metadata=None):
    """Write a module's weights (a Module, or a state_dict: name -> array or Tensor) to ``path`` in
    the safetensors format, atomically: a temporary file in the same directory, fsync'ed, renamed
    over ``path``; an existing file is never left half-written. ``metadata`` (str -> str) goes into
    the header, after ``{"format": "pt"}`` (what Hugging Face's loaders expect of PyTorch weights).
    Returns ``path``."""
    if isinstance(state, Module):
        state = OrderedDict(state._state_tensors())  # what state_dict holds, uncopied, on any device
    if not isinstance(state, dict):
        raise TypeError(f"pn.save_safetensors: expected a Module or a dict of name -> array, got "
                        f"{type(state).__name__}")
    header = {"format": "pt", **(metadata or {})}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in header.items()):
        raise TypeError(f"pn.save_safetensors: metadata must map str to str, got {metadata!r}")
    tensors = _to_torch_names(state)

    def write(tmp):
        _safetensors_numpy().save_file(tensors, tmp, metadata=header)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return write_atomically(path, write, "pn.save_safetensors")


def load_safetensors(path, device=None):
    """The arrays of a safetensors file (written by pyneural, ``safetensors.torch.save_file`` or
    any other writer), name -> numpy array, or arrays on ``device``: ready for
    ``model.load_state_dict``. Raises FileNotFoundError, or CheckpointError for a damaged file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pn.load_safetensors: no file {path!r}")
    st = _safetensors_numpy()
    try:
        with open(path, "rb") as f:
            tensors = st.load(f.read())
    except Exception as e:  # safetensors raises its own SafetensorError (and others) on bad bytes
        raise CheckpointError(f"pn.load_safetensors: {path} is not a readable safetensors file: {e}") from None
    state = _from_torch_names(tensors)
    if device is not None:
        state = OrderedDict((k, backend.to_device(v, device)) for k, v in state.items())
    return state
