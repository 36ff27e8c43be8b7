"""``RawModule`` / ``RawKernel`` for the emulated device: CuPy's kernel API, run on the CPU.

A launch is checked the way the CUDA driver checks it (grid and block limits, dynamic shared memory
against 48 KiB unless ``max_dynamic_shared_size_bytes`` was raised, as cudaFuncSetAttribute
requires) and each argument against the kernel's own parameter type (a pointer takes a device
array or None / 0, ``int`` takes np.int32, ``long long`` np.int64, ``float`` np.float32, ...):
stricter than a GPU, where a wrongly typed scalar is silently misread. A struct passed by value
(a TMA descriptor) takes what every CuPy takes, a one-element numpy array of its bytes. Launches are
serialised (the emulated device has one stream) and run synchronously; a fault raises KernelFault.
"""
import ctypes
import threading

import numpy as np

from pyneural.cuda import emulator
from pyneural.cuda.emulator import compiler

_launch_lock = threading.Lock()
DEFAULT_DYNAMIC_SMEM = 48 * 1024
MAX_DYNAMIC_SMEM = 232448
_SCALAR = {"i": np.int32, "I": np.uint32, "q": np.int64, "Q": np.uint64, "f": np.float32, "d": np.float64,
           "b": np.bool_}
_CTYPE = {"i": "int", "I": "unsigned int", "q": "long long", "Q": "unsigned long long", "f": "float",
          "d": "double", "b": "bool", "p": "a pointer"}


class _Desc(ctypes.Structure):
    _fields_ = [("grid", ctypes.c_uint * 3), ("block", ctypes.c_uint * 3), ("dyn_bytes", ctypes.c_uint),
                ("race", ctypes.c_int), ("n_ranges", ctypes.c_int), ("ranges", ctypes.POINTER(ctypes.c_uint64)),
                ("range_args", ctypes.POINTER(ctypes.c_int))]


def _dims(value, what, limits):
    dims = (value,) if np.isscalar(value) else tuple(value)
    if not 1 <= len(dims) <= 3:
        raise ValueError(f"{what} must have 1 to 3 dimensions, got {value!r}")
    dims = tuple(int(d) for d in dims) + (1,) * (3 - len(dims))
    for d, lim, axis in zip(dims, limits, "xyz"):
        if not 1 <= d <= lim:
            raise ValueError(f"cudaErrorInvalidConfiguration: {what}.{axis} = {d} is outside [1, {lim}]")
    return dims


# A struct parameter's size is not in the kernel signature (the driver does not know it either: it
# copies sizeof(param) bytes from the pointer it is given), so its bytes are placed at a 256-byte
# aligned address and followed by poison bytes up to the 32764-byte parameter limit: a too-short
# argument reads back as 0xA5 garbage, never as neighbouring host memory.
_STRUCT_ALIGN = 256
_PARAM_LIMIT = 32764
_POISON = 0xA5


def _struct_bytes(where, a):
    """The host copy of a by-value struct argument: CuPy's form, a one-element numpy array."""
    if isinstance(a, np.void):
        raise TypeError(f"{where} is a struct passed by value; got a numpy.void scalar, which CuPy refuses (12, "
                        f"13) or packs into 64 bytes (14): pass a one-element numpy array of its bytes "
                        f"(tensor_core.struct_arg)")
    if not isinstance(a, np.ndarray) or a.size != 1:
        got = f"numpy.ndarray of shape {a.shape}" if isinstance(a, np.ndarray) else f"{type(a).__name__} {a!r}"
        raise TypeError(f"{where} is a struct passed by value: pass a one-element numpy array of its bytes, "
                        f"got {got}")
    raw = np.frombuffer(a.tobytes(), np.uint8)
    if raw.size > _PARAM_LIMIT:
        raise TypeError(f"{where}: a {raw.size}-byte struct exceeds CUDA's {_PARAM_LIMIT}-byte parameter limit")
    buf = np.full(_PARAM_LIMIT + _STRUCT_ALIGN, _POISON, np.uint8)
    off = (-buf.ctypes.data) % _STRUCT_ALIGN
    buf[off:off + raw.size] = raw
    return buf[off:]


