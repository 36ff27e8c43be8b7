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

__all__ = ["available", "backend_name", "KernelFault", "is_available", "device_count", "current_device",
           "synchronize", "manual_seed", "manual_seed_all", "get_device_name"]


# ---- PyTorch's torch.cuda names ---------------------------------------------------------------
def is_available():
    """True when a CUDA device (a GPU, or the emulated device with PYNEURAL_CUDA_EMULATE=1) can run
    pyneural's kernels."""
    return available()


def device_count():
    if not available():
        return 0
    from pyneural.cuda._backend import cupy
    return int(cupy().cuda.runtime.getDeviceCount())


def current_device():
    from pyneural.cuda._backend import cupy
    return int(cupy().cuda.Device().id)


def get_device_name(device=None):
    from pyneural.cuda._backend import cupy
    index = 0 if device is None else int(str(device).split(":")[-1]) if not isinstance(device, int) else device
    name = cupy().cuda.runtime.getDeviceProperties(index)["name"]
    return name.decode() if isinstance(name, bytes) else name


def synchronize(device=None):
    """Wait for every kernel queued on the device."""
    from pyneural.cuda._backend import cupy
    cupy().cuda.Device(None if device is None else int(str(device).split(":")[-1])).synchronize()


def manual_seed(seed):
    """Seed the generator that draws pyneural's random tensors and dropout masks on every device
    (pyneural has one seeded generator; this is pyneural.manual_seed)."""
    from pyneural import random
    random.manual_seed(seed)


manual_seed_all = manual_seed
