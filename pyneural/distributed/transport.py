"""Where a bucket's bytes sit when MPI moves them: host memory, or device memory.

A bucket's flat array lives where the gradients live (numpy on the host, CuPy on a GPU). Its
*wire* is the buffer MPI actually reads and writes:

* ``HostWire``: a host bucket is its own wire (no copy).
* ``DeviceDirectWire``: CUDA-aware MPI reads device memory itself, so the CuPy array is the
  wire. The stream must be synchronised first: the kernels writing the gradients run
  asynchronously and MPI knows nothing of CUDA streams.
* ``StagedWire``: otherwise the bucket is copied into a pinned (page-locked) host buffer, which
  the GPU copies into by DMA at full PCIe speed and MPI can send without another copy, and the
  result is copied back after the collective.

``cuda_aware()`` asks the MPI library itself: Open MPI's ``MPIX_Query_cuda_support`` and
MPICH's ``MPIX_GPU_query_support``, found in the libmpi this process loaded. A library that
answers yes can still fail at run time (a build whose UCX lacks CUDA, say); ``doctor`` tests a
real transfer and falls back to staging when it fails.
"""
import ctypes
import os

import numpy as np

MPIX_GPU_SUPPORT_CUDA = 0  # from MPICH's mpi.h


def array_module(a):
    if type(a) is np.ndarray:
        return np
    from ..tensor import get_array_module
    return get_array_module(a)


def loaded_mpi_library():
    """Path of the libmpi this process loaded (via mpi4py), or None where /proc is missing."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rsplit(" ", 1)[-1].strip()
                if os.path.basename(path).startswith("libmpi.so"):
                    return path
    except OSError:
        return None
    return None


def cuda_aware():
    """``(answer, how)``: answer is True/False when the library says so, None when it cannot
    be asked; ``how`` names the query used."""
    path = loaded_mpi_library()
    if path is None:
        return None, "libmpi not found in this process"
    lib = ctypes.CDLL(path)
    if hasattr(lib, "MPIX_Query_cuda_support"):
        lib.MPIX_Query_cuda_support.restype = ctypes.c_int
        return bool(lib.MPIX_Query_cuda_support()), "MPIX_Query_cuda_support (Open MPI)"
    if hasattr(lib, "MPIX_GPU_query_support"):
        supported = ctypes.c_int(0)
        rc = lib.MPIX_GPU_query_support(MPIX_GPU_SUPPORT_CUDA, ctypes.byref(supported))
        if rc == 0:
            return bool(supported.value), "MPIX_GPU_query_support (MPICH)"
    return None, f"{os.path.basename(path)} offers no CUDA-support query"


class HostWire:
    """A host array is its own wire."""

    def __init__(self, flat):
        self.flat = flat

    def to_wire(self):
        return self.flat

    def from_wire(self):
        pass


class DeviceDirectWire:
    """CUDA-aware MPI: hand MPI the device array once the stream has finished writing it."""

    def __init__(self, flat):
        self.flat = flat

    def to_wire(self):
        array_module(self.flat).cuda.get_current_stream().synchronize()
        return self.flat

    def from_wire(self):
        pass


class StagedWire:
    """Copy the device array to pinned host memory for MPI, and back afterwards."""

    def __init__(self, flat):
        self.flat = flat
        if type(flat).__module__ == "pyneural.cuda.emulator.xp":  # the emulated device: host memory already
            self.host = np.empty(flat.shape, dtype=flat.dtype)
        else:
            import cupyx
            self.host = cupyx.empty_pinned(flat.shape, dtype=flat.dtype)

    def to_wire(self):
        self.flat.get(out=self.host)  # blocks until the copy (and the kernels before it) are done
        return self.host

    def from_wire(self):
        self.flat.set(self.host)


def make_wire(flat, device_direct):
    """The wire for ``flat``: host arrays are their own; device arrays go direct when
    ``device_direct`` (CUDA-aware MPI, and a reduction MPI can do on device), else staged."""
    if array_module(flat) is np:
        return HostWire(flat)
    return DeviceDirectWire(flat) if device_direct else StagedWire(flat)
