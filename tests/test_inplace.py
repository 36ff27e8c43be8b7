"""In-place operations with PyTorch's rules, each checked against torch running the same code.

* On tensors in the graph they are nodes: values and gradients of whole sequences of in-place
  ops (``add_``, ``mul_``, ``x[k] = v``, ``x[k] += v``, views written through) match torch.
* A leaf that requires grad refuses them outside ``no_grad`` and accepts them inside.
* Version counters: overwriting memory a node saved for backward makes that backward raise, in
  exactly the cases where torch's does (and not in the others).
* dtype and shape rules, aliasing (``b = a; b += 1`` changes a), a manual SGD step.
"""
import numpy as np
import pytest

import pyneural as pn
import pyneural.functional as PF

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def pair(rng, *shape, positive=False):
    a = rng.standard_normal(shape)
    if positive:
        a = np.abs(a) + 0.5
    return (pn.tensor(a, dtype=pn.float64, requires_grad=True),
            torch.tensor(a, dtype=torch.float64, requires_grad=True))


# ---- sequences of in-place ops in the graph --------------------------------------------------------

def _seq_iops(L, x, z):
    y = x * 2
    y += z
    y *= z
    y -= 1.5
    y /= 3
    return y


def _seq_nested_view(L, x, z):
    y = x * 1.0
    y[1][2:].add_(z[0, :2])
    return y * y


def _seq_masked(L, x, z):
    y = x * 1.0
    y.masked_fill_(x > 0, 0.25)
    return y * z


def _seq_setitems(L, x, z):
    y = x + 0.0
    y[:, 1] = z[:, 0]
    y[x < -0.5] = 0.0
    y[0, 0] = 5.0
    y[[0, 2]] = z[:2] * 2
    return y * x


def _seq_leaf_without_grad(L, x, z):
    w = L.zeros(3, 4, dtype=L.float64, device=x.device)
    w.add_(x)
    w.mul_(z)
    return w


def _seq_relu_inplace(L, x, z):
    y = x * z
    F = PF if L is pn else TF
    F.relu(y, inplace=True)
    return y + F.leaky_relu(y * 1.0, 0.1, inplace=True)


SEQUENCES = {
    "add_tensor": lambda L, x, z: (x * 2).add_(z),
    "add_alpha_broadcast": lambda L, x, z: (x * 2).add_(z[0], alpha=-3.0),
    "sub_alpha": lambda L, x, z: (x * 1.0).sub_(z, alpha=0.5),
    "mul_tensor": lambda L, x, z: (x * 2).mul_(z),
    "mul_scalar": lambda L, x, z: (x + z).mul_(3.0),
    "div_tensor": lambda L, x, z: (x * 2).div_(z * z + 1.0),
    "div_scalar": lambda L, x, z: (x - z).div_(4.0),
    "operators": _seq_iops,
    "clamp_scalars": lambda L, x, z: (x * 1.0).clamp_(-0.5, 0.5) * z,
    "clamp_tensor": lambda L, x, z: (x * 1.0).clamp_(min=z),
    "fill_number": lambda L, x, z: (x * 1.0).fill_(2.0) * z,
    "fill_tensor": lambda L, x, z: (x * 1.0).fill_(z.sum()),
    "zero_": lambda L, x, z: (x * 1.0).zero_() + z,
    "copy_broadcast": lambda L, x, z: (x * 1.0).copy_(z[1]) * x,
    "masked_fill_": _seq_masked,
    "setitems": _seq_setitems,
    "iadd_slice": lambda L, x, z: _iadd_slice(x, z),
    "view_mul_": lambda L, x, z: _view_mul(x, z),
    "nested_view": _seq_nested_view,
    "view_of_a_temporary": lambda L, x, z: (x * 2)[1:].mul_(z[1:]),
    "leaf_without_grad": _seq_leaf_without_grad,
    "relu_inplace": _seq_relu_inplace,
}


def _iadd_slice(x, z):
    y = x * 1.0
    y[:, 1:3] += z[:, :2]
    return y * y


def _view_mul(x, z):
    y = x * 3.0
    y[0].mul_(z[0])
    return y


