"""Every differentiable op: a float64 gradient check (pyneural.gradcheck), forward values against
numpy, a few forward/backward comparisons against PyTorch (skipped where torch is missing), and
the errors the framework raises."""
import numpy as np
import pytest

import pyneural as pn
import pyneural.functional as F
from pyneural.gradcheck import GradcheckError

from conftest import rel_err


def leaf(rng, *shape, low=None, away=None):
    """A float64 leaf requiring grad; ``low`` shifts values positive, ``away`` pushes them at
    least that far from 0 (kinks of relu/abs)."""
    a = rng.standard_normal(shape)
    if away is not None:
        a = np.where(a >= 0, a + away, a - away)
    if low is not None:
        a = np.abs(a) + low
    return pn.tensor(a, dtype=pn.float64, requires_grad=True)


def const(rng, *shape):
    return pn.tensor(rng.standard_normal(shape), dtype=pn.float64)


# ---- gradcheck itself --------------------------------------------------------------------------

def test_gradcheck_catches_a_wrong_backward(rng):
    from pyneural.tensor import Function

    class BadSquare(Function):
        def forward(self, x):
            self.x = x
            return x * x

        def backward(self, gy):
            return (gy * self.x,)  # should be 2 * x

    x = leaf(rng, 3)
    with pytest.raises(GradcheckError, match="input 0"):
        pn.gradcheck(lambda t: BadSquare().apply(t), [x])
    assert pn.gradcheck(lambda t: BadSquare().apply(t), [x], raise_exception=False) is False


def test_gradcheck_needs_an_input_requiring_grad(rng):
    with pytest.raises(ValueError, match="no input requires grad"):
        pn.gradcheck(lambda t: t * 2, [const(rng, 2)])


# ---- arithmetic and broadcasting -----------------------------------------------------------

@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((1,), (2, 3))])
def test_binary_ops_broadcast(rng, op, shapes):
    a = leaf(rng, *shapes[0])
    b = leaf(rng, *shapes[1], low=0.5) if op == "div" else leaf(rng, *shapes[1])
    fn = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y,
          "mul": lambda x, y: x * y, "div": lambda x, y: x / y}[op]
    assert pn.gradcheck(fn, [a, b])
    out = fn(a, b)
    out.sum().backward()
    assert a.grad.shape == a.shape and b.grad.shape == b.shape
    ref = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide}[op](a.data, b.data)
    np.testing.assert_allclose(fn(a, b).data, ref)


def test_scalar_ops(rng):
    x = leaf(rng, 3, 2, low=0.5)
    assert pn.gradcheck(lambda t: 2.0 + t * 3 - 1.5, [x])
    assert pn.gradcheck(lambda t: 1.0 - t / 4.0, [x])
    assert pn.gradcheck(lambda t: 2.0 / t, [x])
    assert pn.gradcheck(lambda t: -t, [x])
    assert pn.gradcheck(lambda t: t ** 3, [x])
    assert pn.gradcheck(lambda t: t ** 0.5, [x])
    assert pn.gradcheck(lambda t: 2.0 ** t, [x])


def test_numpy_operand_and_scalar_keep_float32():
    x = pn.ones(3)
    assert (x * 0.5).dtype == np.float32
    assert (x + np.float64(2.0)).dtype == np.float32
    assert (np.ones(3, dtype=np.float32) * x).dtype == np.float32
    assert isinstance(np.ones(3) + x, pn.Tensor)


def test_comparisons_are_not_differentiable(rng):
    x = leaf(rng, 4)
    for r in (x > 0, x >= 0, x < 0, x <= 0, x == x, x != 0):
        assert r.dtype == np.bool_ and not r.requires_grad


def test_pow_tensor_exponent(rng):
    assert pn.gradcheck(lambda a, b: a ** b, [leaf(rng, 2, 3, low=0.5), leaf(rng, 3)])


# ---- elementwise ----------------------------------------------------------------------------

