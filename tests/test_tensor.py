"""The Tensor and the autograd engine: construction, dtypes, grad mode, accumulation, graph
freeing, hooks, aliasing of stored gradients, and the seeded generator."""
import json

import sys

import numpy as np
import pytest

import pyneural as pn


# ---- construction --------------------------------------------------------------------------

def test_tensor_default_dtypes():
    assert pn.tensor([1.0, 2.0]).dtype == np.float32
    assert pn.tensor(np.zeros(3)).dtype == np.float32          # float64 data -> float32
    assert pn.tensor(np.zeros(3), dtype=pn.float64).dtype == np.float64
    assert pn.tensor([1, 2]).dtype == np.int64
    assert pn.tensor([True, False]).dtype == np.bool_
    assert pn.tensor(3.5).shape == ()


def test_tensor_copies_but_from_numpy_shares():
    a = np.ones(3, dtype=np.float32)
    t = pn.tensor(a)
    a[0] = 5
    assert t.data[0] == 1
    s = pn.from_numpy(a)
    a[1] = 7
    assert s.data[1] == 7 and s.dtype == np.float32


def test_factories(rng):
    assert pn.zeros(2, 3).shape == (2, 3) and pn.zeros((2, 3)).dtype == np.float32
    assert np.all(pn.ones(4).data == 1)
    assert pn.full((2, 2), 1.5).dtype == np.float32
    assert pn.arange(5).dtype == np.int64 and pn.arange(0.0, 1.0, 0.25).shape == (4,)
    assert pn.randn(3, 4).dtype == np.float32 and pn.rand(2).dtype == np.float32
    assert pn.zeros_like(pn.ones(2, 2, dtype=pn.float64)).dtype == np.float64
    r = pn.randint(0, 10, (100,))
    assert r.dtype == np.int64 and r.data.min() >= 0 and r.data.max() < 10
    assert sorted(pn.randperm(6).tolist()) == list(range(6))
    assert pn.eye(3).data.trace() == 3
    t = pn.randn(2, 3, requires_grad=True)
    assert t.requires_grad and t.is_leaf and t.grad_fn is None


def test_properties_and_conversion():
    t = pn.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert t.shape == (2, 3) and t.ndim == 2 and t.size() == (2, 3) and t.size(1) == 3
    assert t.numel() == 6 and len(t) == 2 and t.device == "cpu"
    assert t.T.shape == (3, 2)
    assert isinstance(t.numpy(), np.ndarray)
    assert t.sum().item() == 21.0 and float(t[1, 2]) == 6.0
    assert t.tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    assert "tensor(" in repr(t)


def test_item_rejects_many_elements():
    with pytest.raises(ValueError, match="one-element"):
        pn.ones(3).item()


def test_numpy_refuses_when_requires_grad():
    t = pn.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="detach"):
        t.numpy()
    assert t.detach().numpy().shape == (2,)


def test_to_device_and_dtype(monkeypatch):
    t = pn.ones(2)
    assert t.to("cpu") is t and t.cpu() is t and t.device == "cpu"
    with pytest.raises(RuntimeError, match="Expected one of cpu, cuda device type"):
        t.to("tpu")
    monkeypatch.setenv("PYNEURAL_CUDA_EMULATE", "0")
    monkeypatch.setitem(sys.modules, "cupy", None)  # no CuPy, no emulator: no CUDA device
    with pytest.raises(RuntimeError, match="cuda:0 is not available: .*PYNEURAL_CUDA_EMULATE=1"):
        t.to("cuda")
    assert t.to(pn.float64).dtype == np.float64 and t.double().dtype == np.float64


def test_integer_tensor_cannot_require_grad():
    with pytest.raises(RuntimeError, match="floating point"):
        pn.tensor([1, 2], requires_grad=True)


# ---- engine --------------------------------------------------------------------------------

def test_simple_backward_values():
    x = pn.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = (x * x * 3 + x).sum()
    y.backward()
    np.testing.assert_allclose(x.grad.data, 6 * x.data + 1)


def test_gradients_accumulate_across_backward_calls():
    x = pn.tensor([1.0, -2.0], requires_grad=True)
    (x * 2).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_allclose(x.grad.data, [5.0, 5.0])