@pytest.mark.parametrize("name", list(SEQUENCES))
def test_inplace_sequence_against_torch(rng, name):
    fn = SEQUENCES[name]
    (x, tx), (z, tz) = pair(rng, 3, 4), pair(rng, 3, 4)
    out, tout = fn(pn, x, z), fn(torch, tx, tz)
    np.testing.assert_allclose(out.data, tout.detach().numpy(), rtol=1e-12, atol=1e-12)
    gy = rng.standard_normal(out.shape)
    out.backward(pn.tensor(gy, dtype=pn.float64))
    tout.backward(torch.tensor(gy))
    for ours, theirs in ((x, tx), (z, tz)):
        assert (ours.grad is None) == (theirs.grad is None)
        if theirs.grad is not None:
            np.testing.assert_allclose(ours.grad.data, theirs.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_a_view_does_not_keep_its_base_tensor_alive(rng):
    import weakref
    x, _ = pair(rng, 3, 4)
    y = x * 2
    v = y[0]
    ref = weakref.ref(y)
    del y
    assert ref() is None
    v.mul_(3)  # the base is gone: only the view's own history can change
    v.sum().backward()
    np.testing.assert_allclose(x.grad.data, np.array([[6.0] * 4, [0.0] * 4, [0.0] * 4]))


def test_inplace_op_is_a_node_and_gradchecks(rng):
    x, _ = pair(rng, 3, 4)
    z, _ = pair(rng, 3, 4, positive=True)

    def fn(a, b):
        y = a * 1.0
        y.mul_(b)
        y.div_(b + 1.0)
        y.add_(b, alpha=2.0)
        y[1] = b[0] * a[2]
        return y
    assert pn.gradcheck(fn, [x, z])
    y = x * 1.0
    y.add_(z)
    assert type(y.grad_fn).__name__ == "AddInplace" and not y.is_leaf


# ---- leaves --------------------------------------------------------------------------------------

LEAF_OPS = {
    "add_": lambda t: t.add_(1.0),
    "sub_": lambda t: t.sub_(t.detach() * 0 + 1),
    "mul_": lambda t: t.mul_(2.0),
    "div_": lambda t: t.div_(2.0),
    "zero_": lambda t: t.zero_(),
    "fill_": lambda t: t.fill_(3.0),
    "copy_": lambda t: t.copy_(t.detach() * 0 + 4),
    "clamp_": lambda t: t.clamp_(max=0.0),
    "masked_fill_": lambda t: t.masked_fill_(t.detach() > 0, 1.0),
    "setitem": lambda t: t.__setitem__(0, 7.0),
    "iadd": lambda t: t.__iadd__(1.0),
}


@pytest.mark.parametrize("name", list(LEAF_OPS))
def test_leaf_requiring_grad_refuses_in_place_outside_no_grad(rng, name):
    op = LEAF_OPS[name]
    x, tx = pair(rng, 4)
    with pytest.raises(RuntimeError, match="leaf"):
        op(x)
    with pytest.raises(RuntimeError, match="leaf"):
        op(tx)
    with pn.no_grad():
        op(x)
    with torch.no_grad():
        op(tx)
    np.testing.assert_allclose(x.data, tx.detach().numpy(), rtol=1e-15)
    assert x.is_leaf and x.requires_grad and x.grad_fn is None


def test_manual_sgd_step_updates_the_parameters_in_place(rng):
    x, y = rng.standard_normal((8, 3)), rng.standard_normal((8, 2))
    ours, theirs = pn.nn.Linear(3, 2).double(), torch.nn.Linear(3, 2).double()
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(ours.weight.data))
        theirs.bias.copy_(torch.tensor(ours.bias.data))
    for _ in range(3):
        for model, L, F in ((ours, pn, PF), (theirs, torch, TF)):
            loss = F.mse_loss(model(L.tensor(x, dtype=L.float64)), L.tensor(y, dtype=L.float64))
            loss.backward()
            with L.no_grad():
                for p in model.parameters():
                    p -= 0.1 * p.grad
                    p.grad.zero_()
    np.testing.assert_allclose(ours.weight.data, theirs.weight.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.bias.data, theirs.bias.detach().numpy(), rtol=1e-12)


