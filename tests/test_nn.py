"""pyneural.nn: Module bookkeeping, state_dict round trips and errors, layer shape errors,
initialisation, Sequential's Linear/Conv2d+ReLU fusion, and whole-model comparisons against
PyTorch (skipped where torch is missing)."""
import math
from collections import OrderedDict

import numpy as np
import pytest

import pyneural as pn
from pyneural import nn

from conftest import rel_err

try:
    import torch
except ImportError:  # pragma: no cover - torch is optional
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                      nn.MaxPool2d(2))
        self.head = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


# ---- Module bookkeeping --------------------------------------------------------------------

def test_parameters_buffers_and_modules_are_registered():
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == ["features.0.weight", "features.0.bias", "features.1.weight", "features.1.bias",
                     "head.weight", "head.bias"]
    assert [n for n, _ in net.named_buffers()] == [
        "features.1.running_mean", "features.1.running_var", "features.1.num_batches_tracked"]
    assert [type(m).__name__ for m in net.children()] == ["Sequential", "Linear"]
    assert len(list(net.modules())) == 7
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in net.parameters())


def test_shared_parameter_listed_once():
    lin = nn.Linear(3, 3)
    seq = nn.Sequential(lin, nn.ReLU(), lin)
    assert len(list(seq.parameters())) == 2


def test_reassigning_and_deleting_attributes_updates_registries():
    m = nn.Linear(2, 3)
    m.bias = None
    assert [n for n, _ in m.named_parameters()] == ["weight"]
    with pytest.raises(TypeError, match="Parameter or None"):
        m.weight = pn.ones(3, 2)
    m.extra = nn.Parameter(np.zeros(1, dtype=np.float32))
    assert "extra" in dict(m.named_parameters())
    del m.extra
    assert "extra" not in dict(m.named_parameters())


def test_setattr_before_init_is_a_clear_error():
    class Bad(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.zeros(2, dtype=np.float32))
            super().__init__()
    with pytest.raises(AttributeError, match="super\\(\\).__init__"):
        Bad()


def test_train_eval_and_apply():
    net = Net()
    net.eval()
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    seen = []
    net.apply(lambda m: seen.append(type(m).__name__))
    assert seen[-1] == "Net" and "Conv2d" in seen


def test_zero_grad():
    m = nn.Linear(3, 2)
    m(pn.randn(4, 3)).sum().backward()
    m.zero_grad(set_to_none=False)
    assert all(np.all(p.grad.data == 0) for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())


def test_repr_prints_the_tree():
    text = repr(nn.Sequential(nn.Linear(4, 2), nn.ReLU(), nn.Sequential(nn.Dropout(0.1))))
    assert text == ("Sequential(\n"
                    "  (0): Linear(in_features=4, out_features=2, bias=True)\n"
                    "  (1): ReLU()\n"
                    "  (2): Sequential(\n"
                    "    (0): Dropout(p=0.1)\n"
                    "  )\n"
                    ")")


def test_module_to_and_double():
    m = nn.Linear(3, 2)
    p = m.weight
    m.double()
    assert m.weight is p and p.dtype == np.float64
    assert m.to("cpu") is m and m.weight.device == "cpu"
    with pytest.raises(RuntimeError, match="Expected one of cpu, cuda device type"):
        m.to("tpu")


def test_sequential_and_module_list_indexing():
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    assert len(seq) == 3 and isinstance(seq[-1], nn.Linear) and len(seq[:2]) == 2
    with pytest.raises(IndexError):
        seq[3]
    ml = nn.ModuleList([nn.Linear(1, 1) for _ in range(3)])
    holder = nn.Module()
    holder.layers = ml
    assert len(list(holder.parameters())) == 6 and len(ml) == 3
    seq2 = nn.Sequential(OrderedDict([("fc", nn.Linear(2, 2)), ("act", nn.Tanh())]))
    assert [n for n, _ in seq2.named_parameters()] == ["fc.weight", "fc.bias"]


# ---- state_dict ----------------------------------------------------------------------------

