"""DLPack both ways (numpy, PyTorch and CuPy arrays shared, never copied), np.asarray on tensors,
and safetensors files that carry weights between pyneural models and their PyTorch twins
(bench/torch_models.py) in both directions with the outputs unchanged."""
import errno
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

import pyneural as pn
from conftest import rel_err
from pyneural import functional as F
from pyneural import models, optim
from pyneural.checkpoint import CheckpointError

INPUTS = {"mlp": (6, 1, 8, 8), "cnn": (6, 1, 8, 8), "resnet_small": (4, 3, 16, 16)}


def same_memory(a, b_ptr):
    return a.__array_interface__["data"][0] == b_ptr


# ---- DLPack: into pyneural ------------------------------------------------------------------

def test_from_dlpack_of_numpy_shares_memory(rng):
    a = rng.standard_normal((3, 4))
    t = pn.from_dlpack(a)
    assert t.data is a and not t.requires_grad
    view = a[:, ::2]  # strided: wrapped as it is
    assert np.shares_memory(pn.from_dlpack(view).data, a)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "int64", "int32", "bool"])
def test_from_dlpack_of_torch_shares_memory_both_ways(dtype):
    torch = pytest.importorskip("torch")
    src = (torch.arange(12) % 5).to(getattr(torch, dtype)).reshape(3, 4)
    t = pn.from_dlpack(src)
    assert t.dtype == np.dtype(dtype) and t.shape == (3, 4) and same_memory(t.data, src.data_ptr())
    src[0, 0] = 1
    assert t.data[0, 0] == 1
    t.data[2, 3] = 0
    assert not bool(src[2, 3])


def test_from_dlpack_of_a_strided_torch_view_keeps_its_strides():
    torch = pytest.importorskip("torch")
    base = torch.arange(20, dtype=torch.float32).reshape(4, 5)
    view = base.t()[1:]  # transposed and offset: no contiguous copy may sneak in
    t = pn.from_dlpack(view)
    np.testing.assert_array_equal(t.data, view.numpy())
    assert same_memory(t.data, view.data_ptr())
    base[2, 1] = -7
    assert t.data[0, 2] == -7


def test_from_dlpack_refuses_what_it_cannot_share():
    torch = pytest.importorskip("torch")
    with pytest.raises(BufferError, match="require gradient"):  # PyTorch's own refusal
        pn.from_dlpack(torch.ones(2, requires_grad=True))
    with pytest.raises(TypeError, match="DLPack capsule"):
        pn.from_dlpack(torch.utils.dlpack.to_dlpack(torch.ones(2)))
    with pytest.raises(TypeError, match="expected an array with __dlpack__"):
        pn.from_dlpack([1.0, 2.0])
    with pytest.raises(BufferError, match="requires grad"):
        pn.from_dlpack(pn.ones(2, requires_grad=True))


# ---- DLPack and __array__: out of pyneural ----------------------------------------------------

def test_numpy_and_torch_take_a_tensor_without_copying(rng):
    torch = pytest.importorskip("torch")
    t = pn.tensor(rng.standard_normal((2, 5)).astype(np.float32))
    assert t.__dlpack_device__() == (1, 0)
    from_numpy, from_torch = np.from_dlpack(t), torch.from_dlpack(t)
    assert np.shares_memory(from_numpy, t.data) and same_memory(t.data, from_torch.data_ptr())
    from_torch[1, 4] = 3.5
    assert t.data[1, 4] == 3.5 and from_numpy[1, 4] == 3.5
    np.testing.assert_array_equal(pn.from_dlpack(from_torch).data, t.data)
    with pytest.raises(BufferError, match="require gradient"):
        torch.from_dlpack(pn.ones(2, requires_grad=True))


