"""Tensor-core GEMM on CuPy arrays: ``matmul_tc`` launches csrc/cuda/gemm_tc_mma.cu (mma.sync, sm_80+)
or, on sm_90 devices for the "nt" layout, csrc/cuda/gemm_tc_wgmma.cu (TMA + wgmma, sm_90a).

    C = act(alpha * op(a) @ op(b) + beta * out + bias)

op(a) is ``a.T`` when ``trans_a`` (a stored [K, M]) else ``a`` ([M, K]); op(b) is ``b.T`` when
``trans_b`` (b stored [N, K]) else ``b`` ([K, N]). A Linear layer: forward ``matmul_tc(x, W,
trans_b=True, bias=b)``, dX ``matmul_tc(dY, W)``, dW ``matmul_tc(dY, X, trans_a=True)``.

Inputs: bfloat16 (CuPy with ml_dtypes) or float16, accumulated in fp32; float32 inputs run as tf32.
Outputs: float32, or the input dtype for 16-bit inputs. ``beta == 0`` never reads ``out``.
All launch arithmetic (grid, block, shared memory, flags, tensor maps) lives in this module.

Loading: sources are found and expanded by ``pyneural.cuda._backend``, but these kernels are launched
through their own cached ``cupy.RawModule`` rather than ``_backend.launch``, which does not yet take
what they need: 16-bit array arguments in the native path, a 128-byte by-value tensor-map argument,
dynamic shared memory above 48 KB, and an ``sm_90a`` NVRTC target for the wgmma file.
"""
import ctypes
import functools
import hashlib
import os
from pathlib import Path

import numpy as np

from pyneural.cuda import _backend
from pyneural.kernels._checks import check_array

_FN = "matmul_tc"

# gemm_tc_mma.cu
MMA_BLOCK = (128, 128)      # (BM, BN)
MMA_THREADS = 256
MMA_STAGES = 3              # PN_TC_STAGES; 4 (64 KB) is the first thing to try on the H100
MMA_STAGE_BYTES = 16384
# gemm_tc_wgmma.cu
WGMMA_BLOCK = (128, 256)
WGMMA_BK = 64
WGMMA_THREADS = 384
WGMMA_SMEM = 4 * 49152 + 2 * 4 * 8 + 1024  # SMEM_BYTES there

ACTIVATIONS = {None: 0, "none": 0, "relu": 1, "gelu": 2}
_KIND = {"bfloat16": "bf16", "float16": "f16", "float32": "tf32"}
_OUT_KIND = {"float32": 0, "bfloat16": 1, "float16": 2}
_VEC = {"bf16": 8, "f16": 8, "tf32": 4}  # elements per 16-byte copy
_TMA_DTYPE = {"bf16": 9, "f16": 6}       # CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 / FLOAT16


def _cupy():
    return _backend.cupy()  # ImportError naming the CuPy wheel to install


# ---- argument checks ---------------------------------------------------------------------------
@functools.cache
def _input_dtypes():
    """The dtypes the kernels take, bfloat16 first where ml_dtypes provides it (a CuPy without it
    cannot hold bfloat16 arrays either). Asked at the first call, not at import: importing
    ml_dtypes takes over a second."""
    try:
        import ml_dtypes
    except ImportError:
        return (np.float16, np.float32)
    return (ml_dtypes.bfloat16, np.float16, np.float32)


def _check_matrix(name, x):
    return check_array(_FN, name, x, ndim=2, dtypes=_input_dtypes(), on="cuda")


