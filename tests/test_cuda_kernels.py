"""pyneural's CUDA kernels (csrc/cuda, via pyneural.cuda) against float64 numpy references.

Every test: fresh random inputs (conftest rng), sizes that do not divide the 128 x 128 x 8 tiles,
outputs poisoned with NaN where the API takes an ``out``, relative error < 1e-5 (fp32). On a GPU
each runs on both kernel sources: the prebuilt pyneural._cuda (skipped if it was not built) and
cupy.RawModule; without one, on the emulated device (conftest switches it on). Marked ``cuda``.
"""
import numpy as np
import pytest

from conftest import dev, host, poison, rel_err
from pyneural.cuda import available
from pyneural.kernels import conv as cpu_conv
from pyneural.kernels import pool as cpu_pool

pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("cuda_backend"),
              pytest.mark.skipif(not available(), reason="needs CuPy and a CUDA GPU with compute capability >= 8.0, or the emulated device")]

TOL = 1e-5


# ---- GEMM ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (127, 129, 9), (130, 67, 300), (257, 131, 1031), (64, 256, 7)])
def test_gemm_matches_float64(cp, rng, trans_a, trans_b, m, n, k):
    from pyneural.cuda.gemm import gemm
    a = rng.standard_normal((k, m) if trans_a else (m, k))
    b = rng.standard_normal((n, k) if trans_b else (k, n))
    out = poison(cp, (m, n))
    gemm(dev(cp, a), dev(cp, b), trans_a=trans_a, trans_b=trans_b, out=out)
    ref = (a.T if trans_a else a) @ (b.T if trans_b else b)
    assert rel_err(host(out), ref) < TOL


def test_gemm_alpha_beta_bias_relu(cp, rng):
    from pyneural.cuda.gemm import gemm
    m, n, k = 150, 133, 45
    a, b, c0, bias = (rng.standard_normal(s) for s in ((m, k), (k, n), (m, n), (n,)))
    out = dev(cp, c0)
    gemm(dev(cp, a), dev(cp, b), alpha=0.5, beta=-1.5, out=out, bias=dev(cp, bias), relu=True)
    ref = np.maximum(0.5 * a @ b - 1.5 * c0.astype(np.float32) + bias.astype(np.float32), 0)
    assert rel_err(host(out), ref) < TOL


def test_gemm_unaligned_leading_dimension_takes_the_scalar_path(cp, rng):
    from pyneural.cuda.gemm import gemm
    a, b = rng.standard_normal((33, 17)), rng.standard_normal((17, 131))  # ldb = 131: no 16-byte copies
    out = gemm(dev(cp, a), dev(cp, b))
    assert rel_err(host(out), a @ b) < TOL
    base = cp.zeros(1 + 17 * 132, dtype=np.float32)  # 4-byte offset base pointer
    bm = base[1:].reshape(17, 132)
    bm[...] = dev(cp, rng.standard_normal((17, 132)))
    out = gemm(dev(cp, a), bm)
    assert rel_err(host(out), a @ host(bm)) < TOL