def test_elementwise_math(rng):
    assert pn.gradcheck(lambda t: t.exp(), [leaf(rng, 3, 4)])
    assert pn.gradcheck(lambda t: t.log(), [leaf(rng, 3, 4, low=0.5)])
    assert pn.gradcheck(lambda t: t.sqrt(), [leaf(rng, 3, 4, low=0.5)])
    assert pn.gradcheck(lambda t: t.abs(), [leaf(rng, 3, 4, away=0.1)])
    x = pn.tensor([-2.0, -0.5, 0.3, 1.7, 3.0], dtype=pn.float64, requires_grad=True)
    assert pn.gradcheck(lambda t: t.clamp(-1.0, 2.0), [x])
    cond = pn.tensor(rng.standard_normal((3, 4)) > 0)
    assert pn.gradcheck(lambda a, b: pn.where(cond, a, b), [leaf(rng, 3, 4), leaf(rng, 4)])


def test_activations(rng):
    assert pn.gradcheck(F.relu, [leaf(rng, 3, 5, away=0.1)])
    assert pn.gradcheck(F.relu, [leaf(rng, 7, away=0.1)])
    assert pn.gradcheck(F.gelu, [leaf(rng, 3, 5)])
    assert pn.gradcheck(lambda t: F.gelu(t, approximate="tanh"), [leaf(rng, 3, 5)])
    assert pn.gradcheck(F.tanh, [leaf(rng, 3, 5)])
    assert pn.gradcheck(F.sigmoid, [leaf(rng, 3, 5)])
    for dim in (0, 1, -1):
        assert pn.gradcheck(lambda t: F.softmax(t, dim), [leaf(rng, 3, 5)])
        assert pn.gradcheck(lambda t: F.log_softmax(t, dim), [leaf(rng, 3, 5)])
    assert pn.gradcheck(lambda t: F.softmax(t, 1), [leaf(rng, 2, 3, 4)])


def test_activation_values(rng):
    x = rng.standard_normal((4, 6)).astype(np.float32)
    t = pn.tensor(x)
    np.testing.assert_allclose(F.relu(t).data, np.maximum(x, 0))
    np.testing.assert_allclose(F.sigmoid(t).data, 1 / (1 + np.exp(-x)), rtol=1e-5)
    from scipy.special import erf
    np.testing.assert_allclose(F.gelu(t).data, 0.5 * x * (1 + erf(x / np.sqrt(2))), rtol=1e-5, atol=1e-6)
    e = np.exp(x - x.max(1, keepdims=True))
    assert rel_err(F.softmax(t, 1).data, e / e.sum(1, keepdims=True)) < 1e-5
    assert rel_err(F.log_softmax(t, 1).data, np.log(e / e.sum(1, keepdims=True))) < 1e-5


def test_float32_relu_runs_the_kernel_path(rng):
    x = pn.tensor(rng.standard_normal((5, 9)), requires_grad=True)
    y = F.relu(x)
    y.backward(pn.ones(5, 9))
    np.testing.assert_array_equal(x.grad.data, (x.data > 0).astype(np.float32))


# ---- matmul and linear -------------------------------------------------------------------

@pytest.mark.parametrize("shapes", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)),
                                    ((4,), (4, 5)), ((3, 4), (4,)), ((2, 1, 3, 4), (5, 4, 2))])
def test_matmul(rng, shapes):
    a, b = leaf(rng, *shapes[0]), leaf(rng, *shapes[1])
    assert pn.gradcheck(lambda x, y: x @ y, [a, b])
    np.testing.assert_allclose((a @ b).data, a.data @ b.data, rtol=1e-12)


def test_matmul_float32_transposed_views(rng):
    a = rng.standard_normal((6, 5)).astype(np.float32)
    b = rng.standard_normal((7, 5)).astype(np.float32)
    out = pn.tensor(a) @ pn.tensor(b).T
    assert rel_err(out.data, a.astype(np.float64) @ b.T.astype(np.float64)) < 1e-5