def test_state_dict_round_trip():
    pn.manual_seed(0)
    a = Net()
    a.train()
    a(pn.randn(2, 1, 8, 8))          # moves the BatchNorm running stats
    state = a.state_dict()
    assert list(state) == ["features.0.weight", "features.0.bias", "features.1.weight", "features.1.bias",
                           "features.1.running_mean", "features.1.running_var",
                           "features.1.num_batches_tracked", "head.weight", "head.bias"]
    assert all(isinstance(v, np.ndarray) for v in state.values())
    assert int(state["features.1.num_batches_tracked"]) == 1
    b = Net()
    weight_obj = b.head.weight
    b.load_state_dict(state)
    assert b.head.weight is weight_obj            # copied in place: optimizers keep their references
    for k, v in b.state_dict().items():
        np.testing.assert_array_equal(v, state[k])
    a.eval()
    b.eval()
    x = pn.randn(3, 1, 8, 8)
    np.testing.assert_array_equal(a(x).data, b(x).data)
    # the state_dict is a copy
    state["head.bias"][:] = 99
    assert not np.any(a.head.bias.data == 99)


def test_load_state_dict_reports_missing_unexpected_and_mis_shaped():
    m = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    state = m.state_dict()
    del state["1.bias"]
    state["2.weight"] = np.zeros(1, dtype=np.float32)
    state["0.weight"] = np.zeros((5, 5), dtype=np.float32)
    with pytest.raises(RuntimeError) as info:
        m.load_state_dict(state)
    msg = str(info.value)
    assert "missing key(s): 1.bias" in msg
    assert "unexpected key(s): 2.weight" in msg
    assert "0.weight: checkpoint shape (5, 5), model shape (2, 3)" in msg


def test_load_state_dict_non_strict():
    m = nn.Linear(3, 2)
    state = m.state_dict()
    del state["bias"]
    state["other"] = np.zeros(1)
    result = m.load_state_dict(state, strict=False)
    assert result.missing_keys == ["bias"] and result.unexpected_keys == ["other"]


def test_non_persistent_buffer_not_saved():
    m = nn.Module()
    m.register_buffer("kept", pn.zeros(2))
    m.register_buffer("scratch", pn.zeros(2), persistent=False)
    assert list(m.state_dict()) == ["kept"]


# ---- layers: shapes, errors and behaviour -------------------------------------------------------

def test_linear_shape_error_names_layer_and_shapes():
    with pytest.raises(ValueError) as info:
        nn.Linear(64, 10)(pn.randn(32, 65))
    assert str(info.value) == "Linear(in_features=64, out_features=10, bias=True): expected input (..., 64), got (32, 65)"


def test_linear_dtype_error():
    with pytest.raises(TypeError, match="Linear.*dtype float64"):
        nn.Linear(3, 2)(pn.randn(2, 3, dtype=pn.float64))


def test_linear_accepts_extra_leading_dims():
    assert nn.Linear(4, 2)(pn.randn(3, 5, 4)).shape == (3, 5, 2)


@pytest.mark.parametrize("layer,bad_shape,pattern", [
    (lambda: nn.Conv2d(3, 8, 3), (2, 4, 10, 10), r"Conv2d\(3, 8.*expected input \(N, 3, H, W\), got \(2, 4, 10, 10\)"),
    (lambda: nn.Conv2d(3, 8, 3), (3, 10, 10), r"Conv2d.*got \(3, 10, 10\)"),
    (lambda: nn.Conv2d(3, 8, 5), (1, 3, 3, 3), r"Conv2d.*smaller than the \(dilated\) kernel"),
    (lambda: nn.MaxPool2d(2), (4, 4), r"MaxPool2d.*expected input \(N, C, H, W\), got \(4, 4\)"),
    (lambda: nn.MaxPool2d(5), (1, 1, 3, 3), r"MaxPool2d.*smaller than the kernel"),
    (lambda: nn.AvgPool2d(2), (4, 4, 4), r"AvgPool2d.*got \(4, 4, 4\)"),
    (lambda: nn.BatchNorm1d(5), (4, 6), r"BatchNorm1d\(5.*expected input \(N, 5\) or \(N, 5, L\), got \(4, 6\)"),
    (lambda: nn.BatchNorm2d(3), (4, 3, 5), r"BatchNorm2d\(3.*expected input \(N, 3, H, W\), got \(4, 3, 5\)"),
    (lambda: nn.Flatten(2), (4, 3), r"Flatten.*too few dimensions"),
])
def test_layer_shape_errors(layer, bad_shape, pattern):
    with pytest.raises(ValueError, match=pattern):
        layer()(pn.randn(*bad_shape))


