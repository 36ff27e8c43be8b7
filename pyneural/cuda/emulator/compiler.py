"""Compile a kernel source for the emulated device: the NVRTC step of the emulator.

The text is exactly what ``cupy.RawModule`` would hand NVRTC (``_backend.expanded_source``). It is
compiled as C++17 with ``csrc/emu/cuda_emu.h`` forced in front and one exported entry per
``__global__`` function appended (their names come from a preprocessor pass in which ``__global__``
leaves a marker). Flags per mode:

* checked / race: ``-fsanitize=thread`` for its instrumentation only -- the object is linked
  without ThreadSanitizer's runtime, and the header answers the ``__tsan_*`` calls with the
  emulator's checks. ``-fno-tree-sra`` keeps a ``float4`` copy one 16-byte access (so its alignment
  is checked) and ``-fno-tree-vectorize`` keeps the compiler from inventing wide accesses;
* asan: ``-fsanitize=address,undefined`` (the process must have libasan preloaded);
* fast: plain ``-O2``.

Shared objects are cached under ``$PYNEURAL_CUDA_CACHE/emu`` (default ``~/.cache/pyneural/cuda``),
keyed by a hash of the source, the header, the flags and the compiler, and written atomically.
"""
import ctypes
import hashlib
import os
import re
import subprocess
import tempfile
import threading
from pathlib import Path

from pyneural.cuda import emulator

_HERE = Path(__file__).resolve().parent
HEADER_DIRS = [_HERE / "csrc", _HERE.parent.parent.parent / "csrc" / "emu"]
_KERNEL = re.compile(r"PN_EMU_KERNEL_MARK\s+void\s+(\w+)\s*\(")
_lock = threading.Lock()
_loaded = {}

# Hidden visibility and no STB_GNU_UNIQUE: every module keeps its own emulator state and its own
# __shared__ variables even where two modules instantiate the same template.
BASE_FLAGS = ["-std=c++17", "-fPIC", "-w", "-fno-strict-aliasing", "-fvisibility=hidden", "-fno-gnu-unique",
              "-DPN_CUDA_EMULATOR"]
MODE_FLAGS = {
    "checked": ["-O1", "-fno-tree-sra", "-fno-tree-vectorize", "-fsanitize=thread",
                "--param", "tsan-instrument-func-entry-exit=0"],
    "asan": ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
             "-fno-sanitize=vptr"],
    "fast": ["-O2"],
}


def header():
    for d in HEADER_DIRS:
        if (d / "cuda_emu.h").is_file():
            return d / "cuda_emu.h"
    raise FileNotFoundError(f"pyneural.cuda.emulator: cuda_emu.h not found in {[str(d) for d in HEADER_DIRS]}")


def _cache_dir():
    root = Path(os.environ.get("PYNEURAL_CUDA_CACHE", Path.home() / ".cache" / "pyneural" / "cuda"))
    d = root / "emu"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _defines(options):
    """The -D / -U / -I options of a RawModule option list (the rest is NVRTC-only and ignored)."""
    out = []
    it = iter(options or ())
    for opt in it:
        if opt in ("-D", "-U", "-I"):
            out += [opt, next(it)]
        elif opt.startswith(("-D", "-U", "-I")):
            out.append(opt)
    return out


def _run(cmd, what):
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pyneural.cuda.emulator: {what} failed ({' '.join(cmd)}):\n{proc.stderr[-6000:]}")
    return proc.stdout


class _SharedVar(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("size", ctypes.c_uint64), ("name", ctypes.c_char_p)]


_PARAMS = re.compile(r"\((?:[^()]|\([^()]*\))*\)")


