"""The emulated CUDA device: pyneural's CUDA kernels, run on the CPU.

``PYNEURAL_CUDA_EMULATE=1`` makes ``pyneural.cuda.available()`` true without a GPU. The same
wrappers, checks and launch arithmetic (``pyneural/cuda/*.py``) run as on a GPU; only the runtime
under them changes:

* arrays: :mod:`pyneural.cuda.emulator.xp`, a CuPy-compatible namespace whose ``ndarray`` keeps
  its data in host memory (allocated 256-byte aligned with redzones, filled with NaN by ``empty``)
  and refuses implicit conversion to numpy exactly as CuPy does (``.get()`` copies to the host);
* kernels: ``xp.RawModule`` compiles the very same ``.cu`` text that NVRTC would get, as C++ with
  ``csrc/emu/cuda_emu.h`` in front (the CUDA execution model on fibers), with g++, cached on disk
  (see :mod:`pyneural.cuda.emulator.compiler`);
* launches: grid, block and dynamic shared memory are checked against the limits of an sm_80
  device; array arguments are checked against the kernel's own parameter types.

Modes (the variable's value): ``1`` or ``checked`` -- every load and store of kernel code is
checked (bounds of array arguments and shared memory, alignment of vector accesses, reads of
cp.async destinations before their wait); ``race`` -- also reports shared-memory races (see
``racecheck()``); ``asan`` -- the kernels are built with AddressSanitizer and UBSan instead (the
process must be started with ``LD_PRELOAD=$(gcc -print-file-name=libasan.so)``); ``fast`` -- no
per-access checks. A fault raises :class:`KernelFault` naming the kernel, block, thread and address.
Hopper-only instructions (wgmma, TMA, mbarrier transaction counts) are not emulated: the wgmma
kernel is refused on this device.
"""
import contextlib
import os
import shutil

ENV = "PYNEURAL_CUDA_EMULATE"
MODES = ("checked", "race", "asan", "fast")
_forced_mode = []


class KernelFault(RuntimeError):
    """A kernel did what a GPU would fault on (or what compute-sanitizer would report)."""


def enabled():
    """True when ``PYNEURAL_CUDA_EMULATE`` asks for the emulated device."""
    return os.environ.get(ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def mode():
    """The active emulation mode: checked, race, asan or fast."""
    if _forced_mode:
        return _forced_mode[-1]
    value = os.environ.get(ENV, "").strip().lower()
    if value in ("1", "true", "yes", "on", "checked", ""):
        return "checked"
    if value not in MODES:
        raise ValueError(f"{ENV}={value!r}: expected 1, checked, race, asan or fast")
    return value


@contextlib.contextmanager
def racecheck():
    """Run the launches inside the block in race mode (shared-memory race detection)."""
    if mode() == "asan":
        raise RuntimeError("racecheck() needs the checked build; this process runs the asan build")
    _forced_mode.append("race")
    try:
        yield
    finally:
        _forced_mode.pop()


def compiler_path():
    """The C++ compiler the emulator uses: $CXX, else g++."""
    cxx = os.environ.get("CXX") or "g++"
    return shutil.which(cxx)


def usable():
    """True when the emulator can run here (an x86-64 Linux host with a C++17 compiler)."""
    import platform
    return platform.system() == "Linux" and platform.machine() in ("x86_64", "AMD64") and compiler_path() is not None