def test_batchnorm_single_sample_error_names_layer():
    with pytest.raises(ValueError, match=r"BatchNorm1d\(3.*more than 1 value per channel"):
        nn.BatchNorm1d(3)(pn.randn(1, 3))


def test_embedding_errors_and_shape():
    emb = nn.Embedding(10, 4)
    assert emb(pn.tensor([[1, 2, 3], [4, 5, 6]])).shape == (2, 3, 4)
    with pytest.raises(ValueError, match=r"Embedding\(10, 4\): index 10 out of range \[0, 10\)"):
        emb(pn.tensor([1, 10]))
    with pytest.raises(ValueError, match=r"index -1 out of range"):
        emb(pn.tensor([-1, 2]))
    with pytest.raises(TypeError, match="integers"):
        emb(pn.tensor([1.0, 2.0]))
    assert "sparse=True" in repr(nn.Embedding(10, 4, sparse=True))  # row-sparse gradients: tests/test_embedding.py
    padded = nn.Embedding(5, 2, padding_idx=0)
    assert np.all(padded.weight.data[0] == 0)


def test_loss_module_errors():
    with pytest.raises(ValueError, match=r"CrossEntropyLoss.*target has shape"):
        nn.CrossEntropyLoss()(pn.randn(4, 3), pn.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"MSELoss.*differ"):
        nn.MSELoss()(pn.randn(4, 3), pn.randn(3, 4))
    with pytest.raises(ValueError, match="reduction"):
        nn.MSELoss(reduction="avg")
    with pytest.raises(TypeError, match="expected a pyneural Tensor"):
        nn.Linear(2, 2)(np.ones((1, 2), dtype=np.float32))


def test_batchnorm_train_updates_eval_uses_running_stats():
    bn = nn.BatchNorm1d(3, momentum=0.5)
    x = pn.randn(16, 3) * 2 + 1
    bn(x)
    np.testing.assert_allclose(bn.running_mean.data, 0.5 * x.data.mean(0), rtol=1e-5)
    assert int(bn.num_batches_tracked.data) == 1
    bn.eval()
    y = bn(x)
    expected = (x.data - bn.running_mean.data) / np.sqrt(bn.running_var.data + bn.eps)
    np.testing.assert_allclose(y.data, expected, rtol=1e-4, atol=1e-5)
    assert int(bn.num_batches_tracked.data) == 1   # eval does not count batches


def test_batchnorm_cumulative_average_when_momentum_none():
    bn = nn.BatchNorm1d(2, momentum=None)
    xs = [pn.randn(8, 2) for _ in range(3)]
    for x in xs:
        bn(x)
    np.testing.assert_allclose(bn.running_mean.data, np.mean([x.data.mean(0) for x in xs], axis=0), rtol=1e-5, atol=1e-6)


def test_dropout_module_train_vs_eval():
    d = nn.Dropout(0.5)
    x = pn.ones(100, 100)
    assert np.mean(d(x).data == 0) > 0.4
    d.eval()
    assert d(x) is x


def test_gelu_tanh_sigmoid_identity_flatten_modules():
    x = pn.randn(2, 3, 4)
    np.testing.assert_allclose(nn.GELU()(x).data, pn.functional.gelu(x).data)
    np.testing.assert_allclose(nn.Tanh()(x).data, np.tanh(x.data), rtol=1e-6)
    np.testing.assert_allclose(nn.Sigmoid()(x).data, 1 / (1 + np.exp(-x.data)), rtol=1e-5)
    assert nn.Identity()(x) is x
    assert nn.Flatten()(x).shape == (2, 12)


# ---- init ------------------------------------------------------------------------------------

def test_default_linear_and_conv_init_bounds():
    pn.manual_seed(1)
    lin = nn.Linear(100, 50)
    bound = 1 / math.sqrt(100)
    assert np.abs(lin.weight.data).max() <= bound and np.abs(lin.weight.data).max() > 0.9 * bound
    assert np.abs(lin.bias.data).max() <= bound
    conv = nn.Conv2d(4, 8, 3)
    cb = 1 / math.sqrt(4 * 9)
    assert np.abs(conv.weight.data).max() <= cb


