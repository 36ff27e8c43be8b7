"""The names and behaviours added because a ported PyTorch example or a public-example op needed
them (examples/, tests/test_public_ops.py): each against a float64 reference (PyTorch where it is
installed, numpy otherwise), with a float64 finite-difference gradient check where differentiable,
and its bad inputs refused with a clear error.

sin, cos, remainder (%), floor_divide (//), prod, norm, triu/tril, narrow, unfold, pixel_shuffle/
pixel_unshuffle, instance_norm and InstanceNorm2d, the padding layers, one_hot, scatter_/
scatter_add_, new_tensor/new_zeros/..., type_as, where with two numbers, exp/log/sqrt of integers,
Tensor.__format__, pn.Generator, Subset/random_split, clip_grad_value_ and nn.utils,
pn.load(map_location=, weights_only=), torchvision-style MNIST/FashionMNIST/CIFAR10, and the import
aliases pyneural.nn.functional and pyneural.utils.data.
"""
import os
import pickle
import struct

import numpy as np
import pytest

import pyneural as pn
import pyneural.nn.functional as F


def t64(a, **kw):
    """A tensor of ``a`` keeping its dtype (pn.tensor makes float data float32 unless told)."""
    return pn.tensor(a, dtype=np.asarray(a).dtype, **kw)


def leaf(a):
    return t64(a, requires_grad=True)


def torch_or_skip():
    return pytest.importorskip("torch")


def compare_with_torch(fn_pn, fn_torch, arrays, atol=1e-10, rtol=1e-10):
    """Forward and backward of the same expression in float64 on both libraries."""
    torch = torch_or_skip()
    ours = [leaf(a) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    y, yt = fn_pn(*ours), fn_torch(*theirs)
    np.testing.assert_allclose(y.detach().numpy(), yt.detach().numpy(), rtol=rtol, atol=atol)
    assert str(y.dtype) == str(yt.dtype).replace("torch.", "")
    weights = np.random.default_rng(0).normal(size=tuple(yt.shape))
    (y * t64(weights)).sum().backward()
    (yt * torch.tensor(weights)).sum().backward()
    for a, b in zip(ours, theirs):
        # no gradient (None) and a zero gradient are the same answer (norm with p=0, floor_divide)
        ours_grad = np.zeros(a.shape) if a.grad is None else a.grad.numpy()
        np.testing.assert_allclose(ours_grad, 0 if b.grad is None else b.grad.numpy(), rtol=rtol, atol=atol)


# ---- elementwise -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["sin", "cos"])
def test_sin_cos(rng, name):
    a = rng.normal(size=(3, 4)) * 3
    np.testing.assert_allclose(getattr(pn, name)(t64(a)).numpy(), getattr(np, name)(a), rtol=1e-15)
    assert pn.gradcheck(lambda x: getattr(pn, name)(x), [leaf(a)])
    assert getattr(leaf(a), name)().requires_grad
    torch = torch_or_skip()
    compare_with_torch(getattr(pn, name), getattr(torch, name), [a])


@pytest.mark.parametrize("name", ["exp", "log", "sqrt", "sin", "cos"])
def test_float_math_of_integers_is_float32(name):
    torch = torch_or_skip()
    values = [1, 2, 3]
    for dtype in (pn.int64, pn.int32, pn.bool):
        ours = getattr(pn, name)(pn.tensor(values, dtype=dtype))
        theirs = getattr(torch, name)(torch.tensor(values, dtype=getattr(torch, np.dtype(dtype).name
                                                                      if dtype is not pn.bool else "bool")))
        assert ours.dtype == np.float32 and theirs.dtype == torch.float32
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6)


