"""Dropout (Philox4x32-10), NHWC pooling and the gradient norm / clipping kernels of csrc/cuda,
against numpy references: the same style as test_cuda_kernels.py (fresh rng inputs, sizes that do
not divide the 256-thread blocks or the 4-element Philox groups, NaN-poisoned outputs, float64
references). On a GPU each test runs on both kernel sources (prebuilt pyneural._cuda, skipped if
not built, and cupy.RawModule); without one, on the emulated device. Marked ``cuda``.
"""
import math

import numpy as np
import pytest

from conftest import dev, host, poison, rel_err
from pyneural.cuda import available, emulator
from pyneural.kernels import pool as cpu_pool

pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("cuda_backend"),
              pytest.mark.skipif(not available(), reason="needs CuPy and a CUDA GPU with compute capability >= 8.0, or the emulated device")]

TOL = 1e-5


def seed_of(rng):
    return int(rng.integers(0, 2**63)) * 2 + 1  # odd, so the key's high word is never zero


# ---- dropout -------------------------------------------------------------------------------------
def test_host_philox_matches_the_random123_known_answers():
    from pyneural.cuda.dropout import philox4x32_10
    kat = [((0, 0, 0, 0), (0, 0), (0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8)),
           ((0xffffffff,) * 4, (0xffffffff,) * 2, (0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd)),
           ((0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344), (0xa4093822, 0x299f31d0),
            (0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1))]
    for counter, key, want in kat:
        got = philox4x32_10([np.array([c], np.uint32) for c in counter], key)
        assert [int(w[0]) for w in got] == list(want)


@pytest.mark.parametrize("shape", [(1,), (3,), (4,), (5,), (1031,), (3, 7, 129)])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.87])
def test_dropout_mask_is_the_host_philox_mask_bit_for_bit(cp, rng, shape, p):
    from pyneural.cuda import dropout
    seed, offset = seed_of(rng), int(rng.integers(0, 2**64, dtype=np.uint64))  # both words of both
    want = dropout.keep_mask(shape, p, seed, offset)
    ones = poison(cp, shape)
    dropout.dropout_forward(cp.ones(shape, np.float32), p, seed, offset, out=ones)
    y1 = ones.get()
    assert np.array_equal(y1 != 0, want)
    assert np.all(y1[want] == np.float32(1 / (1 - p)))

    x, dy = rng.standard_normal(shape), rng.standard_normal(shape)
    y = dropout.dropout_forward(dev(cp, x), p, seed, offset)
    assert rel_err(host(y), x * want / (1 - p)) < 1e-6
    dx = poison(cp, shape)
    dropout.dropout_backward(dev(cp, dy), p, seed, offset, out=dx)
    assert rel_err(host(dx), dy * want / (1 - p)) < 1e-6


@pytest.mark.parametrize("p", [0.05, 0.5, 0.9])
def test_dropout_keeps_a_binomial_fraction(cp, rng, p):
    from pyneural.cuda import dropout
    n = 300_001  # > one sweep of the capped grid: the grid-stride loop wraps
    y = dropout.dropout_forward(cp.ones(n, np.float32), p, seed_of(rng), int(rng.integers(0, 2**32))).get()
    kept = int(np.count_nonzero(y))
    assert abs(kept - n * (1 - p)) < 5 * math.sqrt(n * p * (1 - p)), (kept, n * (1 - p))


def test_dropout_is_reproducible_and_each_offset_is_its_own_stream(cp, rng):
    from pyneural.cuda import dropout
    x = dev(cp, rng.standard_normal(40_003) + 3)  # no zeros: y == 0 exactly where dropped
    seed, offset = seed_of(rng), int(rng.integers(0, 2**40))
    a = dropout.dropout_forward(x, 0.5, seed, offset).get()
    assert a.tobytes() == dropout.dropout_forward(x, 0.5, seed, offset).get().tobytes()
    for other in (dropout.dropout_forward(x, 0.5, seed, offset + 1), dropout.dropout_forward(x, 0.5, seed + 2, offset)):
        differ = np.count_nonzero((a == 0) != (other.get() == 0))
        assert abs(differ - x.size / 2) < 5 * math.sqrt(x.size / 4)  # independent masks differ at half the places
    # a pure function of the element index: a prefix (a smaller grid) gets the same mask
    head = dropout.dropout_forward(x[:1001], 0.5, seed, offset).get()
    assert head.tobytes() == a[:1001].tobytes()