def test_matmul_shape_error():
    with pytest.raises(ValueError, match=r"\(3, 4\) and \(5, 2\)"):
        pn.ones(3, 4) @ pn.ones(5, 2)


def _linear_inputs(rng, x_shape, out_features):
    """x, w, b whose pre-activations stay >= 0.05 from the ReLU kink, so finite differences
    never straddle it."""
    while True:
        x, w, b = leaf(rng, *x_shape), leaf(rng, out_features, x_shape[-1]), leaf(rng, out_features)
        if np.abs(x.data @ w.data.T + b.data).min() > 0.05:
            return x, w, b


@pytest.mark.parametrize("activation", [None, "relu"])
@pytest.mark.parametrize("x_shape", [(4, 3), (2, 3, 3)])
def test_linear(rng, activation, x_shape):
    x, w, b = _linear_inputs(rng, x_shape, 5)
    assert pn.gradcheck(lambda x, w, b: F.linear(x, w, b, activation=activation), [x, w, b])
    assert pn.gradcheck(lambda x, w: F.linear(x, w), [x, w])


def test_linear_float32_matches_numpy(rng):
    x = rng.standard_normal((33, 17)).astype(np.float32)
    w = rng.standard_normal((9, 17)).astype(np.float32)
    b = rng.standard_normal(9).astype(np.float32)
    out = F.linear(pn.tensor(x), pn.tensor(w), pn.tensor(b), activation="relu")
    ref = np.maximum(x.astype(np.float64) @ w.T + b, 0)
    assert rel_err(out.data, ref) < 1e-5


def test_linear_errors():
    with pytest.raises(ValueError, match="does not match weight"):
        F.linear(pn.ones(2, 3), pn.ones(4, 5))
    with pytest.raises(ValueError, match="activation"):
        F.linear(pn.ones(2, 3), pn.ones(4, 3), activation="tanh")


# ---- reductions ------------------------------------------------------------------------------

@pytest.mark.parametrize("dim,keepdim", [(None, False), (0, False), (1, True), ((0, 2), False), (-1, False)])
def test_sum_mean_var(rng, dim, keepdim):
    x = leaf(rng, 2, 3, 4)
    assert pn.gradcheck(lambda t: t.sum(dim, keepdim), [x])
    assert pn.gradcheck(lambda t: t.mean(dim, keepdim), [x])
    assert pn.gradcheck(lambda t: t.var(dim, keepdim=keepdim), [x])
    axis = dim if dim is None or isinstance(dim, tuple) else dim
    np.testing.assert_allclose(x.sum(dim, keepdim).data, x.data.sum(axis=axis, keepdims=keepdim))
    np.testing.assert_allclose(x.var(dim, keepdim=keepdim).data, x.data.var(axis=axis, keepdims=keepdim, ddof=1))


def test_max_min(rng):
    x = pn.tensor(rng.permutation(24).reshape(2, 3, 4) * 0.37, dtype=pn.float64, requires_grad=True)
    assert pn.gradcheck(lambda t: t.max(), [x])
    assert pn.gradcheck(lambda t: t.min(), [x])
    assert pn.gradcheck(lambda t: t.max(dim=1)[0], [x])
    assert pn.gradcheck(lambda t: t.min(dim=2, keepdim=True).values, [x])
    values, indices = x.max(dim=1)
    np.testing.assert_array_equal(values.data, x.data.max(1))
    np.testing.assert_array_equal(indices.data, x.data.argmax(1))
    assert indices.dtype == np.int64 and not indices.requires_grad
    np.testing.assert_array_equal(x.argmax(dim=2).data, x.data.argmax(2))
    assert int(x.argmax()) == int(x.data.argmax())


def test_max_ties_split_the_gradient():
    x = pn.tensor([1.0, 3.0, 3.0], requires_grad=True)
    x.max().backward()
    np.testing.assert_allclose(x.grad.data, [0.0, 0.5, 0.5])


def test_reduction_dim_out_of_range():
    with pytest.raises(IndexError, match="out of range"):
        pn.ones(2, 3).sum(dim=2)