def test_remainder_and_floor_divide_against_python(rng):
    a = rng.integers(-9, 10, (4, 5))
    b = rng.choice([-4, -3, -1, 2, 5], (4, 5))
    x, y = t64(a), t64(b)
    np.testing.assert_array_equal((x // y).numpy(), [[i // j for i, j in zip(r, s)] for r, s in zip(a, b)])
    np.testing.assert_array_equal((x % y).numpy(), [[i % j for i, j in zip(r, s)] for r, s in zip(a, b)])
    assert (x // 2).dtype == np.int64 and (7 // t64(2)).item() == 3 and (-7 % t64(3)).item() == 2
    assert (x % 2.5).dtype == np.float32  # PyTorch's promotion: an int tensor with a float number
    assert x.floor_divide(3).tolist() == (a // 3).tolist() and x.remainder(3).tolist() == (a % 3).tolist()


def test_remainder_gradients(rng):
    a, b = rng.normal(size=(3, 4)) * 4, rng.uniform(0.7, 2.0, (3, 4)) * rng.choice([-1, 1], (3, 4))
    assert pn.gradcheck(lambda x, y: x % y, [leaf(a), leaf(b)])
    assert pn.gradcheck(lambda x: x % 1.5, [leaf(a)])
    torch = torch_or_skip()
    compare_with_torch(lambda x, y: x % y, torch.remainder, [a, b])
    compare_with_torch(lambda x, y: (x // y) * y, lambda x, y: (x // y).detach() * y, [a, b])


def test_integer_division_by_zero_is_refused():
    with pytest.raises(ZeroDivisionError, match="floor_divide"):
        t64([1, 2]) // t64([1, 0])
    with pytest.raises(ZeroDivisionError, match="remainder"):
        t64([1, 2]) % 0
    with pytest.raises(TypeError, match="Tensor"):
        pn.functions.arithmetic.floor_divide(3, 2)


@pytest.mark.parametrize("diagonal", [-2, -1, 0, 1, 3])
def test_triu_tril(rng, diagonal):
    a = rng.normal(size=(2, 4, 5))
    np.testing.assert_array_equal(pn.triu(t64(a), diagonal).numpy(), np.triu(a, diagonal))
    np.testing.assert_array_equal(t64(a).tril(diagonal).numpy(), np.tril(a, diagonal))
    assert pn.gradcheck(lambda x: pn.triu(x, diagonal), [leaf(a)])
    assert pn.gradcheck(lambda x: pn.tril(x, diagonal), [leaf(a)])
    torch = torch_or_skip()
    compare_with_torch(lambda x: pn.triu(x, diagonal) + pn.tril(x, diagonal) * 2,
                       lambda x: torch.triu(x, diagonal) + torch.tril(x, diagonal) * 2, [a])
    assert pn.triu(pn.ones(3, 3, dtype=pn.int64)).dtype == np.int64
    with pytest.raises(RuntimeError, match="at least 2 dimensions"):
        pn.triu(pn.ones(3))


def test_where_with_two_numbers():
    torch = torch_or_skip()
    x = np.array([0.2, 0.7, 0.9])
    for a, b in ((1, 0), (1.0, 0), (True, False)):
        ours, theirs = pn.where(t64(x) > 0.5, a, b), torch.where(torch.tensor(x) > 0.5, a, b)
        assert str(ours.dtype) == str(theirs.dtype).replace("torch.", "")
        assert ours.tolist() == theirs.tolist()
    with pytest.raises(TypeError, match="Tensor condition"):
        pn.where(np.array([True]), 1, 0)


# ---- reductions ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw", [{}, {"dim": 1}, {"dim": 0, "keepdim": True}, {"dim": -1}])
def test_prod_with_zeros(rng, kw):
    a = rng.normal(size=(3, 4))
    a[1, 2] = 0.0
    a[0, :2] = 0.0  # two zeros in a row: every gradient of that row is zero
    np.testing.assert_allclose(pn.prod(t64(a), **kw).numpy(), np.prod(a, axis=kw.get("dim"),
                                                                             keepdims=kw.get("keepdim", False)))
    assert pn.gradcheck(lambda x: x.prod(**kw), [leaf(a)])
    torch = torch_or_skip()
    compare_with_torch(lambda x: x.prod(**kw), lambda x: x.prod(**kw), [a])


def test_prod_dtypes_and_errors():
    assert pn.prod(pn.tensor([1, 2, 3], dtype=pn.int32)).dtype == np.int64
    assert pn.prod(t64([True, True])).item() == 1
    assert pn.prod(pn.ones(2, 0), dim=1).tolist() == [1.0, 1.0]
    with pytest.raises(TypeError, match="dim must be an int"):
        pn.prod(pn.ones(2, 2), dim=(0, 1))
    with pytest.raises(IndexError, match="out of range"):
        pn.prod(pn.ones(2, 2), dim=2)


@pytest.mark.parametrize("p", [2, 1, 3, 0.5, float("inf"), float("-inf"), 0, "fro"])
@pytest.mark.parametrize("kw", [{}, {"dim": 1}, {"dim": (0, 1), "keepdim": True}])
def test_norm(rng, p, kw):
    a = rng.normal(size=(3, 4))
    a[2] = 0.0  # a zero row: its gradient is zero, not NaN
    a[0, 1] = 0.0
    torch = torch_or_skip()
    compare_with_torch(lambda x: x.norm(p, **kw), lambda x: x.norm(p, **kw), [a])


def test_norm_gradcheck_and_errors(rng):
    a = rng.normal(size=(3, 4))
    for p in (2, 1, 3, 0.5, float("inf")):
        assert pn.gradcheck(lambda x: pn.norm(x, p, dim=1), [leaf(a)])
    with pytest.raises(ValueError, match="nuc"):
        pn.norm(pn.ones(2, 2), "nuc")
    with pytest.raises(TypeError, match="floating point"):
        pn.norm(t64([1, 2]))


# ---- shape ---------------------------------------------------------------------------------------

def test_narrow(rng):
    a = rng.normal(size=(5, 6))
    np.testing.assert_array_equal(t64(a).narrow(1, 2, 3).numpy(), a[:, 2:5])
    np.testing.assert_array_equal(pn.narrow(t64(a), 0, -2, 2).numpy(), a[3:5])
    assert pn.gradcheck(lambda x: x.narrow(0, 1, 3), [leaf(a)])
    with pytest.raises(IndexError, match="exceeds dimension size"):
        t64(a).narrow(1, 4, 3)


@pytest.mark.parametrize("dim, size, step", [(0, 2, 1), (1, 3, 2), (-1, 6, 1), (2, 1, 3), (1, 4, 4)])
def test_unfold(rng, dim, size, step):
    a = rng.normal(size=(4, 5, 6))
    torch = torch_or_skip()
    np.testing.assert_array_equal(t64(a).unfold(dim, size, step).numpy(),
                                  torch.tensor(a).unfold(dim, size, step).numpy())
    assert pn.gradcheck(lambda x: x.unfold(dim, size, step), [leaf(a)])  # overlapping windows add up
    compare_with_torch(lambda x: x.unfold(dim, size, step), lambda x: x.unfold(dim, size, step), [a])


def test_unfold_errors():
    with pytest.raises(RuntimeError, match="maximum size"):
        pn.ones(3, 4).unfold(1, 5, 1)
    with pytest.raises(RuntimeError, match="step"):
        pn.ones(3, 4).unfold(1, 2, 0)


@pytest.mark.parametrize("shape, r", [((2, 8, 3, 2), 2), ((1, 9, 2, 2), 3), ((12, 1, 1), 2), ((2, 3, 4, 2, 2), 1)])
def test_pixel_shuffle_and_unshuffle(rng, shape, r):
    a = rng.normal(size=shape)
    torch = torch_or_skip()
    compare_with_torch(lambda x: F.pixel_shuffle(x, r), lambda x: torch.nn.functional.pixel_shuffle(x, r), [a])
    shuffled = pn.nn.PixelShuffle(r)(t64(a))
    np.testing.assert_array_equal(pn.nn.PixelUnshuffle(r)(shuffled).numpy(), a)
    compare_with_torch(lambda x: F.pixel_unshuffle(x, r), lambda x: torch.nn.functional.pixel_unshuffle(x, r),
                       [shuffled.numpy()])
    assert pn.gradcheck(lambda x: F.pixel_shuffle(x, r), [leaf(a)])


def test_pixel_shuffle_errors():
    with pytest.raises(RuntimeError, match="divisible by the square"):
        F.pixel_shuffle(pn.ones(1, 6, 2, 2), 2)
    with pytest.raises(RuntimeError, match="divisible by"):
        F.pixel_unshuffle(pn.ones(1, 1, 3, 4), 2)
    with pytest.raises(ValueError, match="positive int"):
        F.pixel_shuffle(pn.ones(1, 4, 2, 2), 0)
    with pytest.raises(RuntimeError, match="at least 3 dimensions"):
        F.pixel_shuffle(pn.ones(4, 2), 2)


# ---- layers --------------------------------------------------------------------------------------

@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 4, 5)])
def test_instance_norm(rng, affine, shape):
    torch = torch_or_skip()
    a = rng.normal(size=shape) * 2 + 1
    ours = pn.nn.InstanceNorm2d(3, affine=affine, dtype=np.float64)
    theirs = torch.nn.InstanceNorm2d(3, affine=affine).double()
    if affine:
        w, b = rng.normal(size=3), rng.normal(size=3)
        ours.weight.data[...], ours.bias.data[...] = w, b
        with torch.no_grad():
            theirs.weight.copy_(torch.tensor(w))
            theirs.bias.copy_(torch.tensor(b))
    compare_with_torch(ours, theirs, [a], atol=1e-9, rtol=1e-9)
    assert pn.gradcheck(lambda x: ours(x), [leaf(a)])
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]


def test_instance_norm_errors():
    with pytest.raises(ValueError, match="track_running_stats"):
        pn.nn.InstanceNorm2d(3, track_running_stats=True)
    with pytest.raises(ValueError, match=r"expected input \(N, 3, H, W\)"):
        pn.nn.InstanceNorm2d(3)(pn.ones(2, 4, 3, 3))
    with pytest.raises(ValueError, match="running statistics"):
        F.instance_norm(pn.ones(2, 3, 2, 2), running_mean=pn.zeros(3), running_var=pn.ones(3))


@pytest.mark.parametrize("layer, args", [("ReflectionPad2d", (1,)), ("ReplicationPad2d", ((1, 2, 0, 3),)),
                                         ("ZeroPad2d", ((2, 0, 1, 1),)), ("ConstantPad2d", (1, 0.5))])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 4, 5)])
