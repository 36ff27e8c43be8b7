"""A CuPy-compatible namespace over host memory: the arrays and runtime of the emulated device.

Only what pyneural and its tests use of CuPy is here, with CuPy's names and behaviour:
``ndarray`` (data in host memory; ``.get()`` / ``asnumpy`` copy out; implicit conversion to numpy
raises TypeError as in CuPy; numpy host arrays given to a kernel are refused), creation functions
(``empty`` fills with NaN bytes, like the poison an uninitialised GPU buffer may hold), numpy's
math on device arrays (computed on the host, results stay "on the device"), ``cuda.Device`` /
``Stream`` / ``Event`` / ``runtime``, pinned host memory (``cuda.alloc_pinned_memory``), and
``RawModule`` / ``RawKernel`` whose kernels run on the emulator (:mod:`pyneural.cuda.emulator.launch`).
"""
import ctypes
import threading
import time
import types
import weakref

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

from pyneural.cuda.emulator.launch import RawKernel, RawModule  # noqa: F401  (part of the namespace)

ALIGN = 256       # cudaMalloc alignment
PAD = 256         # bytes of redzone on each side of an allocation
DEVICE_NAME = "pyneural emulated CUDA device (sm_80 model)"
SM_COUNT = 4


def _asan():
    """AddressSanitizer's (poison, unpoison) memory-region calls when this process runs with it."""
    global _ASAN
    if _ASAN is None:
        try:
            lib = ctypes.CDLL(None)
            fns = (lib.__asan_poison_memory_region, lib.__asan_unpoison_memory_region)
            for fn in fns:
                fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_size_t], None
            _ASAN = fns
        except AttributeError:
            _ASAN = False
    return _ASAN or None


_ASAN = None


def _allocate(nbytes):
    """Host memory standing in for cudaMalloc: 256-byte aligned, with redzones before and after
    (which the checked build reports touching, and which AddressSanitizer is told are poison)."""
    raw = np.empty(int(nbytes) + 2 * PAD + ALIGN, dtype=np.uint8)
    start = PAD + (-(raw.ctypes.data + PAD) % ALIGN)
    buf = raw[start:start + int(nbytes)]
    raw[:start] = 0xA5
    raw[start + int(nbytes):] = 0xA5
    asan = _asan()
    if asan is not None:
        poison, unpoison = asan
        # numpy may hand out a cached block: start clean, and leave it clean before numpy frees or reuses it
        unpoison(raw.ctypes.data, raw.size)
        poison(raw.ctypes.data, start)
        poison(raw.ctypes.data + start + int(nbytes), raw.size - start - int(nbytes))
        weakref.finalize(raw, unpoison, raw.ctypes.data, raw.size)
    return buf


class MemoryPointer:
    def __init__(self, ptr):
        self.ptr = int(ptr)

    def __int__(self):
        return self.ptr


class _Flags:
    def __init__(self, a):
        self.c_contiguous = a.flags.c_contiguous
        self.f_contiguous = a.flags.f_contiguous
        self.owndata = a.base is None


def _unwrap(x, what):
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, np.ndarray) and x.ndim > 0:
        raise TypeError(f"{what}: a numpy.ndarray (host memory, shape {x.shape}) cannot be mixed with arrays on "
                        f"the emulated CUDA device; move it with cupy.asarray() first")
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v, what) for v in x)
    return x


def _wrap(r):
    if isinstance(r, np.ndarray):
        return ndarray._view(r)
    if isinstance(r, tuple):
        return tuple(_wrap(v) for v in r)
    if isinstance(r, list):
        return [_wrap(v) for v in r]
    if isinstance(r, np.generic):  # CuPy reductions return 0-d device arrays
        return ndarray._view(np.asarray(r))
    return r


