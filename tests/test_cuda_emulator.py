"""The emulated CUDA device (pyneural.cuda.emulator) itself: planted bugs are reported naming the
kernel, block and thread; barriers, warp collectives, cp.async groups, atomics and the
ldmatrix / mma.sync fragment layouts behave as the PTX ISA manual says; launches are checked like
the driver does; every kernel family runs clean in race mode; and the whole CUDA test set passes
under AddressSanitizer + UBSan.

These tests drive the emulator directly (its CuPy-compatible namespace ``xp``), so they run
wherever it can (Linux x86-64 with g++), with or without a GPU. Kernels: tests/cuda_planted.cu.
"""
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import rel_err, subprocess_env
from pyneural.cuda import emulator
from pyneural.cuda.emulator import KernelFault

pytestmark = pytest.mark.skipif(not emulator.usable(), reason="the emulator needs Linux x86-64 and g++")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


@pytest.fixture(scope="module")
def xp():
    from pyneural.cuda.emulator import xp
    return xp


@pytest.fixture(scope="module")
def planted(xp):
    from pyneural.cuda import _backend
    common = _backend.expanded_source("common.cuh").replace("#pragma once", "")
    code = (HERE / "cuda_planted.cu").read_text().replace('#include "common.cuh"', common)
    return xp.RawModule(code=code, name="cuda_planted")


def run(planted, name, grid, block, args, shared_mem=0):
    planted.get_function(name)(grid, block, args, shared_mem=shared_mem)


def f32(xp, a):
    return xp.asarray(np.asarray(a, dtype=np.float32))


# ---- planted bugs: each reported, naming the kernel ------------------------------------------
def test_off_by_one_tail_is_reported(xp, planted, rng):
    n = 1000  # 4 blocks of 256 cover 1024 threads: thread 1000 is the one past the end
    x, y = f32(xp, rng.standard_normal(n)), xp.empty(n, np.float32)
    with pytest.raises(KernelFault, match=r"planted_tail_off_by_one: block \(3,0,0\), thread \(232,0,0\): "
                                          r"out-of-bounds global read of 4 bytes .* byte 4000 of argument 0, "
                                          r"which has 4000 bytes"):
        run(planted, "planted_tail_off_by_one", (4,), (256,), (x, y, np.int32(n)))
    run(planted, "fixed_tail", (4,), (256,), (x, y, np.int32(n)))
    assert np.array_equal(y.get(), 2 * x.get())


def test_missing_syncthreads_is_a_race(xp, planted, rng):
    x, y = f32(xp, rng.standard_normal(256)), xp.empty(256, np.float32)
    with emulator.racecheck(), pytest.raises(
            KernelFault, match=r"planted_missing_syncthreads: block \(0,0,0\), thread \(1,0,0\): race on shared "
                               r"memory at __shared__ planted_missing_syncthreads::tile \+ 4: this thread's "
                               r"write follows a read by thread 0"):
        run(planted, "planted_missing_syncthreads", (1,), (256,), (x, y, np.int32(256)))
    # checked mode finds it too: thread 0 reads a word no thread has written yet
    with pytest.raises(KernelFault, match=r"thread \(0,0,0\): shared read of 4 bytes at __shared__ "
                                          r"planted_missing_syncthreads::tile \+ 4 reads memory that no thread"):
        run(planted, "planted_missing_syncthreads", (1,), (256,), (x, y, np.int32(256)))
    with emulator.racecheck():
        run(planted, "fixed_syncthreads", (1,), (256,), (x, y, np.int32(256)))
    assert np.array_equal(y.get(), np.roll(x.get(), -1))