def test_padding_layers(rng, layer, args, shape):
    torch = torch_or_skip()
    a = rng.normal(size=shape)
    compare_with_torch(getattr(pn.nn, layer)(*args), getattr(torch.nn, layer)(*args), [a])
    assert pn.gradcheck(getattr(pn.nn, layer)(*args), [leaf(a)])


def test_padding_layer_errors():
    with pytest.raises(ValueError, match="left, right, top, bottom"):
        pn.nn.ReflectionPad2d((1, 2))
    with pytest.raises(ValueError, match=r"expected input \(N, C, H, W\)"):
        pn.nn.ZeroPad2d(1)(pn.ones(3, 3))


# ---- indexing and in-place ---------------------------------------------------------------------

def test_one_hot():
    torch = torch_or_skip()
    target = [[0, 3], [2, 1]]
    assert F.one_hot(t64(target)).tolist() == torch.nn.functional.one_hot(torch.tensor(target)).tolist()
    ours = F.one_hot(t64(target), num_classes=6)
    assert ours.dtype == np.int64 and ours.shape == (2, 2, 6)
    assert ours.tolist() == torch.nn.functional.one_hot(torch.tensor(target), num_classes=6).tolist()
    with pytest.raises(RuntimeError, match="in \\[0, 3\\)"):
        F.one_hot(t64([0, 3]), num_classes=3)
    with pytest.raises(RuntimeError, match="int64"):
        F.one_hot(pn.tensor([0, 1], dtype=pn.int32))
    with pytest.raises(RuntimeError, match="empty"):
        F.one_hot(pn.tensor([], dtype=pn.int64))