def test_gemm_bad_inputs(cp):
    from pyneural.cuda.gemm import gemm
    a = cp.zeros((4, 5), np.float32)
    with pytest.raises(ValueError, match=r"inner dimensions differ.*\(4, 5\)"):
        gemm(a, cp.zeros((4, 5), np.float32))
    with pytest.raises(TypeError, match="b must have dtype float32, got float64"):
        gemm(a, cp.zeros((5, 3)))
    with pytest.raises(TypeError, match="cupy.ndarray"):
        gemm(a, np.zeros((5, 3), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        gemm(a, cp.zeros((3, 5), np.float32).T)
    with pytest.raises(ValueError, match="needs an out"):
        gemm(a, cp.zeros((5, 3), np.float32), beta=1.0)
    with pytest.raises(ValueError, match=r"out must have shape \(4, 3\)"):
        gemm(a, cp.zeros((5, 3), np.float32), out=cp.zeros((3, 4), np.float32))


# ---- convolution ---------------------------------------------------------------------------------
CONV_CASES = [  # (N, C, H, W, OC, KH, KW, stride, padding, dilation, groups)
    (2, 3, 11, 13, 5, 3, 3, 1, 1, 1, 1),
    (3, 8, 9, 7, 12, 3, 2, 2, (1, 0), 1, 2),
    (1, 6, 15, 10, 6, 3, 3, (2, 1), 2, 2, 3),
    (2, 16, 6, 6, 130, 1, 1, 1, 0, 1, 1),
    (5, 4, 8, 8, 4, 3, 3, 1, 1, 1, 4),  # depthwise
]


def _to_layout(x, layout):
    return x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def _from_layout(x, layout):
    return x if layout == "NCHW" else x.transpose(0, 3, 1, 2)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_forward_backward(cp, rng, layout, case):
    from pyneural.cuda import conv
    n, c, h, w, oc, kh, kw, s, p, d, g = case
    hyper = dict(stride=s, padding=p, dilation=d, groups=g)
    x = rng.standard_normal((n, c, h, w))
    wt = rng.standard_normal((oc, c // g, kh, kw))
    bias = rng.standard_normal(oc)
    y_ref = cpu_conv.conv2d_forward(x, wt, bias, relu=True, **hyper)
    y_shape = y_ref.shape
    out = poison(cp, _to_layout(np.empty(y_shape), layout).shape)
    conv.conv2d_forward(dev(cp, _to_layout(x, layout)), dev(cp, _to_layout(wt, layout)), dev(cp, bias), relu=True,
                        layout=layout, out=out, **hyper)
    assert rel_err(_from_layout(host(out), layout), y_ref) < TOL

    dy = rng.standard_normal(y_shape)
    dx_ref = cpu_conv.conv2d_backward_data(dy, wt, x.shape, **hyper)
    dx = poison(cp, _to_layout(x, layout).shape)
    conv.conv2d_backward_data(dev(cp, _to_layout(dy, layout)), dev(cp, _to_layout(wt, layout)),
                              _to_layout(x, layout).shape, layout=layout, out=dx, **hyper)
    assert rel_err(_from_layout(host(dx), layout), dx_ref) < TOL

    dw_ref = cpu_conv.conv2d_backward_weight(dy, x, wt.shape, **hyper)
    for deterministic in (False, True):
        dw = poison(cp, _to_layout(wt, layout).shape)
        conv.conv2d_backward_weight(dev(cp, _to_layout(dy, layout)), dev(cp, _to_layout(x, layout)),
                                    _to_layout(wt, layout).shape, layout=layout, out=dw,
                                    deterministic=deterministic, **hyper)
        assert rel_err(_from_layout(host(dw), layout), dw_ref) < TOL


def test_conv_backward_weight_split_k_large_reduction(cp, rng):
    from pyneural.cuda import conv
    x, dy = rng.standard_normal((8, 3, 40, 40)), rng.standard_normal((8, 5, 40, 40))
    assert conv.weight_splits(conv._geometry("t", x.shape, (5, 3, 3, 3), 1, 1, 1, 1, "NCHW")[0]) > 1
    dw = conv.conv2d_backward_weight(dev(cp, dy), dev(cp, x), (5, 3, 3, 3), padding=1)
    assert rel_err(host(dw), cpu_conv.conv2d_backward_weight(dy, x, (5, 3, 3, 3), padding=1)) < TOL


def test_conv_bad_inputs(cp):
    from pyneural.cuda import conv
    x = cp.zeros((2, 4, 8, 8), np.float32)
    with pytest.raises(ValueError, match="groups=3 must divide"):
        conv.conv2d_forward(x, cp.zeros((6, 1, 3, 3), np.float32), groups=3)
    with pytest.raises(ValueError, match="expects 3 input channels"):
        conv.conv2d_forward(x, cp.zeros((6, 3, 3, 3), np.float32))
    with pytest.raises(ValueError, match="layout must be"):
        conv.conv2d_forward(x, cp.zeros((6, 4, 3, 3), np.float32), layout="NCWH")
    with pytest.raises(ValueError, match="does not fit"):
        conv.conv2d_forward(x, cp.zeros((6, 4, 9, 9), np.float32))
    with pytest.raises(ValueError, match=r"dy has shape"):
        conv.conv2d_backward_data(cp.zeros((2, 6, 5, 5), np.float32), cp.zeros((6, 4, 3, 3), np.float32), x.shape)


# ---- pooling -------------------------------------------------------------------------------------
@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1), ((3, 2), (1, 2), (1, 0))])
def test_pooling(cp, rng, k, s, p):
    from pyneural.cuda import pool
    x = rng.standard_normal((2, 3, 11, 9)).astype(np.float32)
    y, arg = pool.max_pool2d_forward(dev(cp, x), k, s, p)
    y_ref, arg_ref = cpu_pool.max_pool2d_forward(x.astype(np.float64), k, s, p)
    assert rel_err(host(y), y_ref) < TOL and np.array_equal(arg.get(), arg_ref)
    dy = rng.standard_normal(y_ref.shape)
    dx = pool.max_pool2d_backward(dev(cp, dy), arg, x.shape, k, s, p)
    assert rel_err(host(dx), cpu_pool.max_pool2d_backward(dy, arg_ref, x.shape)) < TOL
    for cip in (True, False):
        ya = pool.avg_pool2d_forward(dev(cp, x), k, s, p, count_include_pad=cip)
        assert rel_err(host(ya), cpu_pool.avg_pool2d_forward(x.astype(np.float64), k, s, p, cip)) < TOL
        dxa = pool.avg_pool2d_backward(dev(cp, dy), x.shape, k, s, p, count_include_pad=cip)
        assert rel_err(host(dxa), cpu_pool.avg_pool2d_backward(dy, x.shape, k, s, p, cip)) < TOL


# ---- softmax -------------------------------------------------------------------------------------
@pytest.mark.parametrize("rows,c", [(1, 1), (37, 10), (5, 1000), (3, 50001)])
def test_softmax_cross_entropy(cp, rng, rows, c):
    from pyneural.cuda import softmax
    x = rng.standard_normal((rows, c)) * 5
    labels = rng.integers(0, c, rows)
    lse_ref = np.log(np.exp(x - x.max(1, keepdims=True)).sum(1)) + x.max(1)
    xd = dev(cp, x)
    assert rel_err(host(softmax.logsumexp(xd)), lse_ref) < TOL
    out = poison(cp, x.shape)
    softmax.softmax(xd, out=out)
    assert rel_err(host(out), np.exp(x - lse_ref[:, None])) < TOL
    loss, lse = softmax.softmax_cross_entropy(xd, cp.asarray(labels))
    assert rel_err(host(loss), lse_ref - x[np.arange(rows), labels]) < TOL
    dloss = cp.asarray(np.array([0.7], np.float32))
    dx = poison(cp, x.shape)
    softmax.softmax_cross_entropy_backward(xd, cp.asarray(labels), lse, dloss, out=dx)
    onehot = np.zeros_like(x)
    onehot[np.arange(rows), labels] = 1
    assert rel_err(host(dx), 0.7 / rows * (np.exp(x - lse_ref[:, None]) - onehot)) < TOL


def test_softmax_bad_labels(cp):
    from pyneural.cuda import softmax
    with pytest.raises(ValueError, match=r"outside \[0, 4\)"):
        softmax.softmax_cross_entropy(cp.zeros((2, 4), np.float32), cp.asarray(np.array([0, 4])))
    with pytest.raises(TypeError, match="labels must have dtype int64"):
        softmax.softmax_cross_entropy(cp.zeros((2, 4), np.float32), cp.zeros(2, np.int32))


# ---- batch norm ----------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,channels_last", [((7, 5, 9, 11), False), ((33, 6), False), ((4, 5, 3, 7), True)])
def test_batchnorm(cp, rng, shape, channels_last):
    from pyneural.cuda import batchnorm as bn
    x = rng.standard_normal(shape) * 3 + 10
    axes = tuple(range(x.ndim - 1)) if channels_last else (0,) + tuple(range(2, x.ndim))
    c = shape[-1] if channels_last else shape[1]
    bshape = [1] * x.ndim
    bshape[-1 if channels_last else 1] = c
    mean_ref, var_ref = x.mean(axes), x.var(axes)
    count = x.size // c
    rm, rv = dev(cp, np.zeros(c)), dev(cp, np.ones(c))
    mean, var = bn.batch_stats(dev(cp, x), rm, rv, momentum=0.1, channels_last=channels_last)
    assert rel_err(host(mean), mean_ref) < TOL and rel_err(host(var), var_ref) < 1e-4
    assert rel_err(host(rm), 0.1 * mean_ref) < TOL
    assert rel_err(host(rv), 0.9 + 0.1 * var_ref * count / (count - 1)) < 1e-4
    gamma, beta = rng.standard_normal(c), rng.standard_normal(c)
    out = poison(cp, shape)
    bn.batch_norm_apply(dev(cp, x), mean, var, dev(cp, gamma), dev(cp, beta), eps=1e-5, channels_last=channels_last,
                        out=out)
    xhat = (x - mean_ref.reshape(bshape)) / np.sqrt(var_ref.reshape(bshape) + 1e-5)
    assert rel_err(host(out), xhat * gamma.reshape(bshape) + beta.reshape(bshape)) < 1e-4
    dy = rng.standard_normal(shape)
    dx, dgamma, dbeta = bn.batch_norm_backward(dev(cp, x), dev(cp, dy), mean, var, dev(cp, gamma),
                                               channels_last=channels_last)
    g = gamma.reshape(bshape) / np.sqrt(var_ref.reshape(bshape) + 1e-5)
    dx_ref = g * (dy - dy.mean(axes, keepdims=True) - xhat * (dy * xhat).mean(axes, keepdims=True))
    assert rel_err(host(dx), dx_ref) < 1e-4
    assert rel_err(host(dgamma), (dy * xhat).sum(axes)) < 1e-4 and rel_err(host(dbeta), dy.sum(axes)) < TOL


# ---- elementwise, optimizers ---------------------------------------------------------------------
def test_elementwise(cp, rng):
    from math import erf

    from pyneural.cuda import elementwise as ew
    x = rng.standard_normal((3, 5, 7, 9))
    bias = rng.standard_normal(5)
    out = poison(cp, x.shape)
    ew.bias_act(dev(cp, x), dev(cp, bias), relu=True, axis=1, out=out)
    assert rel_err(host(out), np.maximum(x + bias[None, :, None, None], 0)) < TOL
    dy = rng.standard_normal(x.shape)
    assert rel_err(host(ew.relu_backward(dev(cp, dy), out)), dy * (host(out) > 0)) < TOL
    phi = 0.5 * (1 + np.vectorize(erf)(x / np.sqrt(2)))
    assert rel_err(host(ew.gelu(dev(cp, x))), x * phi) < TOL
    pdf = np.exp(-x * x / 2) / np.sqrt(2 * np.pi)
    assert rel_err(host(ew.gelu_backward(dev(cp, x), dev(cp, dy))), dy * (phi + x * pdf)) < TOL
    for op, f in (("add", np.add), ("sub", np.subtract), ("mul", np.multiply)):
        for b in (rng.standard_normal(x.shape), rng.standard_normal((1, 5, 1, 1)), rng.standard_normal((7, 9)),
                  rng.standard_normal((1,))):
            assert rel_err(host(ew.binary(op, dev(cp, x), dev(cp, b))), f(x, b)) < TOL
    with pytest.raises(ValueError, match="does not broadcast"):
        ew.binary("add", dev(cp, x), cp.zeros((4,), np.float32))
    y = rng.standard_normal(x.shape)
    assert rel_err(host(ew.axpby(2.0, dev(cp, x), -0.5, dev(cp, y))), 2 * x - 0.5 * y) < TOL
    f = cp.zeros(1001, np.float32)
    assert np.all(ew.fill(f, 3.5).get() == 3.5)


def test_sgd_and_adam_match_torch_rules(cp, rng):
    from pyneural.cuda import elementwise as ew
    p, g = rng.standard_normal(1003), rng.standard_normal(1003)
    buf = rng.standard_normal(1003)
    pd, bd = dev(cp, p), dev(cp, buf)
    ew.sgd_update(pd, dev(cp, g), lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01, nesterov=True, buf=bd)
    gg = g + 0.01 * p
    b_ref = 0.9 * buf + 0.9 * gg
    assert rel_err(host(bd), b_ref) < TOL and rel_err(host(pd), p - 0.1 * (gg + 0.9 * b_ref)) < TOL
    m, v = rng.standard_normal(1003), rng.random(1003)
    for decoupled in (False, True):
        pd, md, vd = dev(cp, p), dev(cp, m), dev(cp, v)
        ew.adam_update(pd, dev(cp, g), md, vd, step=3, lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1,
                       decoupled=decoupled)
        pp, gg = (p * (1 - 1e-3), g) if decoupled else (p, g + 0.1 * p)
        m2, v2 = 0.9 * m + 0.1 * gg, 0.99 * v + 0.01 * gg * gg
        ref = pp - 1e-2 * (m2 / (1 - 0.9 ** 3)) / (np.sqrt(v2 / (1 - 0.99 ** 3)) + 1e-8)
        assert rel_err(host(pd), ref) < TOL and rel_err(host(md), m2) < TOL and rel_err(host(vd), v2) < TOL


# ---- embedding, reductions -----------------------------------------------------------------------
@pytest.mark.parametrize("deterministic", [False, True])
def test_embedding(cp, rng, deterministic):
    from pyneural.cuda import embedding as emb
    v, d = 50, 33
    w = rng.standard_normal((v, d))
    idx = rng.integers(0, v, (7, 13))
    idx[0, :5] = 3  # repeated indices
    out = emb.embedding_forward(dev(cp, w), cp.asarray(idx))
    assert rel_err(host(out), w[idx]) < TOL
    dout = rng.standard_normal((7, 13, d))
    ref = np.zeros((v, d))
    np.add.at(ref, idx.ravel(), dout.reshape(-1, d))
    dw = emb.embedding_backward(dev(cp, dout), cp.asarray(idx), v, deterministic=deterministic)
    assert rel_err(host(dw), ref) < TOL
    if deterministic:
        again = emb.embedding_backward(dev(cp, dout), cp.asarray(idx), v, deterministic=True)
        assert np.array_equal(again.get(), dw.get())
    with pytest.raises(ValueError, match=r"outside \[0, 50\)"):
        emb.embedding_forward(dev(cp, w), cp.asarray(np.array([1, 50])))


def test_reductions(cp, rng):
    from pyneural.cuda import reduce
    x = rng.standard_normal((6, 7, 300)).astype(np.float32).astype(np.float64)  # the values the GPU sees
    xd = dev(cp, x)
    for axis in (0, 1, 2, -1):
        assert rel_err(host(reduce.sum(xd, axis)), x.sum(axis)) < TOL
        assert rel_err(host(reduce.sum(xd, axis, mean=True)), x.mean(axis)) < TOL
    # The total of 12,600 draws nearly cancels: bound its error by the fp32 summation bound,
    # relative to sum |x| (a relative error against the total itself failed for some seeds).
    assert abs(float(host(reduce.sum(xd))) - x.sum()) < TOL * np.abs(x).sum()
    assert rel_err(host(reduce.channel_sum(xd)), x.sum((0, 2))) < TOL
    with pytest.raises(ValueError, match="axis must be an int"):
        reduce.sum(xd, 3)


def test_launcher_rejects_bad_arrays(cp, cuda_backend):
    """The native launcher checks what it is handed even when a wrapper is bypassed."""
    if cuda_backend != "native":
        pytest.skip("checks of pyneural._cuda.launch")
    from pyneural import _cuda
    stream, dev_id = cp.cuda.get_current_stream().ptr, cp.cuda.Device().id
    with pytest.raises(ValueError, match="not C-contiguous"):
        _cuda.launch("elementwise", "pn_fill", (1,), (32,), 0, stream, dev_id,
                     [cp.zeros((4, 4), np.float32).T, np.int64(16), np.float32(0)])
    with pytest.raises(TypeError, match="not one the kernels take"):
        _cuda.launch("elementwise", "pn_fill", (1,), (32,), 0, stream, dev_id,
                     [cp.zeros(4, np.float64), np.int64(4), np.float32(0)])
    with pytest.raises(ValueError, match="no kernel named"):
        _cuda.launch("elementwise", "pn_nope", (1,), (32,), 0, stream, dev_id, [])