class ndarray(NDArrayOperatorsMixin):
    """An array in the emulated device's memory (a numpy array underneath, never handed out)."""

    __array_priority__ = 100

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        dtype = np.dtype(dtype)
        shape = (shape,) if np.isscalar(shape) else tuple(int(s) for s in shape)
        n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        buf = _allocate(n)
        buf[:] = 0xFF
        self._a = np.ndarray(shape, dtype=dtype, buffer=buf, order=order) if n else np.empty(shape, dtype)

    @classmethod
    def _view(cls, a):
        self = cls.__new__(cls)
        self._a = a
        return self

    # ---- CuPy's attributes
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: _Flags(self._a))
    data = property(lambda self: MemoryPointer(self._a.ctypes.data))
    device = property(lambda self: cuda.Device(0))
    T = property(lambda self: ndarray._view(self._a.T))
    real = property(lambda self: ndarray._view(self._a.real))
    base = property(lambda self: None if self._a.base is None else self)

    def __cuda_array_interface__(self):  # pragma: no cover - a real CUDA consumer cannot use host memory
        raise TypeError("arrays of the emulated CUDA device have no device pointer")

    # ---- moving data
    def get(self, stream=None, order="C", out=None):
        if out is not None:
            out[...] = self._a
            return out
        return np.array(self._a, order=order, copy=True)

    def set(self, arr, stream=None):
        self._a[...] = np.asarray(arr)

    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a "
                        "NumPy array explicitly.")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        name = f"cupy.{ufunc.__name__}"
        inputs = tuple(_unwrap(x, name) for x in inputs)
        if "out" in kwargs:
            kwargs["out"] = tuple(_unwrap(x, name) for x in kwargs["out"])
        return _wrap(getattr(ufunc, method)(*inputs, **kwargs))

    def __array_function__(self, func, types_, args, kwargs):
        name = f"cupy.{func.__name__}"
        return _wrap(func(*_unwrap(list(args), name), **{k: _unwrap(v, name) for k, v in kwargs.items()}))

    # ---- indexing and the rest of numpy's methods
    def __getitem__(self, key):
        return _wrap(self._a[_unwrap(key, "cupy.ndarray.__getitem__")])

    def __setitem__(self, key, value):
        self._a[_unwrap(key, "cupy.ndarray.__setitem__")] = _unwrap(value, "cupy.ndarray.__setitem__")

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (_wrap(v) for v in self._a)

    def __repr__(self):
        return repr(self._a).replace("array(", "array(", 1)

    def __str__(self):
        return str(self._a)

    def __bool__(self):
        return bool(self._a)

    def __float__(self):
        return float(self._a)

    def __int__(self):
        return int(self._a)

    def __index__(self):
        return self._a.__index__()

    def __copy__(self):
        return self.copy()

    def copy(self, order="C"):
        out = _like(self, None, order, None) if order == "K" else ndarray(self.shape, self.dtype, order=order)
        out._a[...] = self._a
        return out

    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        if not copy and np.dtype(dtype) == self.dtype:
            return self
        out = ndarray(self.shape, dtype)
        out._a[...] = self._a.astype(dtype)
        return out

    def fill(self, value):
        self._a.fill(value)

    def item(self):
        return self._a.item()

    def tolist(self):
        return self._a.tolist()

    def __getattr__(self, name):
        if name.startswith("__"):  # never hand numpy the buffer through __array_interface__ & co.
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if callable(attr):
            return lambda *a, **k: _wrap(attr(*_unwrap(list(a), name), **k))
        return _wrap(attr)


# ---- creation ------------------------------------------------------------------------------
def empty(shape, dtype=float, order="C"):
    return ndarray(shape, dtype, order=order)


def full(shape, fill_value, dtype=None, order="C"):
    out = ndarray(shape, dtype if dtype is not None else np.asarray(fill_value).dtype, order=order)
    out._a.fill(fill_value)
    return out


def zeros(shape, dtype=float, order="C"):
    return full(shape, 0, dtype, order)


def ones(shape, dtype=float, order="C"):
    return full(shape, 1, dtype, order)


def _like(a, dtype, order, shape, fill=None):
    """A new array shaped like ``a``; ``order="K"`` keeps a's memory layout (CuPy's rule: a
    channels_last array gives a channels_last array), else C order."""
    dtype = a.dtype if dtype is None else dtype
    if shape is not None or order != "K" or a.flags.c_contiguous or a.ndim < 2:
        out = empty(a.shape if shape is None else shape, dtype)
    else:
        perm = tuple(int(i) for i in np.argsort([-st for st in a.strides], kind="stable"))
        base = empty(tuple(a.shape[i] for i in perm), dtype)
        out = ndarray._view(base._a.transpose(tuple(int(i) for i in np.argsort(perm))))
    if fill is not None:
        out._a.fill(fill)
    return out