def test_scatter_in_place(rng):
    torch = torch_or_skip()
    index = rng.integers(0, 5, (4, 1))
    ours = pn.zeros(4, 5).scatter_(1, t64(index), 1.0)
    theirs = torch.zeros(4, 5).scatter_(1, torch.tensor(index), 1.0)
    assert ours.tolist() == theirs.tolist()
    src = rng.normal(size=(4, 2))
    idx = rng.integers(0, 5, (4, 2))
    base = rng.normal(size=(4, 5))
    compare_with_torch(lambda b, s: (b * 1).scatter_add_(1, t64(idx), s),
                       lambda b, s: (b * 1).scatter_add_(1, torch.tensor(idx), s), [base, src])
    compare_with_torch(lambda b, s: (b * 1).scatter_(1, t64(idx[:, :1]), s[:, :1]),
                       lambda b, s: (b * 1).scatter_(1, torch.tensor(idx[:, :1]), s[:, :1]), [base, src])
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
        leaf(base).scatter_(1, t64(idx), 0.0)


def test_new_tensors_and_type_as():
    x = pn.ones(2, 2, dtype=pn.float64)
    made = [x.new_tensor([1, 2]), x.new_zeros(3), x.new_ones((2, 1)), x.new_full((2,), 7), x.new_empty(1, 2)]
    assert all(t.dtype == np.float64 and t.device == x.device for t in made)
    assert made[0].tolist() == [1.0, 2.0] and made[3].tolist() == [7.0, 7.0] and made[2].shape == (2, 1)
    assert x.new_zeros(2, dtype=pn.int64).dtype == np.int64 and x.new_ones(1, requires_grad=True).requires_grad
    assert t64([1, 2]).type_as(x).dtype == np.float64