def test_misaligned_float4_is_reported(xp, planted, rng):
    x, y = f32(xp, rng.standard_normal(4 * 64 + 4)), xp.empty(64, np.float32)
    with pytest.raises(KernelFault, match=r"planted_misaligned_float4: block \(0,0,0\), thread \(0,0,0\): "
                                          r"misaligned 16-byte global read .*byte 4 of argument 0.*16-byte alignment"):
        run(planted, "planted_misaligned_float4", (1,), (64,), (x, y, np.int32(64)))
    run(planted, "fixed_float4", (1,), (64,), (x, y, np.int32(64)))
    assert rel_err(y.get(), x.get()[:256].reshape(64, 4).sum(1)) < 1e-6


def test_cp_async_destination_read_before_wait_is_reported(xp, planted, rng):
    x, y = f32(xp, rng.standard_normal(256)), xp.empty(256, np.float32)
    with pytest.raises(KernelFault, match=r"planted_cp_async_read_before_wait: block \(0,0,0\), thread \(0,0,0\): "
                                          r"shared read at __shared__ .*::tile \+ 0 touches the destination of a "
                                          r"cp.async .* not landed yet"):
        run(planted, "planted_cp_async_read_before_wait", (1,), (256,), (x, y, np.int32(256)))
    run(planted, "fixed_cp_async", (1,), (256,), (x, y, np.int32(256)))
    assert np.array_equal(y.get(), x.get())


@pytest.mark.parametrize("name,block,smem,pattern", [
    ("planted_shared_overflow", 65, 0, r"thread \(64,0,0\): out-of-bounds shared write of 4 bytes at __shared__ "
                                       r".*::small \+ 256: the variable has 256 bytes"),
    ("planted_dynamic_smem_overflow", 64, 256, r"thread \(63,0,0\): out-of-bounds shared read of 4 bytes at dynamic "
                                               r"shared memory \+ 256: the launch has 256 bytes"),
    ("planted_divergent_barrier", 64, 0, r"__syncthreads divergence"),
    ("planted_shfl_after_exit", 32, 0, r"__shfl_xor_sync with mask 0xffffffff: lanes 0x00000001 have already exited"),
    ("planted_wild_read", 32, 0, r"thread \(0,0,0\): invalid global read of 4 bytes .* not inside any array argument"),
    ("planted_trap", 32, 0, r"thread \(5,0,0\): __trap\(\) called"),
    ("planted_uninitialized_shared_read", 64, 0, r"thread \(63,0,0\): shared read of 4 bytes at __shared__ "
                                                 r".*::part \+ 252 reads memory that no thread of this block has written"),
])
def test_other_faults_are_reported(xp, planted, name, block, smem, pattern):
    x, y = xp.zeros(256, np.float32), xp.empty(256, np.float32)
    with pytest.raises(KernelFault, match=name + r": block \(0,0,0\), .*" + pattern):
        run(planted, name, (1,), (block,), (x, y, np.int32(64)), shared_mem=smem)
    run(planted, "fixed_tail", (1,), (256,), (x, y, np.int32(256)))  # the device is usable after a fault


# ---- semantics ---------------------------------------------------------------------------------
def test_barrier_really_waits_for_the_whole_block(xp, planted, rng):
    """Thread t reads what thread t+1 wrote: right only if no thread passes the barrier early."""
    x, y = f32(xp, rng.standard_normal(256)), xp.empty(256, np.float32)
    run(planted, "fixed_syncthreads", (1,), (256,), (x, y, np.int32(256)))
    assert np.array_equal(y.get(), np.roll(x.get(), -1))


def test_empty_is_poisoned_and_host_arrays_are_refused(xp):
    assert np.isnan(xp.empty((3, 5), np.float32).get()).all()
    assert np.isnan(xp.empty(7, np.float64).get()).all()
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(xp.zeros(3, np.float32))
    with pytest.raises(TypeError, match="numpy.ndarray .*host memory"):
        xp.zeros(3, np.float32) + np.ones(3, np.float32)
    a = xp.asarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    assert isinstance(a * 2 + 1, xp.ndarray) and np.array_equal((a * 2 + 1).get(), np.arange(6).reshape(2, 3) * 2 + 1)
    assert float(a.sum()) == 15.0 and a.T.shape == (3, 2) and a.data.ptr % 256 == 0


