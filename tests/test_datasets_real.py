"""MNIST and CIFAR-10 readers on small files written here in the real formats (IDX, plain and gzip;
CIFAR's Python-2 pickles), their per-sample transform path, and ``pyneural train --data``."""
import gzip
import io
import os
import pickle
import re
import struct

import numpy as np
import pytest

from pyneural import cli
from pyneural.data import DataLoader
from pyneural.data import transforms as T
from pyneural.datasets import ImageDataset, cifar10, mnist, read_cifar_batch


def write_idx(path, array, compress=False):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    with open(path, "wb") as f:
        f.write(gzip.compress(payload) if compress else payload)


def write_mnist(root, rng, n_train=40, n_test=20, size=28, compress=False):
    """MNIST's four files under their standard names; returns the arrays written."""
    os.makedirs(root, exist_ok=True)
    ext = ".gz" if compress else ""
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(os.path.join(root, f"{split}-images-idx3-ubyte{ext}"), images, compress)
        write_idx(os.path.join(root, f"{split}-labels-idx1-ubyte{ext}"), labels, compress)
        arrays[split] = images, labels
    return arrays


class Python2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` opcodes (what the real CIFAR files hold) instead of Python
    3's ``_codecs.encode`` calls."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def write_cifar_batch(path, data, labels):
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump({b"batch_label": b"training batch 1 of 5", b"labels": list(labels),
                                             b"data": data, b"filenames": [b"img.png"] * len(labels)})
    # numpy 1 (which pickled the real files) names the reconstruction numpy.core.multiarray
    with open(path, "wb") as f:
        f.write(buffer.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))


def write_cifar(root, rng, per_batch=6, n_test=8):
    """cifar-10-batches-py with five data batches and a test batch; returns (train, test) arrays."""
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    parts = []
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        write_cifar_batch(os.path.join(folder, name), data, labels)
        parts.append((data, np.array(labels)))
    train = (np.concatenate([p[0] for p in parts[:5]]), np.concatenate([p[1] for p in parts[:5]]))
    return train, parts[5]


def rgb_planes_to_chw(row):
    """One CIFAR row (1024 red, 1024 green, 1024 blue values, each plane row-major) -> (3, 32, 32)."""
    out = np.empty((3, 32, 32), np.uint8)
    for c in range(3):
        for y in range(32):
            out[c, y] = row[c * 1024 + y * 32:c * 1024 + (y + 1) * 32]
    return out


# ---- MNIST --------------------------------------------------------------------------------------

@pytest.mark.parametrize("compress", [False, True])
def test_mnist_reads_the_idx_files(tmp_path, rng, compress):
    arrays = write_mnist(tmp_path, rng, compress=compress)
    train, test = mnist(tmp_path), mnist(tmp_path, train=False)
    assert (len(train), len(test)) == (40, 20)
    x, y = train.arrays
    assert x.shape == (40, 1, 28, 28) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(x[:, 0].astype(np.float64), arrays["train"][0] / 255.0, rtol=1e-6)
    assert y.tolist() == arrays["train"][1].tolist()
    np.testing.assert_array_equal(np.rint(test.arrays[0][:, 0] * 255), arrays["t10k"][0])


def test_mnist_in_torchvision_layout_with_transforms(tmp_path, rng):
    arrays = write_mnist(tmp_path / "MNIST" / "raw", rng, compress=True)
    ds = mnist(tmp_path, transform=T.Compose([T.ToTensor(), T.Normalize((0.1307,), (0.3081,))]),
               target_transform=lambda y: y + 100)
    assert isinstance(ds, ImageDataset) and len(ds) == 40
    image, target = ds[3]
    assert image.shape == (1, 28, 28) and target == 100 + 3
    np.testing.assert_allclose(image.data[0], (arrays["train"][0][3] / 255.0 - 0.1307) / 0.3081, rtol=1e-5, atol=1e-5)
    images, targets = next(iter(DataLoader(ds, batch_size=8, shuffle=True, seed=0, num_workers=2)))
    assert images.shape == (8, 1, 28, 28) and targets.dtype == np.int64 and targets.data.min() >= 100


# ---- CIFAR-10 -----------------------------------------------------------------------------------

def test_cifar10_reads_python2_batches(tmp_path, rng):
    (train_data, train_labels), (test_data, test_labels) = write_cifar(tmp_path, rng)
    train = cifar10(tmp_path)                                              # the parent folder
    test = cifar10(tmp_path / "cifar-10-batches-py", train=False)          # or the batches folder itself
    assert (len(train), len(test)) == (30, 8)
    x, y = train.arrays
    assert x.shape == (30, 3, 32, 32) and x.dtype == np.float32 and y.dtype == np.int64
    for i in (0, 7, 29):
        np.testing.assert_array_equal(np.rint(x[i] * 255).astype(np.uint8), rgb_planes_to_chw(train_data[i]))
    assert y.tolist() == train_labels.tolist() and test.arrays[1].tolist() == test_labels.tolist()
    images, labels = read_cifar_batch(tmp_path / "cifar-10-batches-py" / "test_batch")
    assert images.dtype == np.uint8 and images.shape == (8, 3, 32, 32)


def test_cifar10_with_transforms_hands_hwc_images(tmp_path, rng):
    (train_data, _), _ = write_cifar(tmp_path, rng)
    seen = []
    ds = cifar10(tmp_path, transform=T.Compose([T.Lambda(lambda img: seen.append(img) or img), T.ToTensor()]))
    image, label = ds[4]
    assert seen[0].shape == (32, 32, 3) and seen[0].dtype == np.uint8
    np.testing.assert_array_equal(seen[0].transpose(2, 0, 1), rgb_planes_to_chw(train_data[4]))
    assert image.shape == (3, 32, 32) and isinstance(label, int)


def test_cifar10_refuses_missing_wrong_and_malicious_files(tmp_path, rng):
    with pytest.raises(FileNotFoundError, match="does not download"):
        cifar10(tmp_path)
    write_cifar(tmp_path, rng, per_batch=2, n_test=2)
    folder = tmp_path / "cifar-10-batches-py"
    os.remove(folder / "data_batch_3")
    with pytest.raises(FileNotFoundError, match="missing .*data_batch_3"):
        cifar10(tmp_path)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((2, 3072), np.uint8), "fine_labels": [1, 2]}, f, protocol=2)
    with pytest.raises(ValueError, match="fine_labels"):
        cifar10(tmp_path, train=False)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((2, 100), np.uint8), "labels": [1, 2]}, f, protocol=2)
    with pytest.raises(ValueError, match=r"shape \(2, 100\); expected uint8 \(N, 3072\)"):
        cifar10(tmp_path, train=False)
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return os.mkdir, (str(marker),)

    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": Exploit(), "labels": [1]}, f, protocol=2)
    with pytest.raises(ValueError, match=r"refers to \w+\.mkdir.*not loaded"):
        cifar10(tmp_path, train=False)
    assert not marker.exists()


# ---- pyneural train --data ----------------------------------------------------------------------

def test_train_on_mnist_files(tmp_path, rng, capsys):
    write_mnist(tmp_path, rng, n_train=48, n_test=16, compress=True)
    assert cli.main(["train", "--data", f"mnist:{tmp_path}", "--model", "mlp", "--epochs", "1", "--batch-size", "16",
                     "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "training mlp on mnist (48 train / 16 test images)" in out
    assert re.search(r"epoch   1/1 .* test acc", out) and "final test accuracy" in out


def test_train_resnet_on_cifar10_files(tmp_path, rng, capsys):
    write_cifar(tmp_path, rng, per_batch=4, n_test=4)
    assert cli.main(["train", "--data", f"cifar10:{tmp_path}", "--model", "resnet", "--epochs", "1", "--batch-size",
                     "10", "--augment", "--no-progress"]) == 0
    assert "training resnet on cifar10 (20 train / 4 test images)" in capsys.readouterr().out


def test_train_data_option_builds_models_for_the_data_shape(tmp_path, rng):
    import pyneural as pn
    from pyneural.commands.train import build
    from pyneural.data.augment import Compose
    write_cifar(tmp_path, rng, per_batch=2, n_test=2)
    parser = cli.build_parser()
    for model in ("mlp", "cnn", "resnet"):
        args = parser.parse_args(["train", "--data", f"cifar10:{tmp_path}", "--model", model, "--augment"])
        net, _, _, train_loader, _ = build(args)
        assert net(pn.randn(2, 3, 32, 32)).shape == (2, 10)
        assert isinstance(train_loader.transform, Compose)
    assert parser.parse_args(["train"]).data == ("digits", None)


def test_train_data_option_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--data", "imagenet:/x"])
    assert exc.value.code == 2 and "expected digits, mnist:DIR or cifar10:DIR" in capsys.readouterr().err
    with pytest.raises(SystemExit, match=r"--data mnist:.*none of .* exists"):
        cli.main(["train", "--data", f"mnist:{tmp_path}", "--epochs", "1", "--no-progress"])