def shared_variables(path):
    """[(offset, size, name)] of the static __shared__ variables of a built module: its thread-local
    symbols (offsets in the TLS segment, which is the block's shared memory), from readelf."""
    try:
        out = subprocess.run(["readelf", "-sW", "-C", str(path)], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []  # no binutils: shared accesses are then checked against the window only
    found = {}
    for line in out.splitlines():
        parts = line.split(None, 7)
        if len(parts) == 8 and parts[3] == "TLS" and parts[6] != "UND" and "pn_emu_dynamic_smem" not in parts[7] \
                and "pn_rz_" not in parts[7]:
            size = int(parts[2], 16) if parts[2].startswith("0x") else int(parts[2])
            found[int(parts[1], 16)] = (size, _PARAMS.sub("()", parts[7]))
    return sorted((off, size, name) for off, (size, name) in found.items())


class Module:
    """One compiled source: kernel name -> (entry point, parameter type codes)."""

    def __init__(self, path, names):
        self.path = path
        self.lib = ctypes.CDLL(str(path), mode=os.RTLD_LOCAL | os.RTLD_NOW)
        self.lib.pn_emu_error.restype = ctypes.c_char_p
        self.names = names
        self._entries = {}
        shared = shared_variables(path)
        self._shared = (_SharedVar * max(1, len(shared)))(*[_SharedVar(o, n, name.encode()) for o, n, name in shared])
        self.lib.pn_emu_set_shared_vars(ctypes.c_int(len(shared)), self._shared)

    def entry(self, name):
        if name not in self._entries:
            if name not in self.names:
                raise ValueError(f"pyneural.cuda.emulator: the module has no kernel named {name!r} "
                                 f"(it has {', '.join(self.names)})")
            fn = getattr(self.lib, f"pn_emu_launch_{name}")
            fn.restype = ctypes.c_int
            fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
            sig = getattr(self.lib, f"pn_emu_sig_{name}")
            sig.restype = ctypes.c_char_p
            self._entries[name] = (fn, sig().decode())
        return self._entries[name]

    def error(self):
        return self.lib.pn_emu_error().decode(errors="replace")


def build(source, options=(), mode=None, name="kernels"):
    """Compile ``source`` (kernel text as NVRTC would see it) for the emulator; returns a Module."""
    mode = mode or emulator.mode()
    flag_mode = "checked" if mode == "race" else mode
    cxx = emulator.compiler_path()
    if cxx is None:
        raise RuntimeError("pyneural.cuda.emulator needs a C++17 compiler (g++ or $CXX) to build kernels")
    hdr = header()
    flags = BASE_FLAGS + MODE_FLAGS[flag_mode] + _defines(options)
    key = hashlib.sha256("\0".join([source, hdr.read_text(), " ".join(flags), cxx]).encode()).hexdigest()[:32]
    with _lock:
        if key in _loaded:
            return _loaded[key]
        cache = _cache_dir()
        so = cache / f"{name}-{flag_mode}-{key}.so"
        names_file = so.with_suffix(".names")
        if not (so.is_file() and names_file.is_file()):
            with tempfile.TemporaryDirectory(dir=cache) as tmp:
                src = Path(tmp) / f"{name}.cpp"
                src.write_text(source)
                pre = _run([cxx, "-E", "-x", "c++", "-include", str(hdr), "-D__global__=PN_EMU_KERNEL_MARK"]
                           + BASE_FLAGS + _defines(options) + [str(src)], "preprocessing " + name)
                names = list(dict.fromkeys(_KERNEL.findall(pre)))
                src.write_text(source + "\n" + "".join(f"PN_EMU_EXPORT({n})\n" for n in names))
                obj = Path(tmp) / f"{name}.o"
                _run([cxx, "-c", "-x", "c++", "-include", str(hdr)] + flags + [str(src), "-o", str(obj)],
                     "compiling " + name)
                link = [cxx, "-shared", str(obj), "-o", str(Path(tmp) / "out.so")]
                if flag_mode == "asan":
                    link[1:1] = ["-fsanitize=address,undefined"]
                _run(link, "linking " + name)
                os.replace(Path(tmp) / "out.so", so)
                names_file.write_text("\n".join(names))
        module = Module(so, names_file.read_text().split())
        _loaded[key] = module
        return module