# ---- shape ops and indexing -------------------------------------------------------------------

def test_shape_ops(rng):
    x = leaf(rng, 2, 3, 4)
    assert pn.gradcheck(lambda t: t.reshape(4, 6), [x])
    assert pn.gradcheck(lambda t: t.view(-1), [x])
    assert pn.gradcheck(lambda t: t.transpose(0, 2), [x])
    assert pn.gradcheck(lambda t: t.permute(1, 2, 0) * 1.0, [x])
    assert pn.gradcheck(lambda t: t.flatten(1), [x])
    assert pn.gradcheck(lambda t: t.unsqueeze(1).squeeze(1), [x])
    assert pn.gradcheck(lambda t: t.T, [x])
    assert pn.gradcheck(lambda t: t[:, :1].expand(2, 5, 4), [x])
    assert x.flatten().shape == (24,) and x.unsqueeze(-1).shape == (2, 3, 4, 1)
    assert pn.ones(1, 3, 1).squeeze().shape == (3,) and pn.ones(1, 3, 1).squeeze(0).shape == (3, 1)


def test_reshape_error_names_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4, 2\)"):
        pn.ones(2, 3).reshape(4, 2)


@pytest.mark.parametrize("key", [
    (slice(None), 1), (1,), (slice(0, 2), slice(1, 3)), (Ellipsis, 0), (None, 0),
    np.array([0, 2, 0]),                        # repeated rows: gradients must add up
    (np.array([0, 1, 1]), np.array([2, 0, 2])),  # repeated elements
])
def test_getitem(rng, key):
    x = leaf(rng, 3, 4)
    assert pn.gradcheck(lambda t: t[key], [x])
    np.testing.assert_array_equal(x[key].data, x.data[key])


def test_getitem_bool_mask_and_tensor_index(rng):
    x = leaf(rng, 4, 3)
    mask = x.data[:, 0] > 0
    assert pn.gradcheck(lambda t: t[pn.tensor(mask)], [x])
    assert pn.gradcheck(lambda t: t[pn.tensor([3, 3, 1])], [x])


def test_cat_stack(rng):
    a, b, c = leaf(rng, 2, 3), leaf(rng, 2, 5), leaf(rng, 2, 3)
    assert pn.gradcheck(lambda x, y: pn.cat([x, y], dim=1), [a, b])
    assert pn.gradcheck(lambda x, y: pn.stack([x, y], dim=1), [a, c])
    assert pn.gradcheck(lambda x, y: pn.stack([x, y]), [a, c])
    with pytest.raises(ValueError, match="cat"):
        pn.cat([a, b], dim=0)
    with pytest.raises(ValueError, match="stack"):
        pn.stack([a, b])
    # an input that does not require grad gets none
    d = const(rng, 2, 3)
    pn.cat([a, d]).sum().backward()
    assert d.grad is None


# ---- functional: conv, pools, batch norm, dropout, embedding, losses --------------------------

@pytest.mark.parametrize("stride,padding,dilation,groups", [
    (1, 0, 1, 1), (2, 1, 1, 1), (1, 2, 2, 1), ((2, 1), (0, 1), 1, 2), (1, 1, 1, 4)])