def test_in_place_operators_keep_aliases(rng):
    for L in (pn, torch):
        a = L.ones(3)
        b = a
        b += 1
        b *= 3
        assert b is a and float(a.sum()) == 18.0


# ---- version counters: saved memory written in place ------------------------------------------------

def _exp_then_add(L, x, w):
    y = x.exp()
    y.add_(1)
    return y


def _saved_by_mul(L, x, w):
    y = x * 1.0
    out = y * w
    y.add_(1)
    return out


def _not_saved_by_add(L, x, w):
    y = x * 1.0
    out = y + w
    y.add_(1)
    return out + y


def _not_saved_by_scalar_mul(L, x, w):
    y = x * 1.0
    out = y * 3.0
    y.mul_(2)
    return out + y


def _saved_by_pow(L, x, w):
    y = x * 1.0
    out = y ** 2
    y.sub_(1)
    return out


def _saved_by_matmul(L, x, w):
    y = x * 1.0
    out = y @ w.T
    y.mul_(2)
    return out


def _saved_by_div(L, x, w):
    y = x * 1.0 + 3.0
    out = w / y
    y.add_(1)
    return out


def _detach_shares_memory(L, x, w):
    y = x.exp()
    y.detach().add_(1)
    return y


def _parameter_stepped_before_backward(L, x, w):
    out = x * w
    with L.no_grad():
        w.add_(1)
    return out


def _view_of_saved(L, x, w):
    y = x.sigmoid()
    y[0].add_(1)
    return y


def _setitem_into_saved(L, x, w):
    y = x.tanh()
    y[:, 0] = 0.0
    return y


def _relu_output(L, x, w):
    y = (PF if L is pn else TF).relu(x)
    y.mul_(2)
    return y


def _clamp_after_exp(L, x, w):
    y = x.exp()
    return y.clamp_(max=1.0)


def _data_write_is_not_tracked(L, x, w):
    y = x.exp()
    if L is torch:
        y.data.add_(1)
    else:
        y.data += 1
    return y


def _written_before_use(L, x, w):
    y = x * 1.0
    y.add_(1)
    return y.exp()


VERSION_CASES = [_exp_then_add, _saved_by_mul, _not_saved_by_add, _not_saved_by_scalar_mul, _saved_by_pow,
                 _saved_by_matmul, _saved_by_div, _detach_shares_memory, _parameter_stepped_before_backward,
                 _view_of_saved, _setitem_into_saved, _relu_output, _clamp_after_exp, _data_write_is_not_tracked,
                 _written_before_use]


def _raises_at_backward(fn, L, x, w):
    out = fn(L, x, w)
    try:
        out.sum().backward()
    except RuntimeError as e:
        return str(e)
    return None


@pytest.mark.parametrize("fn", VERSION_CASES, ids=[f.__name__.strip("_") for f in VERSION_CASES])
def test_saved_memory_written_in_place_fails_like_torch(rng, fn):
    (x, tx), (w, tw) = pair(rng, 3, 4), pair(rng, 3, 4)
    ours, theirs = _raises_at_backward(fn, pn, x, w), _raises_at_backward(fn, torch, tx, tw)
    assert (ours is None) == (theirs is None), f"pyneural: {ours!r}; torch: {theirs!r}"
    if ours is not None:
        assert "modified by an inplace operation" in ours and "version" in ours
    else:
        np.testing.assert_allclose(x.grad.data, tx.grad.numpy(), rtol=1e-12)


def test_version_counter_counts_writes_and_is_shared_by_views():
    for L in (pn, torch):
        x = L.zeros(3, 4)
        v = x[1]
        assert x._version == 0
        x.add_(1)
        v.mul_(2)
        x.zero_()
        assert x._version == 3 and v._version == 3
        assert x.detach()._version == 3


def test_error_names_the_node_and_the_versions(rng):
    x, _ = pair(rng, 3)
    y = x.exp()
    y.mul_(2)
    y.add_(1)
    with pytest.raises(RuntimeError, match=r"shape \(3,\) that ExpBackward saved.*at version 2; expected version 0"):
        y.sum().backward()


# ---- rules on dtypes, shapes and views ---------------------------------------------------------------