def test_cp_async_groups_land_at_their_wait(xp, planted, rng):
    x, y = f32(xp, rng.standard_normal(128)), xp.empty(256, np.float32)
    run(planted, "cp_async_groups", (1,), (32,), (x, y, np.int32(0)))
    host = x.get()
    zero_filled = host.reshape(32, 4).copy()
    zero_filled[1::2] = 0  # odd threads' copies had src-size 0
    assert np.array_equal(y.get()[:128], host)
    assert np.array_equal(y.get()[128:], zero_filled.ravel())


def test_warp_collectives(xp, planted, rng):
    threads = 64
    v = rng.integers(0, 16, threads).astype(np.int32)
    out = xp.empty(8 * threads, np.int32)
    run(planted, "warp_ops", (1,), (threads,), (xp.asarray(v), out, np.int32(threads)))
    got = out.get().reshape(8, threads)
    lane = np.arange(threads) % 32
    base = np.arange(threads) - lane
    exp = np.empty((8, threads), np.int64)
    exp[0] = v[base + (lane * 7 + 3) % 32]
    exp[1] = v[base + (lane ^ 5)]
    exp[2] = np.where(lane + 3 < 32, v[np.minimum(np.arange(threads) + 3, threads - 1)], v)
    exp[3] = np.where(lane >= 2, v[np.maximum(np.arange(threads) - 2, 0)], v)
    exp[4] = v[base + (lane & ~7) + 1]
    for w in range(threads // 32):
        seg = v[32 * w:32 * w + 32]
        exp[5, 32 * w:32 * w + 32] = np.int64(sum(1 << i for i in range(32) if seg[i] & 1)).astype(np.int32)
        exp[6, 32 * w:32 * w + 32] = int((seg == 7).any()) + 2
        exp[7, 32 * w:32 * w + 32] = seg.sum()
    exp[5] = exp[5].astype(np.uint32).view(np.int32) if exp[5].dtype != np.int32 else exp[5]
    assert np.array_equal(got[:5], exp[:5])
    assert np.array_equal(got[5].view(np.uint32), (exp[5] & 0xffffffff).astype(np.uint32))
    assert np.array_equal(got[6:], exp[6:])


def test_atomics_on_shared_memory_do_not_race(xp, planted, rng):
    x, y = f32(xp, rng.integers(-8, 8, 256)), xp.empty(1, np.float32)
    with emulator.racecheck():
        run(planted, "shared_atomics", (1,), (256,), (x, y, np.int32(256)))
    assert y.get()[0] == x.get().sum()


@pytest.mark.parametrize("trans", [0, 1])
def test_ldmatrix_fragment_layout(xp, planted, rng, trans):
    """Lane l gets, of each 8 x 8 matrix j, row l/4 and columns 2(l%4), 2(l%4)+1 (of the transpose
    with .trans), low half first."""
    tile = rng.integers(0, 2**16, (32, 8)).astype(np.uint16)
    out = xp.empty(32 * 4, np.uint32)
    run(planted, "ldmatrix_x4", (1,), (32,), (xp.asarray(tile), out, np.int32(trans)))
    mats = tile.reshape(4, 8, 8)
    if trans:
        mats = mats.transpose(0, 2, 1)
    exp = np.empty((32, 4), np.uint32)
    for lane in range(32):
        r, c = lane // 4, 2 * (lane % 4)
        for j in range(4):
            exp[lane, j] = int(mats[j, r, c]) | (int(mats[j, r, c + 1]) << 16)
    assert np.array_equal(out.get().reshape(32, 4), exp)


@pytest.mark.parametrize("kind", ["bfloat16", "float16", "tf32"])
def test_mma_sync_matches_float64(xp, planted, rng, kind):
    k = 8 if kind == "tf32" else 16
    a, b, c = rng.standard_normal((16, k)), rng.standard_normal((k, 8)), rng.standard_normal((16, 8))
    dummy32, dummy16 = xp.zeros(1, np.uint32), xp.zeros(1, np.uint16)
    if kind == "tf32":
        a32, b32 = a.astype(np.float32), b.astype(np.float32)
        tf = lambda m: ((m.view(np.uint32) + 0x1000) & 0xffffe000).view(np.float32)  # noqa: E731 (cvt.rna)
        ref = tf(a32).astype(np.float64) @ tf(b32).astype(np.float64) + c.astype(np.float32)
        # the kernel passes raw fp32 bits: the tensor core truncates them to tf32's 19 bits
        trunc = lambda m: (m.view(np.uint32) & 0xffffe000).view(np.float32).astype(np.float64)  # noqa: E731
        ref = trunc(a32) @ trunc(b32) + c.astype(np.float32)
        args = (xp.asarray(a32.view(np.uint32)), dummy16, xp.asarray(b32.view(np.uint32)), dummy16)
        code = 2
    else:
        if kind == "bfloat16":
            ml_dtypes = pytest.importorskip("ml_dtypes")
            dt = np.dtype(ml_dtypes.bfloat16)
        else:
            dt = np.dtype(np.float16)
        a16, b16 = a.astype(dt), b.astype(dt)
        ref = a16.astype(np.float64) @ b16.astype(np.float64) + c.astype(np.float32)
        args = (dummy32, xp.asarray(a16.view(np.uint16)), dummy32, xp.asarray(b16.view(np.uint16)))
        code = 0 if kind == "bfloat16" else 1
    d = xp.empty((16, 8), np.float32)
    run(planted, "mma_one_tile", (1,), (32,), args + (f32(xp, c), d, np.int32(code)))
    assert rel_err(d.get(), ref) < 1e-6


# ---- launches are checked like the driver does --------------------------------------------------
def test_launch_checks(xp, planted):
    x, y = xp.zeros(64, np.float32), xp.empty(64, np.float32)
    fn = planted.get_function("fixed_tail")
    with pytest.raises(TypeError, match=r"fixed_tail: argument 2 is `int`: pass np.int32\(...\), got int 64"):
        fn((1,), (64,), (x, y, 64))
    with pytest.raises(TypeError, match=r"argument 2 is `int`: pass np.int32\(...\), got np.int64"):
        fn((1,), (64,), (x, y, np.int64(64)))
    with pytest.raises(TypeError, match=r"argument 0 is a numpy.ndarray \(host memory"):
        fn((1,), (64,), (np.zeros(64, np.float32), y, np.int32(64)))
    with pytest.raises(TypeError, match="takes 3 arguments, got 2"):
        fn((1,), (64,), (x, y))
    with pytest.raises(ValueError, match="more than 1024 threads"):
        fn((1,), (64, 32), (x, y, np.int32(64)))
    with pytest.raises(ValueError, match=r"grid.y = 70000 is outside"):
        fn((1, 70000), (64,), (x, y, np.int32(64)))
    with pytest.raises(RuntimeError, match="exceed the kernel's limit of 49152"):
        fn((1,), (64,), (x, y, np.int32(64)), shared_mem=64 * 1024)
    with pytest.raises(ValueError, match="no kernel named 'nope'"):
        planted.get_function("nope")


def test_wgmma_is_refused_on_the_emulated_device(monkeypatch):
    monkeypatch.setenv(emulator.ENV, "1")
    from pyneural.cuda import tensor_core as tc
    from pyneural.cuda.emulator import xp
    a = xp.ones((64, 64), np.float16)
    with pytest.raises(NotImplementedError, match="wgmma.*runs only on a real sm_90 GPU"):
        tc.matmul_tc(a, a, trans_b=True, kernel="wgmma")


# ---- every kernel family in race mode --------------------------------------------------------
needs_emulated_backend = pytest.mark.skipif(not emulator.enabled(), reason="pyneural.cuda runs on a real GPU here")


def _family_sgemm(cp, rng):
    from pyneural.cuda.gemm import gemm
    a, b = rng.standard_normal((130, 70)), rng.standard_normal((70, 129))
    return rel_err(gemm(cp.asarray(a.astype(np.float32)), cp.asarray(b.astype(np.float32))).get(), a @ b) < 1e-5


def _family_conv(cp, rng):
    from pyneural.cuda import conv
    from pyneural.kernels import conv as cpu
    x, w = rng.standard_normal((2, 5, 9, 7)), rng.standard_normal((6, 5, 3, 3))
    dy = rng.standard_normal((2, 6, 9, 7))
    xd, wd, dyd = (cp.asarray(v.astype(np.float32)) for v in (x, w, dy))
    ok = rel_err(conv.conv2d_forward(xd, wd, padding=1).get(), cpu.conv2d_forward(x, w, padding=1)) < 1e-5
    ok &= rel_err(conv.conv2d_backward_data(dyd, wd, x.shape, padding=1).get(),
                  cpu.conv2d_backward_data(dy, w, x.shape, padding=1)) < 1e-5
    ok &= rel_err(conv.conv2d_backward_weight(dyd, xd, w.shape, padding=1).get(),
                  cpu.conv2d_backward_weight(dy, x, w.shape, padding=1)) < 1e-5
    return ok


def _family_pool(cp, rng):
    from pyneural.cuda import pool
    from pyneural.kernels import pool as cpu
    x = rng.standard_normal((2, 3, 9, 7)).astype(np.float32)
    y, _ = pool.max_pool2d_forward(cp.asarray(x), 3, 2, 1)
    return rel_err(y.get(), cpu.max_pool2d_forward(x.astype(np.float64), 3, 2, 1)[0]) < 1e-6


def _family_softmax(cp, rng):
    from pyneural.cuda import softmax
    x = rng.standard_normal((7, 1001))
    out = softmax.softmax(cp.asarray(x.astype(np.float32)))
    e = np.exp(x - x.max(1, keepdims=True))
    lse = np.log(e.sum(1)) + x.max(1)
    return (rel_err(out.get(), e / e.sum(1, keepdims=True)) < 1e-5
            and rel_err(softmax.logsumexp(cp.asarray(x.astype(np.float32))).get(), lse) < 1e-5)


def _family_batchnorm(cp, rng):
    from pyneural.cuda import batchnorm
    x, dy = rng.standard_normal((4, 3, 5, 6)).astype(np.float32), rng.standard_normal((4, 3, 5, 6)).astype(np.float32)
    mean, var = batchnorm.batch_stats(cp.asarray(x))
    _, _, dbeta = batchnorm.batch_norm_backward(cp.asarray(x), cp.asarray(dy), mean, var)
    return (rel_err(mean.get(), x.mean((0, 2, 3))) < 1e-5 and rel_err(var.get(), x.var((0, 2, 3))) < 1e-4
            and rel_err(dbeta.get(), dy.sum((0, 2, 3))) < 1e-5)


def _family_reduce(cp, rng):
    from pyneural.cuda import reduce
    x = rng.standard_normal((37, 300))
    return rel_err(reduce.sum(cp.asarray(x.astype(np.float32)), 1).get(), x.sum(1)) < 1e-5


def _family_elementwise(cp, rng):
    from pyneural.cuda import elementwise as ew
    x = rng.standard_normal(1001).astype(np.float32)
    return rel_err(ew.axpby(2.0, cp.asarray(x), -1.0, cp.asarray(x)).get(), x) < 1e-6


def _family_embedding(cp, rng):
    from pyneural.cuda import embedding as emb
    w = rng.standard_normal((50, 8)).astype(np.float32)
    idx = rng.integers(0, 50, 37).astype(np.int64)
    ok = np.array_equal(emb.embedding_forward(cp.asarray(w), cp.asarray(idx)).get(), w[idx])
    dout = rng.standard_normal((37, 8)).astype(np.float32)
    ref = np.zeros_like(w)
    np.add.at(ref, idx, dout)
    for det in (False, True):
        ok &= rel_err(emb.embedding_backward(cp.asarray(dout), cp.asarray(idx), 50, deterministic=det).get(), ref) < 1e-5
    return ok


def _family_tensor_core(cp, rng):
    from pyneural.cuda import tensor_core as tc
    ok = True
    for dt in (np.float16, np.float32):
        a, b = rng.standard_normal((130, 72)).astype(dt), rng.standard_normal((72, 129)).astype(dt)
        out = tc.matmul_tc(cp.asarray(a), cp.asarray(b), out_dtype=np.float32, kernel="mma")
        ok &= rel_err(out.get(), a.astype(np.float64) @ b.astype(np.float64)) < 1e-2
    return ok


FAMILIES = {name[len("_family_"):]: fn for name, fn in globals().items() if name.startswith("_family_")}


@needs_emulated_backend
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_kernel_family_is_race_free(family, rng):
    from pyneural.cuda import _backend
    with emulator.racecheck():
        assert FAMILIES[family](_backend.cupy(), rng)


# ---- AddressSanitizer + UBSan --------------------------------------------------------------------
def _libasan():
    try:
        path = subprocess.run(["g++", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return None
    return path if os.path.isabs(path) and os.path.exists(path) else None


def _asan_env():
    lib = _libasan()
    if lib is None:
        pytest.skip("g++ has no libasan here")
    return subprocess_env(LD_PRELOAD=lib, PYNEURAL_CUDA_EMULATE="asan", ASAN_OPTIONS="detect_leaks=0",
                          UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")


@pytest.mark.slow
def test_cuda_tests_pass_under_asan_and_ubsan(tmp_path):
    env = _asan_env()
    tests = [str(HERE / f) for f in ("test_cuda_kernels.py", "test_cuda_tensor_core.py")]
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "--rootdir",
                           str(REPO), *tests], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout


def test_asan_finds_the_off_by_one_tail(tmp_path):
    env = _asan_env()
    script = f"""
import numpy as np
from pyneural.cuda import _backend
from pyneural.cuda.emulator import xp
common = _backend.expanded_source("common.cuh").replace("#pragma once", "")
code = open({str(HERE / 'cuda_planted.cu')!r}).read().replace('#include "common.cuh"', common)
fn = xp.RawModule(code=code, name="cuda_planted").get_function("planted_tail_off_by_one")
x, y = xp.zeros(1000, np.float32), xp.empty(1000, np.float32)
fn((4,), (256,), (x, y, np.int32(1000)))
print("no report")
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0 and "no report" not in proc.stdout, proc.stdout + proc.stderr[-3000:]
    assert "ERROR: AddressSanitizer: use-after-poison" in proc.stderr, proc.stderr[-3000:]
    assert "planted_tail_off_by_one" in proc.stderr, proc.stderr[-3000:]


def test_framework_sees_emulated_arrays_as_device_arrays(xp):
    from pyneural.backend import device_of
    from pyneural.tensor import get_array_module
    a = xp.zeros(3, np.float32)
    assert get_array_module(a) is xp and device_of(a) == "cuda"
    assert get_array_module(np.zeros(3)) is np


def test_unavailable_reason_names_the_cause(monkeypatch):
    from pyneural.cuda import _backend
    monkeypatch.setenv(emulator.ENV, "1")
    assert _backend.unavailable_reason() is None and _backend.available()
    monkeypatch.setenv(emulator.ENV, "0")
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError
    assert "CuPy" in _backend.unavailable_reason() and not _backend.available()