def test_conv2d(rng, stride, padding, dilation, groups):
    x = leaf(rng, 2, 4, 6, 5)
    w = leaf(rng, 4, 4 // groups, 3, 2)
    b = leaf(rng, 4)
    fn = lambda x, w, b: F.conv2d(x, w, b, stride, padding, dilation, groups)  # noqa: E731
    assert pn.gradcheck(fn, [x, w, b])


def test_conv2d_errors():
    with pytest.raises(ValueError, match="3 channels, weight .* expects 4"):
        F.conv2d(pn.ones(1, 3, 5, 5), pn.ones(2, 4, 3, 3))
    with pytest.raises(ValueError, match="groups=2"):
        F.conv2d(pn.ones(1, 3, 5, 5), pn.ones(2, 1, 3, 3), groups=2)
    with pytest.raises(ValueError, match="smaller than the dilated kernel"):
        F.conv2d(pn.ones(1, 1, 2, 2), pn.ones(1, 1, 3, 3))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        F.conv2d(pn.ones(3, 5, 5), pn.ones(1, 3, 3, 3))


@pytest.mark.parametrize("kernel,stride,padding", [(2, None, 0), (3, 2, 1), ((2, 3), (1, 2), (1, 0))])
def test_pools(rng, kernel, stride, padding):
    # distinct values, well separated, so the max of each window is unambiguous
    vals = rng.permutation(2 * 3 * 7 * 6).reshape(2, 3, 7, 6) * 0.1
    x = pn.tensor(vals, dtype=pn.float64, requires_grad=True)
    assert pn.gradcheck(lambda t: F.max_pool2d(t, kernel, stride, padding), [x])
    assert pn.gradcheck(lambda t: F.avg_pool2d(t, kernel, stride, padding), [x])
    assert pn.gradcheck(lambda t: F.avg_pool2d(t, kernel, stride, padding, count_include_pad=False), [x])


def test_pool_errors():
    with pytest.raises(ValueError, match="smaller than the kernel"):
        F.max_pool2d(pn.ones(1, 1, 2, 2), 3)
    with pytest.raises(ValueError, match="half the kernel"):
        F.avg_pool2d(pn.ones(1, 1, 8, 8), 2, padding=2)


@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 5), (3, 2, 4, 3)])
def test_batch_norm_train_and_eval(rng, shape):
    x = leaf(rng, *shape)
    g, b = leaf(rng, shape[1]), leaf(rng, shape[1])
    rm, rv = np.zeros(shape[1]), np.ones(shape[1])
    assert pn.gradcheck(lambda x, g, b: F.batch_norm(x, None, None, g, b, training=True), [x, g, b])
    assert pn.gradcheck(lambda x: F.batch_norm(x, None, None, training=True), [x])
    assert pn.gradcheck(lambda x, g, b: F.batch_norm(x, rm + 0.1, rv + 0.5, g, b, training=False), [x, g, b])
    # running statistics: momentum update with the unbiased batch variance
    axes = (0,) + tuple(range(2, len(shape)))
    n = x.data.size // shape[1]
    F.batch_norm(x, rm, rv, training=True, momentum=0.1)
    np.testing.assert_allclose(rm, 0.1 * x.data.mean(axes))
    np.testing.assert_allclose(rv, 0.9 + 0.1 * x.data.var(axes) * n / (n - 1))
    y = F.batch_norm(x, None, None, training=True).data
    np.testing.assert_allclose(y.mean(axes), 0, atol=1e-10)