def test_dropout_edge_probabilities_and_bad_arguments(cp, rng):
    from pyneural.cuda import dropout
    x = rng.standard_normal(999).astype(np.float32)
    xd = dev(cp, x)
    assert dropout.dropout_forward(xd, 0.0, 7).get().tobytes() == x.tobytes()
    assert np.all(dropout.dropout_forward(xd, 1.0, 7).get() == 0)
    assert np.all(dropout.dropout_backward(xd, 1.0, 7).get() == 0)
    assert not dropout.keep_mask(x.shape, 1.0, 7).any() and dropout.keep_mask(x.shape, 0.0, 7).all()
    nan = dropout.dropout_forward(dev(cp, [np.nan] * 8), 0.5, 7).get()
    assert np.all(np.isnan(nan))  # x * mask * scale: dropped NaN stays NaN, as in PyTorch
    inplace = dev(cp, x)
    dropout.dropout_forward(inplace, 0.3, 11, 5, out=inplace)
    assert inplace.get().tobytes() == dropout.dropout_forward(xd, 0.3, 11, 5).get().tobytes()
    assert dropout.dropout_forward(cp.zeros((0, 3), np.float32), 0.5, 1).shape == (0, 3)
    for p in (-0.1, 1.5, float("nan"), None, True):
        with pytest.raises(ValueError, match="p must be a probability"):
            dropout.dropout_forward(xd, p, 1)
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 2\*\*64\)"):
        dropout.dropout_forward(xd, 0.5, -1)
    with pytest.raises(ValueError, match="offset must be an int"):
        dropout.dropout_backward(xd, 0.5, 1, 2**64)
    with pytest.raises(TypeError, match="dtype float32"):
        dropout.dropout_forward(cp.zeros(4, np.float64), 0.5, 1)


# ---- NHWC pooling --------------------------------------------------------------------------------
def nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def nchw(a):
    return a.transpose(0, 3, 1, 2)


POOL_CASES = [(2, 2, 0), (3, 2, 1), (3, 1, 1), ((3, 2), (1, 2), (1, 0)), (4, 3, 2)]


@pytest.mark.parametrize("c", [1, 5, 67])
@pytest.mark.parametrize("k,s,p", POOL_CASES)
def test_nhwc_max_pooling_matches_the_cpu_reference(cp, rng, k, s, p, c):
    from pyneural.cuda import pool
    x = rng.integers(-3, 4, (2, c, 11, 9)).astype(np.float32)  # few values: many ties
    x[rng.random(x.shape) < 0.02] = np.nan
    x[rng.random(x.shape) < 0.05] = -np.inf
    y_ref, arg_ref = cpu_pool.max_pool2d_forward(x.astype(np.float64), k, s, p)
    y, arg = pool.max_pool2d_forward(dev(cp, nhwc(x)), k, s, p, layout="NHWC")
    assert y.shape == nhwc(y_ref).shape and arg.shape == y.shape
    assert np.array_equal(nchw(host(y)), y_ref, equal_nan=True) and np.array_equal(nchw(arg.get()), arg_ref)
    dy = rng.standard_normal(y_ref.shape)
    dx = pool.max_pool2d_backward(dev(cp, nhwc(dy)), arg, nhwc(x).shape, k, s, p, layout="NHWC")
    assert rel_err(nchw(host(dx)), cpu_pool.max_pool2d_backward(dy, arg_ref, x.shape)) < TOL
    # the same operations in the same order as the NCHW kernels: equal bit for bit
    y0, arg0 = pool.max_pool2d_forward(dev(cp, x), k, s, p)
    assert nhwc(y0.get()).tobytes() == y.get().tobytes() and nhwc(arg0.get()).tobytes() == arg.get().tobytes()
    dx0 = pool.max_pool2d_backward(dev(cp, dy), arg0, x.shape, k, s, p)
    assert nhwc(dx0.get()).tobytes() == dx.get().tobytes()


@pytest.mark.parametrize("c", [1, 5, 67])
@pytest.mark.parametrize("k,s,p", POOL_CASES)
def test_nhwc_avg_pooling_matches_the_cpu_reference(cp, rng, k, s, p, c):
    from pyneural.cuda import pool
    x = rng.standard_normal((3, c, 10, 7))
    y_shape = cpu_pool.avg_pool2d_forward(x, k, s, p).shape
    dy = rng.standard_normal(y_shape)
    for cip in (True, False):
        y = pool.avg_pool2d_forward(dev(cp, nhwc(x)), k, s, p, count_include_pad=cip, layout="NHWC")
        assert rel_err(nchw(host(y)), cpu_pool.avg_pool2d_forward(x, k, s, p, cip)) < TOL
        dx = pool.avg_pool2d_backward(dev(cp, nhwc(dy)), nhwc(x).shape, k, s, p, count_include_pad=cip,
                                      layout="NHWC")
        assert rel_err(nchw(host(dx)), cpu_pool.avg_pool2d_backward(dy, x.shape, k, s, p, cip)) < TOL
        y0 = pool.avg_pool2d_forward(dev(cp, x), k, s, p, count_include_pad=cip)
        dx0 = pool.avg_pool2d_backward(dev(cp, dy), x.shape, k, s, p, count_include_pad=cip)
        assert nhwc(y0.get()).tobytes() == y.get().tobytes() and nhwc(dx0.get()).tobytes() == dx.get().tobytes()


