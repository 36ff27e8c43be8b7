"""Every csrc/cuda/*.cu file compiles with NVRTC exactly as the cupy.RawModule fallback compiles it,
so a kernel that nvcc accepts but NVRTC rejects (a host header, an nvcc-only option, a macro NVRTC
does not define) fails CI even though CI has no GPU and no CuPy.

What RawModule gets, mirrored here:
* the source: ``pyneural.cuda._backend.expanded_source(filename)`` (quoted includes inlined; NVRTC
  is given no include path and no headers, so anything left over would not be found);
* the options: ``("-std=c++17",)`` (``_backend._raw_module``); the tensor-core files add
  ``-DPN_TC_STAGES=<tensor_core.MMA_STAGES>`` (``tensor_core._module``), and gemm_tc_wgmma.cu is
  compiled for ``--gpu-architecture=sm_90a``; every other file for ``compute_80`` (PTX for the
  oldest device pyneural.cuda accepts, ``_backend.MIN_COMPUTE_CAPABILITY``).

Also checked: no warning in the NVRTC log, every kernel entry of the PTX is an unmangled
``extern "C"`` name (RawModule and pyneural._cuda look kernels up by name), and every kernel name a
wrapper in pyneural/cuda names literally exists in its file.

NVRTC comes from the NVIDIA pip wheels (``nvidia-cuda-nvrtc-cu12``, in the ``test`` extra: the NVRTC
that cupy-cuda12x uses; ``nvidia-cuda-nvrtc`` 13.x is tested too where installed), loaded with
ctypes: nothing to build. Each installed NVRTC is a parameter; skipped only where none is installed.
"""
import ctypes
import importlib.util
import re
from pathlib import Path

import pytest

from pyneural.cuda import _backend, tensor_core

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "csrc" / "cuda"
SOURCES = sorted(SRC.glob("*.cu"))
WRAPPERS = sorted((REPO / "pyneural" / "cuda").glob("*.py"))
RAWMODULE_OPTIONS = ("-std=c++17",)                                 # _backend._raw_module
TENSOR_CORE_OPTIONS = ("-std=c++17", f"-DPN_TC_STAGES={tensor_core.MMA_STAGES}")  # tensor_core._module
TENSOR_CORE_FILES = ("gemm_tc_mma.cu", "gemm_tc_wgmma.cu")
ARCH = {"gemm_tc_wgmma.cu": "sm_90a"}                               # tensor_core: arch="sm_90a"
DEFAULT_ARCH = f"compute_{_backend.MIN_COMPUTE_CAPABILITY}"


def nvrtc_options(name):
    base = TENSOR_CORE_OPTIONS if name in TENSOR_CORE_FILES else RAWMODULE_OPTIONS
    return base + (f"--gpu-architecture={ARCH.get(name, DEFAULT_ARCH)}",)


def _nvrtc_libraries():
    """libnvrtc.so.<major> of every installed NVIDIA NVRTC wheel (nvidia/cuda_nvrtc/lib for the
    -cu12 wheel, nvidia/cu13/lib for 13.x), newest major first."""
    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations:
        return []
    found = {}
    for root in spec.submodule_search_locations:
        for lib in Path(root).glob("*/lib/libnvrtc.so.*"):
            if re.fullmatch(r"libnvrtc\.so\.\d+", lib.name):
                found.setdefault(lib.resolve(), lib)
    return sorted(found.values(), key=lambda p: -int(p.name.rsplit(".", 1)[1]))


LIBRARIES = _nvrtc_libraries()
NO_NVRTC = ("no NVRTC wheel installed (looked for nvidia/*/lib/libnvrtc.so.N): "
            "pip install nvidia-cuda-nvrtc-cu12, which the 'test' extra brings")
LIBRARY_PARAMS = ([pytest.param(lib, id=f"nvrtc{lib.name.rsplit('.', 1)[1]}") for lib in LIBRARIES]
                  or [pytest.param(None, id="no-nvrtc", marks=pytest.mark.skip(reason=NO_NVRTC))])