def test_tensor_format():
    assert f"{t64(2.0 / 3):.4f}" == "0.6667" and "{:+.2f}".format(t64([1.5])[0]) == "+1.50"
    assert f"{t64(3)}" == "3" and f"{t64(7):4d}" == "   7"
    with pytest.raises(TypeError):
        f"{pn.ones(2):.2f}"


# ---- data, random, optim ---------------------------------------------------------------------------

def test_generator():
    g = pn.Generator().manual_seed(42)
    assert isinstance(g, pn.Generator) and g.initial_seed() == 42
    state = g.get_state()
    first = pn.random.numpy_generator(g, "test").integers(0, 1000, 5)
    g.set_state(state)
    assert (pn.random.numpy_generator(g, "test").integers(0, 1000, 5) == first).all()
    before = pn.get_rng_state()
    pn.Generator().manual_seed(1)
    assert pn.get_rng_state() == before  # its own stream: the global one does not move
    with pytest.raises(TypeError, match="seed must be an int"):
        g.manual_seed(1.5)
    with pytest.raises(RuntimeError, match="only CPU"):
        pn.Generator("cuda")


def test_random_split_and_subset():
    data = pn.data.TensorDataset(np.arange(10), np.arange(10) * 2)
    a, b = pn.data.random_split(data, [0.7, 0.3], generator=pn.Generator().manual_seed(0))
    assert (len(a), len(b)) == (7, 3) and sorted(a.indices + b.indices) == list(range(10))
    again = pn.utils.data.random_split(data, [7, 3], generator=pn.Generator().manual_seed(0))
    assert again[0].indices == a.indices
    assert [len(s) for s in pn.data.random_split(data, [0.34, 0.33, 0.33])] == [4, 3, 3]  # PyTorch's remainder rule
    sample = a[0]
    assert int(sample[1]) == 2 * int(sample[0]) and a[[0, 1]][1][0] == data[a.indices[1]][0]
    batches = list(pn.data.DataLoader(a, batch_size=4))
    assert [tuple(x.shape) for x, _ in batches] == [(4,), (3,)]
    with pytest.raises(ValueError, match="sum of input lengths"):
        pn.data.random_split(data, [3, 3])
    with pytest.raises(ValueError, match="sum to 1"):
        pn.data.random_split(data, [0.5, 0.2])
    with pytest.raises(TypeError, match="generator"):
        pn.data.random_split(data, [5, 5], generator=3)


