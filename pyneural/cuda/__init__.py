"""pyneural's own CUDA kernels on CuPy arrays (sources in csrc/cuda, one family per file).

Every function takes C-contiguous float32 CuPy arrays on the current device (int32 / int64 for
indices), checks them (TypeError / ValueError naming the argument and shapes) and launches on
CuPy's current stream. Kernels come from the prebuilt ``pyneural._cuda`` when it was built, else
they are compiled from the packaged .cu sources by ``cupy.RawModule`` at first use
(see ``pyneural.cuda._backend``). ``available()`` says whether a usable GPU and CuPy are present.

Importing this package never needs CuPy; calling a kernel does. Without a GPU,
``PYNEURAL_CUDA_EMULATE=1`` runs every kernel on the emulated device (``pyneural.cuda.emulator``).
"""
from pyneural.cuda._backend import available, backend_name
from pyneural.cuda.emulator import KernelFault

__all__ = ["available", "backend_name", "KernelFault"]
