"""``RawModule`` / ``RawKernel`` for the emulated device: CuPy's kernel API, run on the CPU.

A launch is checked the way the CUDA driver checks it (grid and block limits, dynamic shared memory
against 48 KiB unless ``max_dynamic_shared_size_bytes`` was raised, as cudaFuncSetAttribute
requires) and each argument against the kernel's own parameter type (a pointer takes a device
array or None / 0, ``int`` takes np.int32, ``long long`` np.int64, ``float`` np.float32, ...):
stricter than a GPU, where a wrongly typed scalar is silently misread. Launches are serialised
(the emulated device has one stream) and run synchronously; a fault raises KernelFault.
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
                raise TypeError(f"{where}: parameters of this type (a struct passed by value) are not supported by "
                                f"the emulated device")
        pointers = (ctypes.c_void_p * max(1, len(args)))(*[ctypes.addressof(slots) + 8 * i for i in range(len(args))])
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