def test_init_functions_are_seeded_and_scaled():
    w = nn.Parameter(np.empty((200, 300), dtype=np.float32))
    pn.manual_seed(5)
    nn.init.kaiming_normal_(w, nonlinearity="relu")
    first = w.data.copy()
    assert abs(w.data.std() - math.sqrt(2 / 300)) < 0.01 * math.sqrt(2 / 300) * 10
    pn.manual_seed(5)
    nn.init.kaiming_normal_(w, nonlinearity="relu")
    np.testing.assert_array_equal(w.data, first)
    nn.init.xavier_uniform_(w)
    assert np.abs(w.data).max() <= math.sqrt(6 / 500)
    nn.init.zeros_(w)
    assert not w.data.any()
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        nn.init.xavier_uniform_(nn.Parameter(np.zeros(3, dtype=np.float32)))


# ---- Sequential fusion ---------------------------------------------------------------------------

def test_sequential_fuses_linear_relu_and_matches_unfused():
    pn.manual_seed(2)
    seq = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
    x = pn.randn(5, 6)
    out = seq(x)
    assert len(seq._plan) == 3                       # two fused pairs and the last Linear
    assert type(out.grad_fn).__name__ == "Linear"
    out.sum().backward()
    fused = [p.grad.data.copy() for p in seq.parameters()]
    seq.zero_grad()
    h = x
    for m in seq:                                   # one module at a time: no fusion
        h = m(h)
    np.testing.assert_allclose(h.data, out.data, rtol=1e-6)
    h.sum().backward()
    for a, b in zip(fused, (p.grad.data for p in seq.parameters())):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_sequential_plan_follows_changes():
    seq = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    x = pn.randn(2, 3)
    seq(x)
    seq[1] = nn.Tanh()
    np.testing.assert_allclose(seq(x).data, np.tanh(seq[0](x).data), rtol=1e-6)


# ---- against PyTorch -----------------------------------------------------------------------

def _copy_to_torch(ours, theirs):
    with torch.no_grad():
        for (name, p), (tname, tp) in zip(ours.state_dict().items(), theirs.state_dict().items()):
            assert name == tname
            tp.copy_(torch.from_numpy(np.array(p)))


@needs_torch
def test_mlp_step_matches_torch(rng):
    ours = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 16), nn.GELU(), nn.Linear(16, 5))
    theirs = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16),
                                 torch.nn.GELU(), torch.nn.Linear(16, 5))
    _copy_to_torch(ours, theirs)
    x = rng.standard_normal((8, 12)).astype(np.float32)
    y = rng.integers(0, 5, 8)
    loss = nn.CrossEntropyLoss(label_smoothing=0.05)(ours(pn.tensor(x)), pn.tensor(y))
    tloss = torch.nn.CrossEntropyLoss(label_smoothing=0.05)(theirs(torch.tensor(x)), torch.tensor(y))
    loss.backward()
    tloss.backward()
    assert abs(loss.item() - tloss.item()) < 1e-5
    for (name, p), tp in zip(ours.named_parameters(), theirs.parameters()):
        assert rel_err(p.grad.data, tp.grad.numpy()) < 1e-4, name


@needs_torch
def test_cnn_matches_torch(rng):
    ours = Net()
    theirs = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                 torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(64, 3))
    state = ours.state_dict()
    with torch.no_grad():
        for (name, v), tp in zip(state.items(), theirs.state_dict().values()):
            tp.copy_(torch.from_numpy(np.array(v)))
    x = rng.standard_normal((4, 1, 8, 8)).astype(np.float32)
    out = ours(pn.tensor(x))
    tout = theirs(torch.tensor(x))
    gy = rng.standard_normal(out.shape).astype(np.float32)
    out.backward(pn.tensor(gy))
    tout.backward(torch.tensor(gy))
    assert rel_err(out.data, tout.detach().numpy()) < 1e-5
    for (name, p), tp in zip(ours.named_parameters(), theirs.parameters()):
        if name == "features.0.bias":   # feeds BatchNorm: its true gradient is zero, only rounding is left
            assert np.abs(p.grad.data).max() < 1e-4 and np.abs(tp.grad.numpy()).max() < 1e-4
        else:
            assert rel_err(p.grad.data, tp.grad.numpy()) < 1e-4, name
    np.testing.assert_allclose(ours.features[1].running_var.data, theirs[1].running_var.numpy(), rtol=1e-5)