def test_shared_subexpression_accumulates():
    x = pn.tensor([2.0], requires_grad=True)
    h = x * x          # used twice below
    y = h + h * 3
    y.backward()
    np.testing.assert_allclose(x.grad.data, [4 * 2 * 2.0])


def test_backward_needs_gradient_for_non_scalar():
    x = pn.ones(3, requires_grad=True)
    y = x * 2
    with pytest.raises(RuntimeError, match="single-element"):
        y.backward()
    y.backward(pn.tensor([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(x.grad.data, [2.0, 4.0, 6.0])


def test_backward_gradient_shape_checked():
    x = pn.ones(3, requires_grad=True)
    with pytest.raises(ValueError, match="gradient has shape"):
        (x * 2).backward(pn.ones(4))


def test_backward_without_grad_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        pn.ones(2).sum().backward()


def test_graph_is_freed_after_backward():
    x = pn.ones(3, requires_grad=True)
    y = (x.exp() * 2).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_retain_graph_allows_second_backward():
    x = pn.ones(3, requires_grad=True)
    y = (x.exp() * 2).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.data, 4 * np.e * np.ones(3), rtol=1e-6)


def test_no_grad_context_and_decorator():
    x = pn.ones(2, requires_grad=True)
    with pn.no_grad():
        assert not pn.is_grad_enabled()
        y = x * 2
    assert pn.is_grad_enabled()
    assert not y.requires_grad and y.grad_fn is None

    @pn.no_grad()
    def f(t):
        return t * 3
    assert not f(x).requires_grad
    with pn.no_grad():
        with pn.enable_grad():
            assert (x * 2).requires_grad


def test_set_grad_enabled():
    with pn.set_grad_enabled(False):
        assert not pn.is_grad_enabled()
    assert pn.is_grad_enabled()


def test_detach_cuts_graph():
    x = pn.ones(2, requires_grad=True)
    y = (x * 2).detach()
    assert not y.requires_grad and y.is_leaf
    z = (y * x).sum()
    z.backward()
    np.testing.assert_allclose(x.grad.data, [2.0, 2.0])


def test_inputs_without_grad_get_none():
    x = pn.ones(2, requires_grad=True)
    c = pn.ones(2)
    (x * c).sum().backward()
    assert c.grad is None and x.grad is not None


def test_retain_grad_on_intermediate():
    x = pn.tensor([1.0, 2.0], requires_grad=True)
    h = x * 3
    h.retain_grad()
    (h * h).sum().backward()
    np.testing.assert_allclose(h.grad.data, 2 * h.data)


def test_branch_that_contributes_nothing_still_completes():
    # argmax-like paths return no gradient; the other branch must still reach x.
    x = pn.tensor([1.0, 3.0, 2.0], requires_grad=True)
    values, _ = x.reshape(1, 3).max(dim=1)
    y = values.sum() + (x * 0.5).sum()
    y.backward()
    np.testing.assert_allclose(x.grad.data, [0.5, 1.5, 0.5])


def test_deep_chain_has_no_recursion_limit():
    x = pn.ones(2, requires_grad=True)
    y = x
    for _ in range(3000):
        y = y * 1.0
    y.sum().backward()
    np.testing.assert_allclose(x.grad.data, [1.0, 1.0])


def test_stored_gradients_never_alias():
    # z = a + b passes one incoming gradient array to both leaves; each .grad must own its memory.
    a = pn.ones(3, requires_grad=True)
    b = pn.ones(3, requires_grad=True)
    (a + b).backward(pn.ones(3))
    assert not np.shares_memory(a.grad.data, b.grad.data)
    a.grad.data += 1
    np.testing.assert_allclose(b.grad.data, 1.0)
    # a sum's backward is a read-only broadcast view; the leaf's grad must be a writeable copy
    c = pn.ones(2, 3, requires_grad=True)
    c.sum().backward()
    assert c.grad.data.flags.writeable and c.grad.data.base is None
    c.grad.data *= 2


def test_leaf_grad_keeps_leaf_dtype():
    x = pn.ones(3, requires_grad=True)                     # float32
    y = (x * np.ones(3, dtype=np.float64)).sum()           # promotes to float64
    y.backward()
    assert x.grad.dtype == np.float32


def test_inplace_on_leaf_requiring_grad_is_refused():
    x = pn.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="in-place"):
        x.add_(1.0)
    with pn.no_grad():
        x.add_(1.0).mul_(2.0)
    np.testing.assert_allclose(x.data, [4.0, 4.0])


# ---- post-accumulate-grad hooks ------------------------------------------------------------------

def test_hook_runs_once_after_all_contributions():
    w = pn.tensor([1.0, 2.0], requires_grad=True)
    calls = []
    w.register_post_accumulate_grad_hook(lambda t: calls.append(t.grad.data.copy()))
    # w feeds three ops: its gradient is complete only after all three contributions
    y = (w * 2).sum() + (w * w).sum() + w.exp().sum()
    y.backward()
    assert len(calls) == 1
    np.testing.assert_allclose(calls[0], 2 + 2 * w.data + np.exp(w.data), rtol=1e-6)


def test_hook_sees_accumulated_grad_and_can_modify_it():
    w = pn.tensor([1.0], requires_grad=True)
    w.grad = pn.tensor([10.0])
    seen = []

    def hook(t):
        seen.append(float(t.grad.data[0]))
        t.grad.data *= 0.5  # e.g. averaging after an all-reduce
    w.register_post_accumulate_grad_hook(hook)
    (w * 3).sum().backward()
    assert seen == [13.0]
    np.testing.assert_allclose(w.grad.data, [6.5])


def test_hooks_fire_in_reverse_layer_order_while_backward_runs():
    # The last layer's weight is complete before the first layer's gradient is computed.
    w1 = pn.randn(4, 4, requires_grad=True)
    w2 = pn.randn(4, 4, requires_grad=True)
    order = []
    w1.register_post_accumulate_grad_hook(lambda t: order.append("w1"))
    w2.register_post_accumulate_grad_hook(lambda t: order.append("w2"))
    x = pn.randn(2, 4)
    ((x @ w1).relu() @ w2).sum().backward()
    assert order == ["w2", "w1"]


def test_hook_handle_remove():
    w = pn.ones(2, requires_grad=True)
    calls = []
    handle = w.register_post_accumulate_grad_hook(lambda t: calls.append(1))
    (w * 2).sum().backward()
    handle.remove()
    (w * 2).sum().backward()
    assert calls == [1]


def test_hook_only_on_leaves():
    x = pn.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf"):
        (x * 2).register_post_accumulate_grad_hook(lambda t: None)
    with pytest.raises(RuntimeError, match="does not require grad"):
        pn.ones(2).register_post_accumulate_grad_hook(lambda t: None)


def test_hook_called_once_per_leaf_per_backward_in_a_model():
    model = pn.nn.Sequential(pn.nn.Linear(5, 7), pn.nn.ReLU(), pn.nn.Linear(7, 3))
    counts = {name: 0 for name, _ in model.named_parameters()}
    for name, p in model.named_parameters():
        p.register_post_accumulate_grad_hook(lambda t, name=name: counts.__setitem__(name, counts[name] + 1))
    x = pn.randn(4, 5)
    for _ in range(2):
        model(x).sum().backward()
    assert all(c == 2 for c in counts.values()), counts


# ---- random state --------------------------------------------------------------------------

def test_manual_seed_repeats_draws():
    pn.manual_seed(123)
    a = pn.randn(5).data.copy()
    pn.manual_seed(123)
    np.testing.assert_array_equal(a, pn.randn(5).data)


def test_rng_state_round_trips_through_json():
    pn.manual_seed(7)
    pn.rand(3)
    state = json.loads(json.dumps(pn.get_rng_state()))
    expected = pn.randn(4).data.copy()
    pn.rand(10)
    pn.set_rng_state(state)
    np.testing.assert_array_equal(pn.randn(4).data, expected)


def test_set_rng_state_rejects_bad_state():
    with pytest.raises(ValueError, match="missing keys"):
        pn.set_rng_state({"bit_generator": "PCG64"})
    with pytest.raises(TypeError):
        pn.set_rng_state([1, 2])
    with pytest.raises(TypeError):
        pn.manual_seed("1")