class Nvrtc:
    """The few NVRTC entry points a compile needs, through ctypes."""

    def __init__(self, path):
        self.path = path
        lib = self.lib = ctypes.CDLL(str(path))
        P, S, C = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p
        lib.nvrtcGetErrorString.restype = C
        lib.nvrtcGetErrorString.argtypes = [ctypes.c_int]
        for fn, args in {
            "nvrtcVersion": [ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)],
            "nvrtcCreateProgram": [ctypes.POINTER(P), C, C, ctypes.c_int, ctypes.POINTER(C), ctypes.POINTER(C)],
            "nvrtcCompileProgram": [P, ctypes.c_int, ctypes.POINTER(C)],
            "nvrtcDestroyProgram": [ctypes.POINTER(P)],
            "nvrtcGetProgramLogSize": [P, ctypes.POINTER(S)],
            "nvrtcGetProgramLog": [P, ctypes.c_char_p],
            "nvrtcGetPTXSize": [P, ctypes.POINTER(S)],
            "nvrtcGetPTX": [P, ctypes.c_char_p],
            "nvrtcGetCUBINSize": [P, ctypes.POINTER(S)],
        }.items():
            getattr(lib, fn).restype = ctypes.c_int
            getattr(lib, fn).argtypes = args
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._check(lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
        self.version = f"{major.value}.{minor.value}"

    def _check(self, rc, what):
        if rc != 0:
            raise RuntimeError(f"{what} failed: {self.lib.nvrtcGetErrorString(rc).decode()} ({self.path})")

    def _text(self, prog, size_fn, get_fn):
        n = ctypes.c_size_t()
        self._check(size_fn(prog, ctypes.byref(n)), size_fn.__name__)
        buf = ctypes.create_string_buffer(max(n.value, 1))
        self._check(get_fn(prog, buf), get_fn.__name__)
        return buf.value.decode(errors="replace")

    def compile(self, source, name, options):
        """(NVRTC result name, log, PTX or "", CUBIN size) of one compile."""
        prog = ctypes.c_void_p()
        self._check(self.lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None),
                    "nvrtcCreateProgram")
        try:
            opts = (ctypes.c_char_p * len(options))(*(o.encode() for o in options))
            rc = self.lib.nvrtcCompileProgram(prog, len(options), opts)
            log = self._text(prog, self.lib.nvrtcGetProgramLogSize, self.lib.nvrtcGetProgramLog)
            ptx, cubin = "", 0
            if rc == 0:
                ptx = self._text(prog, self.lib.nvrtcGetPTXSize, self.lib.nvrtcGetPTX)
                if any(o.startswith("--gpu-architecture=sm_") for o in options):
                    n = ctypes.c_size_t()
                    self._check(self.lib.nvrtcGetCUBINSize(prog, ctypes.byref(n)), "nvrtcGetCUBINSize")
                    cubin = n.value
            return self.lib.nvrtcGetErrorString(rc).decode(), log, ptx, cubin
        finally:
            self.lib.nvrtcDestroyProgram(ctypes.byref(prog))


_results = {}


@pytest.fixture(scope="module", params=LIBRARY_PARAMS)
def nvrtc(request):
    return Nvrtc(request.param)


def compiled(nvrtc, name):
    """One compile per (NVRTC, file) per session, shared by the tests below."""
    key = (str(nvrtc.path), name)
    if key not in _results:
        _results[key] = nvrtc.compile(_backend.expanded_source(name), name, nvrtc_options(name))
    return _results[key]


def _describe(nvrtc, name):
    return f"NVRTC {nvrtc.version} ({nvrtc.path}) on {name} with {' '.join(nvrtc_options(name))}"


def test_there_are_kernel_sources():
    assert len(SOURCES) >= 8 and {"sgemm.cu", "gemm_tc_mma.cu", "gemm_tc_wgmma.cu"} <= {s.name for s in SOURCES}


@pytest.mark.parametrize("name", [s.name for s in SOURCES])
def test_expanded_source_has_no_includes(name):
    """NVRTC gets no include path and no headers: the RawModule source must be self-contained."""
    text = _backend.expanded_source(name)
    left = re.findall(r"^[ \t]*#[ \t]*include\b.*$", text, re.MULTILINE)
    assert not left, f"{name}: includes left after expanded_source (NVRTC cannot resolve them): {left}"


@pytest.mark.parametrize("name", [s.name for s in SOURCES])
def test_compiles_with_nvrtc_as_rawmodule_does(nvrtc, name):
    result, log, ptx, cubin = compiled(nvrtc, name)
    assert result == "NVRTC_SUCCESS", f"{_describe(nvrtc, name)}: {result}\n{log}"
    assert "warning" not in log.lower(), f"{_describe(nvrtc, name)}: warnings\n{log}"
    entries = re.findall(r"^\s*(?:\.visible\s+)?\.entry\s+(\w+)", ptx, re.MULTILINE)
    assert entries, f"{_describe(nvrtc, name)}: the PTX has no kernel entry"
    mangled = [e for e in entries if e.startswith("_Z")]
    assert not mangled, f"{name}: kernels not declared extern \"C\" (looked up by name): {mangled}"
    if ARCH.get(name, DEFAULT_ARCH).startswith("sm_"):
        assert cubin > 0, f"{_describe(nvrtc, name)}: no CUBIN"


def _wrapper_kernel_names():
    """(wrapper, file, kernel) for every literal "pn_..." kernel name in a pyneural/cuda module
    that declares its file as _FILE = "x.cu"."""
    out = []
    for py in WRAPPERS:
        text = py.read_text()
        m = re.search(r'^_FILE\s*=\s*"([\w.]+\.cu)"', text, re.MULTILINE)
        if m:
            out += [(py.name, m.group(1), k) for k in re.findall(r'(?<![\w])"(pn_\w+)"', text)]
    return out


def test_wrappers_launch_kernels_that_exist(nvrtc):
    names = _wrapper_kernel_names()
    assert names, "no literal kernel names found in pyneural/cuda/*.py"
    missing = []
    for wrapper, filename, kernel in names:
        result, _, ptx, _ = compiled(nvrtc, filename)
        assert result == "NVRTC_SUCCESS", f"{filename} does not compile with NVRTC {nvrtc.version}"
        if not re.search(rf"\.entry\s+{kernel}\b", ptx):
            missing.append(f"{wrapper}: {kernel} (not in {filename})")
    assert not missing, "kernels named by the wrappers but not defined:\n" + "\n".join(missing)