def empty_like(a, dtype=None, order="K", shape=None):
    return _like(a, dtype, order, shape)


def zeros_like(a, dtype=None, order="K", shape=None):
    return _like(a, dtype, order, shape, 0)


def ones_like(a, dtype=None, order="K", shape=None):
    return _like(a, dtype, order, shape, 1)


def full_like(a, fill_value, dtype=None, order="K", shape=None):
    return _like(a, dtype, order, shape, fill_value)


def array(obj, dtype=None, copy=True, order="K", ndmin=0):
    if isinstance(obj, ndarray):
        host = obj._a
    else:
        host = np.asarray(obj, dtype=dtype)
    host = np.asarray(host, dtype=dtype)
    if ndmin:
        host = np.array(host, ndmin=ndmin, copy=False)
    out = ndarray(host.shape, host.dtype, order="F" if order == "F" else "C")
    out._a[...] = host
    return out


def asarray(a, dtype=None, order=None):
    if isinstance(a, ndarray) and (dtype is None or np.dtype(dtype) == a.dtype):
        return a
    return array(a, dtype=dtype, order=order or "K")


def ascontiguousarray(a, dtype=None):
    a = asarray(a, dtype=dtype)
    return a if a._a.flags.c_contiguous else array(a, dtype=dtype, order="C")


def asnumpy(a, stream=None, order="C", out=None):
    return a.get(order=order, out=out) if isinstance(a, ndarray) else np.asarray(a, order=order)


def arange(*args, dtype=None):
    return array(np.arange(*args, dtype=dtype))


def may_share_memory(a, b, max_work=None):
    return np.may_share_memory(_unwrap(a, "may_share_memory"), _unwrap(b, "may_share_memory"))


def shares_memory(a, b, max_work=None):
    return np.shares_memory(_unwrap(a, "shares_memory"), _unwrap(b, "shares_memory"))


def get_array_module(*args):
    import sys
    return sys.modules[__name__] if any(isinstance(a, ndarray) for a in args) else np


def _numpy_function(name):
    fn = getattr(np, name)

    def call(*args, **kwargs):
        result = fn(*_unwrap(list(args), f"cupy.{name}"), **{k: _unwrap(v, f"cupy.{name}") for k, v in kwargs.items()})
        return _device(result)
    call.__name__ = name
    return call


def _device(r):
    """A numpy result computed for the device: copied into device memory (an allocation of ours)."""
    if isinstance(r, np.ndarray):
        return array(r)
    if isinstance(r, np.generic):
        return array(r)
    if isinstance(r, (tuple, list)):
        return type(r)(_device(v) for v in r)
    return r


def __getattr__(name):
    """numpy's functions and dtypes under CuPy's names (cupy.float32, cupy.stack, cupy.matmul, ...)."""
    value = getattr(np, name)
    if callable(value) and not isinstance(value, type):
        return _numpy_function(name)
    return value


# ---- cupy.random, cupy.linalg --------------------------------------------------------------
random = types.SimpleNamespace()


def _random(name):
    def call(*args, dtype=None, **kwargs):
        r = getattr(np.random, name)(*args, **kwargs)
        return array(r if dtype is None else np.asarray(r).astype(dtype))
    return call


for _n in ("standard_normal", "rand", "randn", "random", "uniform", "normal", "randint", "permutation"):
    setattr(random, _n, _random(_n))
random.seed = np.random.seed
linalg = types.SimpleNamespace(
    norm=lambda x, *a, **k: _device(np.linalg.norm(_unwrap(x, "cupy.linalg.norm"), *a, **k)))


# ---- cupy.cuda ------------------------------------------------------------------------------
class CUDARuntimeError(RuntimeError):
    pass


class Device:
    """The one emulated device, cuda:0, modelled on an sm_80 GPU (cp.async, mma.sync, ldmatrix)."""

    compute_capability = "80"
    attributes = {"MultiProcessorCount": SM_COUNT, "MaxSharedMemoryPerBlock": 49152,
                  "MaxSharedMemoryPerBlockOptin": 232448, "MaxThreadsPerBlock": 1024, "WarpSize": 32,
                  "ComputeCapabilityMajor": 8, "ComputeCapabilityMinor": 0}

    def __init__(self, device=None):
        device = 0 if device is None else int(device)
        if device != 0:
            raise CUDARuntimeError(f"cudaErrorInvalidDevice: invalid device ordinal {device} (the emulated "
                                   f"device has only cuda:0)")
        self.id = device

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def use(self):
        pass

    def synchronize(self):
        pass

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(("emulated-cuda", self.id))

    def __repr__(self):
        return f"<CUDA Device {self.id} (emulated)>"


