"""A stand-in for CuPy, so the GPU paths of pyneural.distributed run on a machine without one.

``DeviceArray`` is host memory posing as device memory: a numpy subclass whose type lives in a
module named ``cupy...``, which is all ``pyneural.tensor.get_array_module`` looks at, so the code
under test takes its device branches (``xp`` is this fake ``cupy``). Every device<->host copy and
stream synchronisation is counted in ``COUNTS``, so a test can tell a staged transfer (copies
through "pinned" host buffers) from a direct one (a synchronisation, no copies). MPI reads a
DeviceArray through the buffer protocol, as CUDA-aware MPI would read device memory.

    import fake_cupy
    with fake_cupy.installed() as cupy:
        grad = cupy.full(10, 1.0, dtype=cupy.float32)
"""
import contextlib
import sys
import types

import numpy as np

COUNTS = {"device_to_host": 0, "host_to_device": 0, "synchronize": 0, "pinned_allocations": 0}


class DeviceArray(np.ndarray):
    def get(self, out=None):
        COUNTS["device_to_host"] += 1
        if out is None:
            return np.array(self).view(np.ndarray)
        out[...] = self
        return out

    def set(self, host):
        COUNTS["host_to_device"] += 1
        self[...] = host


DeviceArray.__module__ = "cupy._fake"


def _device(a):
    return np.asarray(a).view(DeviceArray)


class _Stream:
    def synchronize(self):
        COUNTS["synchronize"] += 1


class _Device:
    def __init__(self, index):
        self.index = index

    def use(self):
        pass


def _module():
    cupy = types.ModuleType("cupy")
    cupy.__dict__.update(
        ndarray=DeviceArray, float32=np.float32, float64=np.float64, uint16=np.uint16, uint32=np.uint32,
        empty=lambda shape, dtype=np.float32: _device(np.empty(shape, dtype=dtype)),
        empty_like=lambda a: _device(np.empty_like(a)),
        full=lambda shape, value, dtype=np.float32: _device(np.full(shape, value, dtype=dtype)),
        concatenate=lambda arrays: _device(np.concatenate([np.asarray(a) for a in arrays])),
        add=np.add, divide=np.divide,
        asnumpy=lambda a: np.array(a).view(np.ndarray))
    cupy.cuda = types.SimpleNamespace(
        get_current_stream=lambda: _Stream(), Device=_Device,
        runtime=types.SimpleNamespace(getDeviceCount=lambda: 1))
    cupyx = types.ModuleType("cupyx")

    def empty_pinned(shape, dtype=np.float32):
        COUNTS["pinned_allocations"] += 1
        return np.empty(shape, dtype=dtype)

    cupyx.empty_pinned = empty_pinned
    return cupy, cupyx


def reset_counts():
    for key in COUNTS:
        COUNTS[key] = 0


@contextlib.contextmanager
def installed():
    """Make ``import cupy`` / ``import cupyx`` give the fakes inside the block."""
    saved = {name: sys.modules.get(name) for name in ("cupy", "cupyx")}
    cupy, cupyx = _module()
    sys.modules["cupy"], sys.modules["cupyx"] = cupy, cupyx
    reset_counts()
    try:
        yield cupy
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