def test_nhwc_pooling_bad_inputs(cp):
    from pyneural.cuda import pool
    x = cp.zeros((2, 8, 6, 3), np.float32)  # NHWC: H 8, W 6, C 3
    with pytest.raises(ValueError, match="layout must be 'NCHW' or 'NHWC', got 'NWHC'"):
        pool.max_pool2d_forward(x, 2, layout="NWHC")
    y, arg = pool.max_pool2d_forward(x, 2, layout="NHWC")
    assert y.shape == (2, 4, 3, 3)
    with pytest.raises(ValueError, match=r"dy \(2, 4, 3, 3\) and argmax \(2, 4, 3, 3\) must both be \(2, 1, 4, 6\)"):
        pool.max_pool2d_backward(y, arg, (2, 3, 8, 6), 2, layout="NHWC")  # x_shape given as NCHW
    with pytest.raises(ValueError, match=r"dy has shape \(2, 4, 3, 3\) but pooling x_shape \(2, 8, 6, 4\)"):
        pool.avg_pool2d_backward(y, (2, 8, 6, 4), 2, layout="NHWC")
    with pytest.raises(ValueError, match="kernel_size"):
        pool.avg_pool2d_forward(x, 7, layout="NHWC")  # W = 6 < 7


# ---- gradient norm, clip_grad_norm_ --------------------------------------------------------------
def grads(rng, scale=1.0):
    # one array larger than NORM_BLOCKS * 256 (its blocks stride), odd sizes, a 0-d and an empty one
    shapes = [(300_007,), (17, 33), (1,), (), (0, 4), (5, 3, 7)]
    return [rng.standard_normal(s) * scale for s in shapes]


def test_grad_norm_l2_and_inf_match_float64(cp, rng):
    from pyneural.cuda import reduce
    gs = grads(rng)
    gd = [dev(cp, g) for g in gs]
    flat = np.concatenate([g.astype(np.float32).astype(np.float64).ravel() for g in gs])
    n2 = reduce.grad_norm(gd)
    assert n2.shape == () and rel_err(host(n2), np.sqrt(np.sum(flat ** 2))) < TOL
    assert host(reduce.grad_norm(gd, norm_type=math.inf)) == np.abs(flat).max()  # a max is exact
    assert host(reduce.grad_norm(gd[1], "inf")) == np.abs(flat[300_007:300_007 + 17 * 33]).max()
    assert reduce.grad_norm(gd).get().tobytes() == n2.get().tobytes()  # deterministic: no atomics
    assert host(reduce.grad_norm([])) == 0 and host(reduce.grad_norm([gd[4]])) == 0
    with pytest.raises(ValueError, match="norm_type must be 2.0 or inf, got 1"):
        reduce.grad_norm(gd, 1)
    with pytest.raises(TypeError, match=r"arrays\[1\] must have dtype float32"):
        reduce.grad_norm([gd[0], cp.zeros(3)])


def test_grad_norm_propagates_nan_and_inf(cp, rng):
    from pyneural.cuda import reduce
    for bad, l2, linf in ((np.nan, np.isnan, np.isnan), (np.inf, np.isposinf, np.isposinf)):
        g = rng.standard_normal(70_001).astype(np.float32)
        g[12_345] = bad
        gd = [dev(cp, rng.standard_normal(100)), dev(cp, g)]
        assert l2(host(reduce.grad_norm(gd))) and linf(host(reduce.grad_norm(gd, math.inf)))


@pytest.mark.parametrize("norm_type", [2.0, math.inf])
def test_clip_grad_norm_scales_on_the_device(cp, rng, monkeypatch, norm_type):
    from pyneural.cuda import reduce
    gs = grads(rng, scale=3.0)
    flat = np.concatenate([g.astype(np.float32).astype(np.float64).ravel() for g in gs])
    total = np.sqrt(np.sum(flat ** 2)) if norm_type == 2.0 else np.abs(flat).max()
    gd = [dev(cp, g) for g in gs]
    max_norm = total / 4
    with monkeypatch.context() as m:
        if emulator.enabled():  # the norm must never come to the host: every way there fails
            for name in ("get", "item", "tolist", "__float__", "__int__", "__bool__"):
                m.setattr(type(gd[0]), name, lambda *a, **k: pytest.fail("clip_grad_norm_ copied to the host"))
        norm = reduce.clip_grad_norm_(gd, max_norm, norm_type)
    assert rel_err(host(norm), total) < TOL
    factor = max_norm / (total + 1e-6)
    for g, d in zip(gs, gd):
        assert rel_err(host(d), g.astype(np.float32) * factor) < TOL

    # norm below max_norm: untouched, bit for bit
    before = [d.get() for d in gd]
    reduce.clip_grad_norm_(gd, 2 * max_norm, norm_type)
    assert all(b.tobytes() == d.get().tobytes() for b, d in zip(before, gd))