def test_np_asarray_of_a_tensor(rng):
    t = pn.tensor(rng.standard_normal((3, 2)).astype(np.float32))
    assert np.asarray(t) is t.data
    assert np.array(t).base is None and np.array_equal(np.array(t), t.data)  # np.array copies
    as64 = np.asarray(t, dtype=np.float64)
    assert as64.dtype == np.float64 and np.array_equal(as64, t.data)
    with pytest.raises(ValueError, match="must copy"):
        np.array(t, dtype=np.float64, copy=False)
    with pytest.raises(RuntimeError, match="requires grad"):
        np.asarray(pn.ones(2, requires_grad=True))
    assert np.asarray(pn.ones(2, requires_grad=True).detach()).tolist() == [1.0, 1.0]


@pytest.mark.cuda
def test_device_tensors_and_dlpack(cp):
    from pyneural.cuda import emulator
    t = pn.arange(6, device="cuda").float()
    with pytest.raises(TypeError, match="can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu()"):
        np.asarray(t)
    assert t.__dlpack_device__() == (2, 0)
    wrapped = pn.from_dlpack(t.data)
    assert wrapped.data is t.data and wrapped.device == "cuda"
    if emulator.enabled():
        with pytest.raises(BufferError, match="emulated CUDA device"):
            t.__dlpack__()
        return
    shared = pn.from_dlpack(cp.from_dlpack(t))  # through CuPy and back, on a real GPU
    shared.data[0] = 42
    assert float(t.data[0].get()) == 42


# ---- safetensors ------------------------------------------------------------------------------

def torch_twins():
    pytest.importorskip("torch")
    path = os.path.join(os.path.dirname(__file__), os.pardir, "bench", "torch_models.py")
    spec = importlib.util.spec_from_file_location("torch_models", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def batch(rng, name):
    return rng.standard_normal(INPUTS[name]).astype(np.float32), rng.integers(0, 10, INPUTS[name][0])


def train_pyneural(model, rng, name, steps=2):
    """A few SGD steps in training mode, so weights, running statistics and batch counts all move."""
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(steps):
        x, y = batch(rng, name)
        opt.zero_grad()
        F.cross_entropy(model(pn.Tensor(x)), pn.Tensor(y)).backward()
        opt.step()


def train_torch(model, rng, name, steps=2):
    import torch
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(steps):
        x, y = batch(rng, name)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(torch.tensor(x)), torch.tensor(y)).backward()
        opt.step()


def assert_same_outputs(ours, theirs, rng, name):
    import torch
    ours.eval()
    theirs.eval()
    x, _ = batch(rng, name)
    with torch.no_grad():
        expected = theirs(torch.tensor(x)).numpy()
    got = ours(pn.Tensor(x)).data
    assert rel_err(got, expected) < 1e-5


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet_small"])
def test_pyneural_weights_load_into_the_torch_twin(tmp_path, rng, name):
    import safetensors.torch
    pn.manual_seed(int(rng.integers(1 << 31)))
    ours = models.MODELS[name]()
    train_pyneural(ours, rng, name)
    path = pn.save_safetensors(ours, tmp_path / f"{name}.safetensors")
    theirs = torch_twins().MODELS[name]()
    theirs.load_state_dict(safetensors.torch.load_file(path))  # strict: every name, shape and dtype
    for key, value in theirs.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), ours.state_dict()[key], err_msg=key)
    if name == "resnet_small":
        assert int(theirs.stem[1].num_batches_tracked) == 2
    assert_same_outputs(ours, theirs, rng, name)


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet_small"])
def test_torch_twin_weights_load_into_pyneural(tmp_path, rng, name):
    torch = pytest.importorskip("torch")
    import safetensors.torch
    torch.manual_seed(int(rng.integers(1 << 31)))
    theirs = torch_twins().MODELS[name]()
    train_torch(theirs, rng, name)
    path = tmp_path / f"{name}.safetensors"
    safetensors.torch.save_file(theirs.state_dict(), path)
    ours = models.MODELS[name]()
    ours.load_state_dict(pn.load_safetensors(path))  # strict: every name and shape
    if name == "resnet_small":
        assert ours.stem[1].num_batches_tracked.data.shape == () and int(ours.stem[1].num_batches_tracked.data) == 2
    assert_same_outputs(ours, theirs, rng, name)