_current = threading.local()  # the streams entered with ``with stream:``, innermost last


class Stream:
    """A stream of the emulated device. Every launch and copy runs to completion before it
    returns, so work on any stream is finished by the time the host goes on: recording an event
    and waiting on one only keep CuPy's calls and their order."""

    null = None

    def __init__(self, null=False, non_blocking=False, ptr=0):
        self.ptr = 0 if null else int(ptr)

    def __enter__(self):
        _current.__dict__.setdefault("stack", []).append(self)
        return self

    def __exit__(self, *exc):
        _current.stack.pop()
        return False

    def synchronize(self):
        pass

    def use(self):
        return self

    def record(self, event=None):
        event = Event() if event is None else event
        event.record(self)
        return event

    def wait_event(self, event):
        pass


def get_current_stream():
    stack = getattr(_current, "stack", None)
    return stack[-1] if stack else _null_stream


class Event:
    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.t = None

    def record(self, stream=None):
        self.t = time.perf_counter()

    def synchronize(self):
        pass

    @property
    def done(self):
        return True


def get_elapsed_time(start, end):
    return (end.t - start.t) * 1e3


# ---- pinned host memory: plain host memory, remembered so that the runtime can report it ------
_pinned = {}  # start address -> size of each live pinned allocation
cudaMemoryTypeUnregistered, cudaMemoryTypeHost = 0, 1


def alloc_pinned_memory(nbytes):
    """Host memory standing in for cudaHostAlloc: a uint8 buffer (numpy arrays are built on it
    with ``buffer=``) that ``runtime.pointerGetAttributes`` reports as page-locked while it lives."""
    buffer = np.empty(max(int(nbytes), 1), dtype=np.uint8)
    start = buffer.ctypes.data
    _pinned[start] = buffer.nbytes
    weakref.finalize(buffer, _pinned.pop, start, None)
    return buffer


def pointer_attributes(ptr):
    """cudaPointerGetAttributes for host pointers: ``type`` is cudaMemoryTypeHost inside a live
    pinned allocation, cudaMemoryTypeUnregistered elsewhere (the emulated device's own
    allocations are not tracked: ask only about host memory)."""
    ptr = int(ptr)
    for start, size in list(_pinned.items()):
        if start <= ptr < start + size:
            return types.SimpleNamespace(type=cudaMemoryTypeHost, device=0, devicePointer=ptr, hostPointer=ptr)
    return types.SimpleNamespace(type=cudaMemoryTypeUnregistered, device=-2, devicePointer=0, hostPointer=0)


def _device_count():
    return 1


def _properties(device=0):
    Device(device)
    return {"name": DEVICE_NAME.encode(), "totalGlobalMem": 16 << 30, "multiProcessorCount": SM_COUNT,
            "major": 8, "minor": 0, "sharedMemPerBlock": 49152, "sharedMemPerBlockOptin": 232448,
            "maxThreadsPerBlock": 1024, "warpSize": 32, "clockRate": 1_000_000, "memoryClockRate": 1_000_000,
            "memoryBusWidth": 64}


_null_stream = Stream(null=True)
cuda = types.SimpleNamespace(
    Device=Device, Stream=Stream, ExternalStream=lambda ptr, *a: Stream(ptr=ptr), Event=Event,
    get_current_stream=get_current_stream, get_elapsed_time=get_elapsed_time,
    alloc_pinned_memory=alloc_pinned_memory,
    runtime=types.SimpleNamespace(getDeviceCount=_device_count, getDeviceProperties=_properties,
                                  deviceSynchronize=lambda: None, CUDARuntimeError=CUDARuntimeError,
                                  pointerGetAttributes=pointer_attributes),
    CUDARuntimeError=CUDARuntimeError, is_available=lambda: True, emulated=True)
Stream.null = _null_stream