class RawKernel:
    def __init__(self, module, name, source_name):
        self.module = module
        self.name = name
        self.source_name = source_name
        self.entry, self.signature = module.entry(name)
        self.max_dynamic_shared_size_bytes = DEFAULT_DYNAMIC_SMEM

    def __call__(self, grid, block, args, shared_mem=0, stream=None):
        from pyneural.cuda.emulator.xp import ndarray
        grid = _dims(grid, "grid", (2**31 - 1, 65535, 65535))
        block = _dims(block, "block", (1024, 1024, 64))
        if block[0] * block[1] * block[2] > 1024:
            raise ValueError(f"cudaErrorInvalidConfiguration: block {block} has more than 1024 threads")
        shared_mem = int(shared_mem)
        if shared_mem > self.max_dynamic_shared_size_bytes:
            raise RuntimeError(f"{self.name}: CUDA_ERROR_INVALID_VALUE: {shared_mem} bytes of dynamic shared memory "
                               f"exceed the kernel's limit of {self.max_dynamic_shared_size_bytes} (raise "
                               f"max_dynamic_shared_size_bytes first, up to {MAX_DYNAMIC_SMEM})")
        args = tuple(args)
        sig = self.signature
        if len(args) != len(sig):
            raise TypeError(f"{self.name}: the kernel takes {len(sig)} arguments, got {len(args)}")
        slots = (ctypes.c_uint64 * max(1, len(args)))()
        ranges, range_args = [], []
        structs = {}  # argument index -> the bytes of a struct passed by value
        for i, (a, code) in enumerate(zip(args, sig)):
            where = f"{self.name}: argument {i}"
            if code == "p":
                if a is None or (isinstance(a, (int, np.integer)) and not isinstance(a, bool) and int(a) == 0):
                    slots[i] = 0
                elif isinstance(a, ndarray):
                    host = a._a
                    slots[i] = host.ctypes.data
                    if host.size:
                        lo, hi = np.lib.array_utils.byte_bounds(host)
                        ranges += [lo, hi]
                        range_args.append(i)
                elif isinstance(a, np.ndarray):
                    raise TypeError(f"{where} is a numpy.ndarray (host memory, shape {a.shape}); kernels take arrays "
                                    f"on the device (cupy.asarray it first)")
                else:
                    raise TypeError(f"{where} is a pointer parameter; got {type(a).__name__} {a!r}")
            elif code in _SCALAR:
                want = _SCALAR[code]
                if not isinstance(a, np.generic) or a.dtype != np.dtype(want):
                    got = f"{type(a).__name__} {a!r}" if not isinstance(a, np.generic) else f"np.{a.dtype}"
                    raise TypeError(f"{where} is `{_CTYPE[code]}`: pass np.{np.dtype(want).name}(...), got {got}")
                raw = np.zeros(8, np.uint8)
                raw[:a.dtype.itemsize] = np.frombuffer(a.tobytes(), np.uint8)
                slots[i] = int(raw.view(np.uint64)[0])
            else:
                structs[i] = _struct_bytes(where, a)
        pointers = (ctypes.c_void_p * max(1, len(args)))(*[
            structs[i].ctypes.data if i in structs else ctypes.addressof(slots) + 8 * i for i in range(len(args))])
        rng = (ctypes.c_uint64 * max(1, len(ranges)))(*ranges)
        rargs = (ctypes.c_int * max(1, len(range_args)))(*range_args)
        desc = _Desc((ctypes.c_uint * 3)(*grid), (ctypes.c_uint * 3)(*block), shared_mem,
                     1 if emulator.mode() == "race" else 0, len(range_args), rng, rargs)
        with _launch_lock:
            rc = self.entry(ctypes.byref(desc), pointers)
            if rc != 0:
                raise emulator.KernelFault(f"{self.source_name}: {self.module.error()}")


class RawModule:
    """cupy.RawModule(code=..., options=...): the source compiled for the emulator (see compiler.py)."""

    def __init__(self, code=None, path=None, options=(), backend="nvrtc", translate_cucomplex=False,
                 enable_cooperative_groups=False, name_expressions=None, jitify=False, name="kernels"):
        if code is None:
            raise NotImplementedError(f"the emulated CUDA device compiles kernels from source; it cannot load the "
                                      f"GPU binary {path}")
        self.options = tuple(options)
        self.name = name
        self._module = compiler.build(code, self.options, name=name)

    def get_function(self, name):
        return RawKernel(self._module, name, self.name)