def test_round_trip_keeps_values_dtypes_shapes_and_metadata(tmp_path, rng):
    from safetensors import safe_open
    state = {"w": rng.standard_normal((3, 4)).astype(np.float32).T,  # not contiguous: written as its values
             "h": rng.standard_normal(5).astype(np.float16), "step": np.array(7, np.int64),
             "mask": rng.integers(0, 2, (2, 2)).astype(bool), "t": pn.tensor([1.0, 2.0], dtype=np.float64)}
    path = pn.save_safetensors(state, tmp_path / "s.safetensors", metadata={"run": "abc"})
    back = pn.load_safetensors(path)
    assert list(back) == sorted(state)
    for key, value in state.items():
        value = value.data if isinstance(value, pn.Tensor) else value
        assert back[key].dtype == value.dtype and back[key].shape == value.shape
        np.testing.assert_array_equal(back[key], value)
    with safe_open(path, framework="np") as f:
        assert f.metadata() == {"format": "pt", "run": "abc"}


def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    import safetensors.numpy
    path = pn.save_safetensors({"a": np.ones(3, np.float32)}, tmp_path / "w.safetensors")
    before = Path(path).read_bytes()

    class DiskFull:
        @staticmethod
        def save_file(tensors, filename, metadata=None):
            with open(filename, "wb") as f:
                f.write(safetensors.numpy.save(tensors, metadata=metadata)[:20])
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("pyneural.interop._safetensors_numpy", lambda: DiskFull)
    with pytest.raises(OSError, match="No space"):
        pn.save_safetensors({"a": np.zeros(3, np.float32)}, path)
    assert Path(path).read_bytes() == before and os.listdir(tmp_path) == ["w.safetensors"]


def test_bad_input_and_damaged_files(tmp_path):
    with pytest.raises(TypeError, match="names must be strings"):
        pn.save_safetensors({1: np.zeros(2)}, tmp_path / "x.safetensors")
    with pytest.raises(TypeError, match="'a' is a list"):
        pn.save_safetensors({"a": [1.0]}, tmp_path / "x.safetensors")
    with pytest.raises(TypeError, match="dtype complex128"):
        pn.save_safetensors({"a": np.zeros(2, complex)}, tmp_path / "x.safetensors")
    with pytest.raises(TypeError, match="metadata must map str to str"):
        pn.save_safetensors({"a": np.zeros(2)}, tmp_path / "x.safetensors", metadata={"epoch": 3})
    with pytest.raises(FileNotFoundError, match="directory"):
        pn.save_safetensors({"a": np.zeros(2)}, tmp_path / "nowhere" / "x.safetensors")
    with pytest.raises(FileNotFoundError, match="no file"):
        pn.load_safetensors(tmp_path / "missing.safetensors")
    path = pn.save_safetensors({"a": np.arange(100.0)}, tmp_path / "x.safetensors")
    Path(path).write_bytes(Path(path).read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        pn.load_safetensors(path)
    assert not any(name.startswith(".") for name in os.listdir(tmp_path))


@pytest.mark.cuda
def test_safetensors_from_and_to_the_device(tmp_path, cp, rng):
    model = models.resnet_small(widths=(4, 8, 8)).to("cuda")
    path = pn.save_safetensors(model, tmp_path / "resnet.safetensors")
    host = models.resnet_small(widths=(4, 8, 8))
    host.load_state_dict(pn.load_safetensors(path))
    on_device = dict(list(model.named_parameters()) + list(model.named_buffers()))
    for key, value in host.state_dict().items():
        np.testing.assert_array_equal(on_device[key].data.get(), value, err_msg=key)
    loaded = pn.load_safetensors(path, device="cuda")
    assert all(pn.backend.is_device_array(v) and np.array_equal(v.get(), on_device[k].data.get())
               for k, v in loaded.items())
    x = pn.Tensor(cp.asarray(rng.standard_normal((2, 3, 8, 8)).astype(np.float32)))
    assert rel_err(host.to("cuda").eval()(x).data.get(), model.eval()(x).data.get()) < 1e-6