@pytest.mark.parametrize("shape", [(5, 3), (3, 2, 4, 3)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_fused_relu(rng, shape, training):
    x = leaf(rng, *shape)
    g, b = leaf(rng, shape[1]), leaf(rng, shape[1])
    rm, rv = np.full(shape[1], 0.1), np.full(shape[1], 1.5)
    assert pn.gradcheck(lambda x, g, b: F.batch_norm(x, rm, rv, g, b, training=training, activation="relu"),
                        [x, g, b])
    plain = F.relu(F.batch_norm(x, rm, rv, g, b, training=training, momentum=0.0))
    fused = F.batch_norm(x, rm, rv, g, b, training=training, momentum=0.0, activation="relu")
    np.testing.assert_allclose(fused.data, plain.data, rtol=1e-12, atol=1e-12)


def test_batch_norm_float32_matches_float64(rng):
    # The float32 path (C++ kernels) against the float64 one, forward and every gradient, with a
    # large common offset in x that a one-pass variance without a shift would lose to rounding.
    shape = (6, 5, 7, 3)
    x64 = 100.0 + rng.standard_normal(shape)
    g64, b64, gy64 = rng.standard_normal(5), rng.standard_normal(5), rng.standard_normal(shape)
    outs = {}
    for dtype in (np.float64, np.float32):
        x, g, b = (pn.Tensor(a.astype(dtype), requires_grad=True) for a in (x64, g64, b64))
        y = F.batch_norm(x, None, None, g, b, training=True, activation="relu")
        y.backward(gy64.astype(dtype))
        outs[dtype] = [y.data, x.grad.data, g.grad.data, b.grad.data]
    for got, ref in zip(outs[np.float32], outs[np.float64]):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, ref, rtol=2e-4, atol=2e-4 * np.abs(ref).max())


def test_batch_norm_errors():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.batch_norm(pn.ones(1, 3), None, None, training=True)
    with pytest.raises(ValueError, match="running_mean has shape"):
        F.batch_norm(pn.ones(4, 3), np.zeros(2), np.ones(2), training=True)
    with pytest.raises(ValueError, match="activation must be None or 'relu'"):
        F.batch_norm(pn.ones(4, 3), None, None, training=True, activation="gelu")


def test_dropout(rng):
    x = leaf(rng, 40, 50)
    pn.manual_seed(3)
    y = F.dropout(x, 0.3)
    kept = y.data != 0
    assert 0.6 < kept.mean() < 0.8
    np.testing.assert_allclose(y.data[kept], x.data[kept] / 0.7)
    y.backward(pn.ones(40, 50, dtype=pn.float64))
    np.testing.assert_allclose(x.grad.data, kept / 0.7)
    assert F.dropout(x, 0.3, training=False) is x
    pn.manual_seed(3)
    np.testing.assert_array_equal(F.dropout(x, 0.3).data, y.data)  # seeded
    # gradcheck with the mask fixed by reseeding before every call
    def seeded(t):
        pn.manual_seed(11)
        return F.dropout(t, 0.5)
    assert pn.gradcheck(seeded, [leaf(rng, 3, 4)])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        F.dropout(x, 1.5)


def test_embedding(rng):
    w = leaf(rng, 6, 3)
    idx = pn.tensor([[0, 2, 2], [5, 0, 1]])
    assert pn.gradcheck(lambda w: F.embedding(idx, w), [w])
    out = F.embedding(idx, w, padding_idx=2)
    np.testing.assert_array_equal(out.data, w.data[idx.data])
    w.grad = None
    out.sum().backward()
    np.testing.assert_array_equal(w.grad.data[2], 0)
    np.testing.assert_array_equal(w.grad.data[0], 2)
    with pytest.raises(TypeError, match="integers"):
        F.embedding(pn.ones(3), w)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy(rng, reduction, smoothing):
    logits = leaf(rng, 5, 4)
    target = pn.tensor(rng.integers(0, 4, 5))
    fn = lambda z: F.cross_entropy(z, target, reduction=reduction, label_smoothing=smoothing)  # noqa: E731
    assert pn.gradcheck(fn, [logits])
    lp = logits.data - logits.data.max(1, keepdims=True)
    lp = lp - np.log(np.exp(lp).sum(1, keepdims=True))
    ref = -(1 - smoothing) * lp[np.arange(5), target.data] - smoothing / 4 * lp.sum(1)
    ref = {"mean": ref.mean(), "sum": ref.sum(), "none": ref}[reduction]
    np.testing.assert_allclose(fn(logits).data, ref, rtol=1e-10)


def test_cross_entropy_spatial_and_ignore_index(rng):
    logits = leaf(rng, 2, 3, 4)
    target = rng.integers(0, 3, (2, 4))
    target[0, 1] = -100
    t = pn.tensor(target)
    assert pn.gradcheck(lambda z: F.cross_entropy(z, t), [logits])
    out = F.cross_entropy(logits, t, reduction="none")
    assert out.shape == (2, 4) and out.data[0, 1] == 0


def test_cross_entropy_errors():
    with pytest.raises(ValueError, match=r"target has shape \(3,\), expected \(2,\)"):
        F.cross_entropy(pn.ones(2, 4), pn.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="integer class indices"):
        F.cross_entropy(pn.ones(2, 4), pn.ones(2))
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(pn.ones(2, 4), pn.tensor([0, 1]), reduction="avg")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss(rng, reduction):
    a, b = leaf(rng, 3, 4), leaf(rng, 3, 4)
    assert pn.gradcheck(lambda x, y: F.mse_loss(x, y, reduction=reduction), [a, b])
    with pytest.raises(ValueError, match="differ"):
        F.mse_loss(a, leaf(rng, 4, 3))


# ---- against PyTorch -----------------------------------------------------------------------

try:
    import torch
except ImportError:  # pragma: no cover - torch is optional
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


def _both(rng, *shape):
    a = rng.standard_normal(shape).astype(np.float32)
    return pn.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)