@pytest.mark.parametrize("op", [
    lambda L: L.ones(3, dtype=L.int64).add_(1.5),
    lambda L: L.ones(3, dtype=L.int64).div_(2),
    lambda L: L.ones(3, dtype=L.bool).add_(1),
    lambda L: L.ones(3).add_(L.ones(2, 3)),
    lambda L: L.ones(3).copy_(L.ones(4)),
    lambda L: L.ones(3, dtype=L.int64).clamp_(0.5),
], ids=["int_add_float", "int_true_div", "bool_add_int", "broadcast_grows", "copy_shape", "int_clamp_float"])
def test_results_that_do_not_fit_raise_like_torch(op):
    with pytest.raises(RuntimeError):
        op(torch)
    with pytest.raises(RuntimeError):
        op(pn)


def test_copy_casts_and_broadcasts_like_torch():
    for L in (pn, torch):
        x = L.zeros(2, 3, dtype=L.int64)
        x.copy_(L.tensor([1.7, -2.2, 3.9], dtype=L.float64))
        assert x.tolist() == [[1, -2, 3], [1, -2, 3]]
        f = L.zeros(3)
        f.fill_(L.tensor(2.5, dtype=L.float64))
        assert f.dtype == L.float32 and f.tolist() == [2.5, 2.5, 2.5]


def test_in_place_on_a_reshaped_view_in_the_graph_is_refused_clearly(rng):
    # torch rebases such views through the view's inverse; pyneural writes through index views
    # only and refuses the rest rather than compute a wrong gradient
    x, _ = pair(rng, 3, 4)
    y = (x * 1.0).reshape(12)
    with pytest.raises(RuntimeError, match="view .*Reshape.*clone"):
        y.add_(1)
    with pn.no_grad():
        y.add_(1)  # outside the graph the write goes through
    z = (x * 1.0).reshape(12).clone()
    z.add_(1)
    z.sum().backward()
    np.testing.assert_allclose(x.grad.data, 1.0)


def test_zero_grad_and_grad_arithmetic_stay_plain(rng):
    x, _ = pair(rng, 3)
    (x * 2).sum().backward()
    x.grad.zero_()
    assert not x.grad.data.any()
    x.grad += 1
    assert x.grad.tolist() == [1.0, 1.0, 1.0]


# ---- on the CUDA device (a real GPU, or the emulated one) -----------------------------------------

@pytest.mark.cuda
@pytest.mark.parametrize("name", list(SEQUENCES))
def test_inplace_sequence_on_the_device_matches_the_host(cuda_xp, rng, name):
    fn = SEQUENCES[name]
    (x, _), (z, _) = pair(rng, 3, 4), pair(rng, 3, 4)
    dx, dz = (pn.Tensor(t.detach().to("cuda").data).requires_grad_(True) for t in (x, z))
    out, dout = fn(pn, x, z), fn(pn, dx, dz)
    assert dout.device == "cuda"
    np.testing.assert_allclose(dout.cpu().data, out.data, rtol=1e-12, atol=1e-12)
    gy = rng.standard_normal(out.shape)
    out.backward(pn.tensor(gy, dtype=pn.float64))
    dout.backward(pn.tensor(gy, dtype=pn.float64).to("cuda"))
    for h, d in ((x, dx), (z, dz)):
        assert (h.grad is None) == (d.grad is None)
        if h.grad is not None:
            np.testing.assert_allclose(d.grad.cpu().data, h.grad.data, rtol=1e-12, atol=1e-12)


@pytest.mark.cuda
@pytest.mark.parametrize("fn", [_exp_then_add, _saved_by_mul, _view_of_saved, _parameter_stepped_before_backward],
                         ids=lambda f: f.__name__.strip("_"))
def test_saved_memory_written_in_place_fails_on_the_device(cuda_xp, rng, fn):
    (x, _), (w, _) = pair(rng, 3, 4), pair(rng, 3, 4)
    dx, dw = (pn.Tensor(t.detach().to("cuda").data).requires_grad_(True) for t in (x, w))
    assert "modified by an inplace operation" in _raises_at_backward(fn, pn, dx, dw)
