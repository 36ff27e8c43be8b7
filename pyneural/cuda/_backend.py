"""Where pyneural's own CUDA kernels (csrc/cuda/*.cu) come from, and the one launch call every
wrapper in this package uses.

Two interchangeable backends run the same compiled-from-one-source kernels, looked up by their
``extern "C"`` names:

* ``pyneural._cuda`` (built when CMake found nvcc, see csrc/cuda/CMakeLists.txt): fatbins compiled
  ahead of time for sm_80 / sm_90a, launched by ``_cuda.launch``, which checks every array argument
  (C-contiguous, dtype, device) on the way;
* otherwise ``cupy.RawModule``: the .cu file (its ``#include "..."`` lines inlined, so CuPy's
  on-disk cache key covers the headers) is compiled by NVRTC at first use, once per process and
  device; CuPy caches the binary on disk across processes.

Grid, block and shared memory are computed by the wrappers (one place) and passed to ``launch``,
which always runs on CuPy's current stream of the current device.
``PYNEURAL_CUDA_BACKEND=rawmodule`` forces the NVRTC path (for tests); ``PYNEURAL_CUDA_SRC`` names
an extra source directory.

``PYNEURAL_CUDA_EMULATE=1`` swaps the runtime under all of this for the emulated device
(:mod:`pyneural.cuda.emulator`): ``cupy()`` is then its CuPy-compatible namespace, whose RawModule
compiles the same expanded sources for the CPU; there is no native module.
"""
import functools
import os
import re
from pathlib import Path

import numpy as np

from pyneural.cuda import emulator

_HERE = Path(__file__).resolve().parent
# Installed wheels carry the sources in pyneural/cuda/csrc; a source checkout has csrc/cuda.
SOURCE_DIRS = ([Path(os.environ["PYNEURAL_CUDA_SRC"])] if os.environ.get("PYNEURAL_CUDA_SRC") else []) + [
    _HERE / "csrc", _HERE.parent.parent / "csrc" / "cuda"]
MIN_COMPUTE_CAPABILITY = 80  # cp.async


def cupy():
    """The cupy module (or the emulated device's stand-in), or ImportError saying how to get it."""
    if emulator.enabled():
        from pyneural.cuda.emulator import xp
        return xp
    try:
        import cupy
    except ImportError:
        raise ImportError("pyneural.cuda needs CuPy: pip install cupy-cuda12x (or the wheel matching "
                          "your CUDA version)") from None
    return cupy


@functools.lru_cache(maxsize=None)
def native():
    """The prebuilt pyneural._cuda module, or None (then kernels go through cupy.RawModule)."""
    if emulator.enabled() or os.environ.get("PYNEURAL_CUDA_BACKEND", "").lower() == "rawmodule":
        return None
    try:
        from pyneural import _cuda
    except ImportError:
        return None
    return _cuda


def backend_name():
    if emulator.enabled():
        return "emulator"
    return "pyneural._cuda" if native() is not None else "cupy.RawModule"


def unavailable_reason():
    """None when kernels can run here, else why not (no CuPy, no driver or device, too old a GPU,
    an emulator that cannot run on this host). Only those expected failures are turned into a
    reason: anything else, such as a warning raised as an error while CuPy imports, propagates."""
    if emulator.enabled():
        return None if emulator.usable() else "the emulated device needs Linux x86-64 and g++ (or $CXX)"
    try:
        cp = cupy()
    except ImportError as e:
        return str(e)
    try:
        if cp.cuda.runtime.getDeviceCount() < 1:
            return "CuPy sees no CUDA device"
        cc = int(cp.cuda.Device().compute_capability)
    except (RuntimeError, OSError) as e:  # cupy's CUDARuntimeError is a RuntimeError: no driver / device
        return f"CUDA is not usable: {e}"
    if cc < MIN_COMPUTE_CAPABILITY:
        return f"the GPU has compute capability {cc / 10:.1f}; pyneural's kernels need 8.0 (cp.async)"
    return None


def available():
    """True if CuPy imports and the current device has compute capability >= 8.0 (or the emulated
    device is switched on and can run here)."""
    return unavailable_reason() is None


def source_path(filename):
    for d in SOURCE_DIRS:
        if (d / filename).is_file():
            return d / filename
    raise FileNotFoundError(f"pyneural.cuda: kernel source {filename} not found in {[str(d) for d in SOURCE_DIRS]}")


_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*"([^"]+)"[ \t]*$', re.MULTILINE)


def expanded_source(filename, _seen=None):
    """The text of ``filename`` with its quoted includes inlined (each header once)."""
    seen = set() if _seen is None else _seen
    path = source_path(filename)
    text = path.read_text()

    def include(match):
        name = match.group(1)
        if name in seen:
            return ""
        seen.add(name)
        return expanded_source(name, seen).replace("#pragma once", "")
    return _INCLUDE.sub(include, text)


@functools.lru_cache(maxsize=None)
def _raw_module(filename, device_id):
    cp = cupy()
    with cp.cuda.Device(device_id):
        if emulator.enabled():
            return cp.RawModule(code=expanded_source(filename), options=("-std=c++17",), name=filename[:-3])
        return cp.RawModule(code=expanded_source(filename), options=("-std=c++17",))


@functools.lru_cache(maxsize=None)
def _raw_kernel(filename, name, device_id):
    return _raw_module(filename, device_id).get_function(name)


def _raw_arg(a):
    return np.uint64(0) if a is None else a


def launch(filename, name, grid, block, args, shared_mem=0):
    """Launch kernel ``name`` of csrc/cuda/``filename`` on CuPy's current stream and device.

    ``args`` are CuPy arrays, None (a null pointer) or numpy scalars typed exactly as the kernel's
    parameters (np.int32 for int, np.int64 for long long, np.float32 for float)."""
    cp = cupy()
    grid = tuple(int(g) for g in grid)
    block = tuple(int(b) for b in block)
    device_id = cp.cuda.Device().id
    mod = native()
    if mod is not None:
        mod.launch(filename[:-3], name, grid, block, int(shared_mem), cp.cuda.get_current_stream().ptr,
                   device_id, list(args))
    else:
        _raw_kernel(filename, name, device_id)(grid, block, tuple(_raw_arg(a) for a in args),
                                               shared_mem=int(shared_mem))


@functools.lru_cache(maxsize=None)
def sm_count(device_id):
    return int(cupy().cuda.Device(device_id).attributes["MultiProcessorCount"])


def elementwise_grid(n, block=256):
    """Blocks for a grid-stride loop over n elements: enough to fill the GPU, never more than needed."""
    cap = 32 * sm_count(cupy().cuda.Device().id)
    return (max(1, min(-(-int(n) // block), cap)),)