def test_clip_grad_value_and_nn_utils():
    w = leaf(np.array([1.0, -2.0, 3.0]))
    (w * t64([0.5, -4.0, 9.0])).sum().backward()
    pn.nn.utils.clip_grad_value_([w], 1.0)
    assert w.grad.tolist() == [0.5, -1.0, 1.0]
    assert pn.nn.utils.clip_grad_norm_ is pn.optim.clip_grad_norm_
    with pytest.raises(ValueError, match="clip_value"):
        pn.optim.clip_grad_value_([w], -1)


def test_load_map_location_and_weights_only(tmp_path):
    path = tmp_path / "m.pt"
    pn.save({"w": pn.ones(2), "step": 3}, path)
    for kwargs in ({}, {"weights_only": True}, {"weights_only": False}, {"map_location": "cpu"},
                   {"map_location": pn.device("cpu")}):
        loaded = pn.load(path, **kwargs)
        assert loaded["step"] == 3 and loaded["w"].tolist() == [1.0, 1.0]
    with pytest.raises(TypeError, match="map_location"):
        pn.load(path, map_location=lambda storage, loc: storage)


def test_import_aliases():
    import importlib
    assert importlib.import_module("pyneural.nn.functional") is pn.functional
    assert importlib.import_module("pyneural.utils.data") is pn.data
    from pyneural.utils.data import DataLoader, Dataset
    assert DataLoader is pn.data.DataLoader and Dataset is pn.data.Dataset


# ---- torchvision-style datasets ------------------------------------------------------------------

def _write_idx(path, array):
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.tobytes())


def test_mnist_class(tmp_path, rng):
    raw = tmp_path / "MNIST" / "raw"
    os.makedirs(raw)
    images = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5, 9], np.uint8)
    for split in ("train", "t10k"):
        _write_idx(raw / f"{split}-images-idx3-ubyte", images)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
    transform = pn.data.transforms.Compose([pn.data.transforms.ToTensor(),
                                            pn.data.transforms.Normalize((0.1307,), (0.3081,))])
    ds = pn.datasets.MNIST(tmp_path, train=False, download=True, transform=transform)
    image, target = ds[2]
    assert len(ds) == 6 and target == 4 and image.shape == (1, 28, 28) and image.dtype == np.float32
    np.testing.assert_allclose(image.numpy()[0], (images[2] / np.float32(255) - 0.1307) / 0.3081, rtol=1e-5)
    assert ds.data.dtype == np.uint8 and ds.data.shape == (6, 28, 28) and ds.targets.tolist() == labels.tolist()
    assert ds.class_to_idx["4 - four"] == 4 and "Split: Test" in repr(ds)
    raw_image, _ = pn.datasets.MNIST(tmp_path)[0]
    assert isinstance(raw_image, np.ndarray) and raw_image.shape == (28, 28)
    with pytest.raises(RuntimeError, match="downloads nothing"):
        pn.datasets.MNIST(tmp_path / "elsewhere", download=True)
    with pytest.raises(FileNotFoundError, match="does not download"):
        pn.datasets.FashionMNIST(tmp_path / "elsewhere")


def test_cifar10_class(tmp_path, rng):
    folder = tmp_path / "cifar-10-batches-py"
    os.makedirs(folder)
    data = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data[name] = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data[name], "labels": [7, 2], "batch_label": name}, f, protocol=2)
    train = pn.datasets.CIFAR10(tmp_path, train=True, download=True)
    assert len(train) == 10 and train.targets == [7, 2] * 5 and isinstance(train.targets, list)
    image, target = train[1]
    assert image.shape == (32, 32, 3) and target == 2  # a PIL image's layout before ToTensor
    np.testing.assert_array_equal(image, data["data_batch_1"][1].reshape(3, 32, 32).transpose(1, 2, 0))
    test = pn.datasets.CIFAR10(tmp_path, train=False, transform=pn.data.transforms.ToTensor())
    assert test[0][0].shape == (3, 32, 32) and test.classes[7] == "horse" and test.data.shape == (2, 32, 32, 3)
    os.remove(folder / "data_batch_3")
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        pn.datasets.CIFAR10(tmp_path)
    with pytest.raises(RuntimeError, match="downloads nothing"):
        pn.datasets.CIFAR10(tmp_path, download=True)