def _plan(a, b, trans_a, trans_b, bias, activation, out_dtype, out):
    """Validate everything; return (kind, M, N, K, out_dtype, activation code)."""
    _check_matrix("a", a)
    _check_matrix("b", b)
    if a.dtype != b.dtype:
        raise TypeError(f"{_FN}: a and b must share one dtype, got a={a.dtype} {a.shape}, b={b.dtype} {b.shape}")
    kind = _KIND[a.dtype.name]
    M, K = (a.shape[1], a.shape[0]) if trans_a else a.shape
    Kb, N = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if K != Kb:
        raise ValueError(f"{_FN}: inner dimensions differ: op(a) is {M}x{K} (a {a.shape}, trans_a={trans_a}), "
                         f"op(b) is {Kb}x{N} (b {b.shape}, trans_b={trans_b})")
    if max(M, N, K) >= 2**31:
        raise ValueError(f"{_FN}: dimensions must be < 2^31, got M={M} N={N} K={K}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"{_FN}: activation must be None, 'relu' or 'gelu', got {activation!r}")
    if out is not None:
        _check_matrix("out", out)
    if out_dtype is None:
        out_dtype = out.dtype if out is not None else a.dtype
    out_dtype = np.dtype(out_dtype)
    allowed = {"float32"} | ({a.dtype.name} if kind != "tf32" else set())
    if out_dtype.name not in allowed:
        raise TypeError(f"{_FN}: out_dtype must be one of {sorted(allowed)} for {a.dtype} inputs, got {out_dtype}")
    if bias is not None:
        check_array(_FN, "bias", bias, ndim=1, dtypes=_input_dtypes(), on="cuda")
        if bias.shape != (N,):
            raise ValueError(f"{_FN}: bias must have shape ({N},) to match N, got {bias.shape}")
    if out is not None and (out.shape != (M, N) or out.dtype != out_dtype):
        raise ValueError(f"{_FN}: out must be a {out_dtype} array of shape ({M}, {N}), got {out.dtype} {out.shape}")
    return kind, M, N, K, out_dtype, ACTIVATIONS[activation]


# ---- kernel loading ----------------------------------------------------------------------------
_modules = {}


def _cache_dir():
    d = Path(os.environ.get("PYNEURAL_CUDA_CACHE", Path.home() / ".cache" / "pyneural" / "cuda"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _module(cp, filename, arch=None):
    """cupy.RawModule of one .cu file, cached per (file, device arch). ``arch`` like "sm_90a" compiles
    with NVRTC for exactly that target (CuPy itself only picks plain sm_XX); otherwise CuPy chooses."""
    key = (filename, arch, cp.cuda.Device().id)
    if key not in _modules:
        src = _backend.expanded_source(filename)
        options = ("-std=c++17", f"-DPN_TC_STAGES={MMA_STAGES}")
        if arch is None:
            _modules[key] = cp.RawModule(code=src, options=options)
        else:
            digest = hashlib.sha256((src + arch + repr(options)).encode()).hexdigest()[:24]
            path = _cache_dir() / f"{Path(filename).stem}_{arch}_{digest}.cubin"
            if not path.is_file():
                from cupy_backends.cuda.libs import nvrtc
                prog = nvrtc.createProgram(src, filename, (), ())
                try:
                    try:
                        nvrtc.compileProgram(prog, options + (f"--gpu-architecture={arch}",))
                    except nvrtc.NVRTCError:
                        raise RuntimeError(f"{_FN}: NVRTC failed on {filename} for {arch}:\n"
                                           f"{nvrtc.getProgramLog(prog)}") from None
                    tmp = path.with_suffix(f".{os.getpid()}.tmp")
                    tmp.write_bytes(nvrtc.getCUBIN(prog))
                    os.replace(tmp, path)
                finally:
                    nvrtc.destroyProgram(prog)
            _modules[key] = cp.RawModule(path=str(path))
    return _modules[key]


def _kernel(cp, filename, name, smem, arch=None):
    fn = _module(cp, filename, arch).get_function(name)
    if smem > 48 * 1024 and fn.max_dynamic_shared_size_bytes < smem:
        fn.max_dynamic_shared_size_bytes = smem
    return fn


# ---- TMA descriptors (driver API through ctypes: nothing to link) ------------------------------
_libcuda = None


def struct_arg(raw):
    """A struct passed to a kernel by value (``raw``: its bytes) in the form every CuPy launch takes:
    a one-element numpy array, whose data pointer CuPy hands the driver as that parameter (CuPy 12,
    13 and 14 all pass a size-one numpy.ndarray by value: ``_pointer`` in cupy/cuda/function.pyx).
    Not a numpy.void scalar: CuPy 12 and 13 take only numeric scalars ("Unsupported type"), and
    CuPy 14 packs a scalar into a 64-byte buffer, too small for a 128-byte tensor map."""
    return np.frombuffer(bytes(raw), dtype=np.dtype((np.void, len(raw))))


def _tensor_map(ptr, rows, k, box_rows, kind):
    """2-D tiled tensor map over a row-major [rows, k] 16-bit matrix: box {64, box_rows}, 128B swizzle,
    out-of-bounds elements read as zero. Returned as a 128-byte by-value kernel argument (struct_arg)."""
    global _libcuda
    if _libcuda is None:
        _libcuda = ctypes.CDLL("libcuda.so.1")
        _libcuda.cuTensorMapEncodeTiled.restype = ctypes.c_int
    raw = np.zeros(256, np.uint8)
    off = (-raw.ctypes.data) % 128  # CUtensorMap is 128-byte aligned
    u64, u32 = ctypes.c_uint64, ctypes.c_uint32
    res = _libcuda.cuTensorMapEncodeTiled(
        ctypes.c_void_p(raw.ctypes.data + off), ctypes.c_int(_TMA_DTYPE[kind]), u32(2), ctypes.c_void_p(ptr),
        (u64 * 2)(k, rows), (u64 * 1)(k * 2), (u32 * 2)(WGMMA_BK, box_rows), (u32 * 2)(1, 1),
        ctypes.c_int(0), ctypes.c_int(3), ctypes.c_int(3), ctypes.c_int(0))  # interleave none, 128B, L2 256B, fill 0
    if res != 0:
        raise RuntimeError(f"{_FN}: cuTensorMapEncodeTiled failed with CUresult {res} "
                           f"(rows={rows}, k={k}, box_rows={box_rows}, ptr=0x{ptr:x})")
    return struct_arg(raw[off:off + 128].tobytes())


# ---- dispatch ----------------------------------------------------------------------------------
def _wgmma_shape_ok(kind, a, b, trans_a, trans_b, K):
    return (kind in ("bf16", "f16") and not trans_a and trans_b and K % 8 == 0 and a.data.ptr % 16 == 0
            and b.data.ptr % 16 == 0)


def _wgmma_eligible(cp, kind, a, b, trans_a, trans_b, K):
    return cp.cuda.Device().compute_capability == "90" and _wgmma_shape_ok(kind, a, b, trans_a, trans_b, K)


def matmul_tc(a, b, *, trans_a=False, trans_b=False, bias=None, activation=None, out_dtype=None, out=None,
              alpha=1.0, beta=0.0, kernel="auto"):
    """C = act(alpha * op(a) @ op(b) + beta * out + bias) on the tensor cores; returns C.

    a, b: 2-D C-contiguous cupy arrays of one dtype (bfloat16, float16, or float32 computed as tf32).
    bias: (N,) array (cast to float32) or None. activation: None, "relu" or "gelu" (exact erf).
    out_dtype: float32 or the input dtype (default: ``out``'s dtype, else the input dtype).
    out: optional (M, N) output (needed for beta != 0). kernel: "auto", "mma" or "wgmma".
    """
    cp = _cupy()
    if kernel not in ("auto", "mma", "wgmma"):
        raise ValueError(f"{_FN}: kernel must be 'auto', 'mma' or 'wgmma', got {kernel!r}")
    kind, M, N, K, out_dtype, act = _plan(a, b, trans_a, trans_b, bias, activation, out_dtype, out)
    if beta != 0 and out is None:
        raise ValueError(f"{_FN}: beta={beta} needs out= (the C that is accumulated into)")
    if out is None:
        out = cp.empty((M, N), dtype=out_dtype)
    bias32 = None if bias is None else cp.ascontiguousarray(bias, dtype=cp.float32)
    bias_arg = bias32 if bias32 is not None else np.uint64(0)
    out_kind = _OUT_KIND[out_dtype.name]
    c_pair = 4 if (N % 2 == 0 and out.data.ptr % (2 * out.itemsize) == 0) else 0
    scalars = (np.float32(alpha), np.float32(beta), np.int32(act), np.int32(out_kind))

    use_wgmma = kernel == "wgmma" or (kernel == "auto" and _wgmma_eligible(cp, kind, a, b, trans_a, trans_b, K))
    if use_wgmma and getattr(cp.cuda, "emulated", False) and _wgmma_shape_ok(kind, a, b, trans_a, trans_b, K):
        raise NotImplementedError(f"{_FN}: kernel='wgmma' (TMA, mbarrier transaction counts, wgmma: Hopper-only "
                                  f"instructions) runs only on a real sm_90 GPU; the emulated CUDA device runs the "
                                  f"mma.sync kernel (kernel='mma' or 'auto')")
    if use_wgmma:
        if not _wgmma_eligible(cp, kind, a, b, trans_a, trans_b, K):
            raise ValueError(f"{_FN}: kernel='wgmma' needs an sm_90 device, bf16/fp16 inputs, trans_a=False, "
                             f"trans_b=True, K % 8 == 0 and 16-byte aligned inputs; got {a.dtype}, "
                             f"trans_a={trans_a}, trans_b={trans_b}, K={K}")
        bm, bn = WGMMA_BLOCK
        tiles = -(-M // bm) * -(-N // bn)
        sms = _backend.sm_count(cp.cuda.Device().id)
        fn = _kernel(cp, "gemm_tc_wgmma.cu", f"pn_tc_wgmma_{kind}_nt", WGMMA_SMEM, arch="sm_90a")
        fn((min(tiles, sms),), (WGMMA_THREADS,),
           (_tensor_map(a.data.ptr, M, K, bm, kind), _tensor_map(b.data.ptr, N, K, bn, kind), out, bias_arg,
            np.int32(M), np.int32(N), np.int32(K), np.int32(N)) + scalars + (np.int32(c_pair),),
           shared_mem=WGMMA_SMEM)
        return out

    lda, ldb = a.shape[1], b.shape[1]
    vec = _VEC[kind]
    flags = c_pair
    flags |= 1 if (lda % vec == 0 and a.data.ptr % 16 == 0) else 0
    flags |= 2 if (ldb % vec == 0 and b.data.ptr % 16 == 0) else 0
    layout = ("t" if trans_a else "n") + ("t" if trans_b else "n")
    bm, bn = MMA_BLOCK
    smem = MMA_STAGES * MMA_STAGE_BYTES
    fn = _kernel(cp, "gemm_tc_mma.cu", f"pn_tc_mma_{kind}_{layout}", smem)
    fn((-(-M // bm) * -(-N // bn),), (MMA_THREADS,),
       (a, b, out, bias_arg, np.int32(M), np.int32(N), np.int32(K), np.int32(lda), np.int32(ldb), np.int32(N))
       + scalars + (np.int32(flags),), shared_mem=smem)
    return out