@needs_torch
def test_conv_pool_against_torch(rng):
    x, tx = _both(rng, 2, 4, 9, 8)
    w, tw = _both(rng, 6, 2, 3, 3)
    b, tb = _both(rng, 6)
    y = F.max_pool2d(F.relu(F.conv2d(x, w, b, stride=2, padding=1, dilation=1, groups=2)), 2)
    ty = torch.nn.functional.max_pool2d(
        torch.relu(torch.nn.functional.conv2d(tx, tw, tb, stride=2, padding=1, groups=2)), 2)
    gy = rng.standard_normal(ty.shape).astype(np.float32)
    y.backward(pn.tensor(gy))
    ty.backward(torch.tensor(gy))
    assert rel_err(y.data, ty.detach().numpy()) < 1e-5
    for ours, theirs in ((x, tx), (w, tw), (b, tb)):
        assert rel_err(ours.grad.data, theirs.grad.numpy()) < 1e-4


@needs_torch
def test_losses_and_norm_against_torch(rng):
    z, tz = _both(rng, 8, 5)
    target = rng.integers(0, 5, 8)
    loss = F.cross_entropy(z, pn.tensor(target), label_smoothing=0.1)
    tloss = torch.nn.functional.cross_entropy(tz, torch.tensor(target), label_smoothing=0.1)
    loss.backward()
    tloss.backward()
    assert abs(loss.item() - tloss.item()) < 1e-5
    assert rel_err(z.grad.data, tz.grad.numpy()) < 1e-5

    x, tx = _both(rng, 6, 3, 4, 4)
    g, tg = _both(rng, 3)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    trm, trv = torch.zeros(3), torch.ones(3)
    y = F.gelu(F.batch_norm(x, rm, rv, g, None, training=True))
    ty = torch.nn.functional.gelu(torch.nn.functional.batch_norm(tx, trm, trv, tg, None, training=True))
    gy = rng.standard_normal(ty.shape).astype(np.float32)
    y.backward(pn.tensor(gy))
    ty.backward(torch.tensor(gy))
    assert rel_err(y.data, ty.detach().numpy()) < 1e-5
    assert rel_err(x.grad.data, tx.grad.numpy()) < 1e-4
    assert rel_err(g.grad.data, tg.grad.numpy()) < 1e-4
    np.testing.assert_allclose(rm, trm.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rv, trv.numpy(), rtol=1e-5, atol=1e-6)


@needs_torch
def test_log_softmax_embedding_against_torch(rng):
    x, tx = _both(rng, 4, 7)
    y = F.log_softmax(x, 0)
    ty = torch.log_softmax(tx, 0)
    gy = rng.standard_normal((4, 7)).astype(np.float32)
    y.backward(pn.tensor(gy))
    ty.backward(torch.tensor(gy))
    assert rel_err(x.grad.data, tx.grad.numpy()) < 1e-5
    w, tw = _both(rng, 10, 4)
    idx = rng.integers(0, 10, (3, 5))
    e = F.embedding(pn.tensor(idx), w)
    te = torch.nn.functional.embedding(torch.tensor(idx), tw)
    ge = rng.standard_normal((3, 5, 4)).astype(np.float32)
    e.backward(pn.tensor(ge))
    te.backward(torch.tensor(ge))
    assert rel_err(w.grad.data, tw.grad.numpy()) < 1e-5
