"""The digits split, synthetic benchmark images, and the IDX (MNIST) reader on files written here."""
import gzip
import struct

import numpy as np
import pytest

from pyneural.datasets import digits, load_mnist_idx, mnist, read_idx, synthetic_images


def write_idx(path, array, type_code=None, compress=False):
    codes = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}
    code = codes[array.dtype.type] if type_code is None else type_code
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    with open(path, "wb") as f:
        f.write(gzip.compress(payload) if compress else payload)
    return path


# ---- digits -----------------------------------------------------------------------------------

def test_digits_split():
    train, test = digits()
    assert (len(train), len(test)) == (1437, 360)
    x, y = train.arrays
    assert x.shape == (1437, 1, 8, 8) and x.dtype == np.float32
    assert y.dtype == np.int64 and set(np.unique(y)) == set(range(10))
    assert 0.0 <= x.min() and x.max() == 1.0
    # stratified: every class has 36 +- 1 test images
    counts = np.bincount(test.arrays[1], minlength=10)
    assert counts.sum() == 360 and counts.min() >= 35 and counts.max() <= 37
    # train and test are disjoint and together hold every image of the original set
    from sklearn.datasets import load_digits
    original = load_digits().images.reshape(-1, 64) / 16.0
    both = np.concatenate([x.reshape(-1, 64), test.arrays[0].reshape(-1, 64)]).astype(np.float64)
    assert sorted(map(bytes, both.round(6))) == sorted(map(bytes, original.round(6)))


def test_digits_split_is_fixed():
    a, b = digits(), digits()
    np.testing.assert_array_equal(a.test.arrays[0], b.test.arrays[0])
    np.testing.assert_array_equal(a.train.arrays[1], b.train.arrays[1])
    c = digits(split_seed=1)
    assert not np.array_equal(a.test.arrays[1], c.test.arrays[1])


def test_digits_standardized():
    train, test = digits(standardize=True)
    x = train.arrays[0]
    assert x.dtype == np.float32
    assert np.abs(x.mean(axis=0)).max() < 1e-4
    assert np.isfinite(test.arrays[0]).all()


# ---- synthetic images ---------------------------------------------------------------------------

def test_synthetic_images_shapes_and_reproducibility():
    ds = synthetic_images(50, shape=(3, 10, 9), num_classes=5, seed=1)
    x, y = ds.arrays
    assert x.shape == (50, 3, 10, 9) and x.dtype == np.float32
    assert y.dtype == np.int64 and np.bincount(y).tolist() == [10] * 5
    np.testing.assert_array_equal(x, synthetic_images(50, shape=(3, 10, 9), num_classes=5, seed=1).arrays[0])
    assert not np.array_equal(x, synthetic_images(50, shape=(3, 10, 9), num_classes=5, seed=2).arrays[0])


def test_synthetic_images_are_learnable():
    # Prototypes learned from one seed classify samples drawn with another: the classes are real.
    train = synthetic_images(500, shape=(3, 16, 16), seed=0)
    test = synthetic_images(200, shape=(3, 16, 16), seed=1)
    x, y = (a for a in train.arrays)
    means = np.stack([x[y == c].mean(axis=0).ravel() for c in range(10)])
    tx, ty = test.arrays
    predicted = np.argmax(tx.reshape(len(tx), -1) @ means.T, axis=1)
    assert (predicted == ty).mean() > 0.9


def test_synthetic_images_bad_input():
    with pytest.raises(ValueError, match="shape"):
        synthetic_images(10, shape=(32, 32))
    with pytest.raises(ValueError, match="num_classes"):
        synthetic_images(10, num_classes=1)


# ---- IDX files --------------------------------------------------------------------------------

@pytest.mark.parametrize("compress", [False, True])
def test_load_mnist_idx(tmp_path, rng, compress):
    images = rng.integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=5, dtype=np.uint8)
    ext = ".gz" if compress else ""
    ds = load_mnist_idx(write_idx(tmp_path / f"img{ext}", images, compress=compress),
                        write_idx(tmp_path / f"lbl{ext}", labels, compress=compress))
    x, y = ds.arrays
    assert x.shape == (5, 1, 4, 3) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0] * 255, images, atol=1e-4)
    assert y.dtype == np.int64 and y.tolist() == labels.tolist()


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float32, np.float64])
def test_read_idx_big_endian_types(tmp_path, rng, dtype):
    data = (rng.standard_normal((3, 2, 5)) * 100).astype(dtype)
    out = read_idx(write_idx(tmp_path / "a.idx", data))
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, data)


def test_mnist_finds_standard_names(tmp_path, rng):
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (4, 2, 2), dtype=np.uint8), compress=True)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(4, dtype=np.uint8))
    assert len(mnist(tmp_path, train=False)) == 4
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        mnist(tmp_path, train=True)


def test_idx_bad_magic(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="magic number 0x01020801"):
        read_idx(path)


def test_idx_unknown_type_code(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x00\x00\x07\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="magic number 0x00000701"):
        read_idx(path)


def test_idx_too_short_for_magic(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x00\x00")
    with pytest.raises(ValueError, match="too short"):
        read_idx(path)


def test_idx_zero_dimensions(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x00\x00\x08\x00")
    with pytest.raises(ValueError, match="0 dimensions"):
        read_idx(path)


def test_idx_truncated_header(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x05")
    with pytest.raises(ValueError, match="truncated.*header of 3 dimensions needs 16"):
        read_idx(path)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_truncated_data(tmp_path, compress):
    path = write_idx(tmp_path / "full", np.zeros((4, 5, 5), np.uint8))
    raw = path.read_bytes()[:-7]
    path.write_bytes(gzip.compress(raw) if compress else raw)
    with pytest.raises(ValueError, match=r"truncated: shape \(4, 5, 5\) of uint8 needs 100 data bytes, the file has 93"):
        read_idx(path)


def test_idx_trailing_bytes(tmp_path):
    path = write_idx(tmp_path / "long", np.zeros(6, np.uint8))
    path.write_bytes(path.read_bytes() + b"\x00\x00")
    with pytest.raises(ValueError, match="2 bytes after the data"):
        read_idx(path)


def test_idx_broken_gzip(tmp_path):
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x02ab")[:-6])
    with pytest.raises(ValueError, match="does not decompress"):
        read_idx(path)


def test_load_mnist_idx_rejects_mismatched_files(tmp_path):
    images = write_idx(tmp_path / "img", np.zeros((5, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="5 images .* but 4 labels"):
        load_mnist_idx(images, write_idx(tmp_path / "lbl", np.zeros(4, np.uint8)))
    with pytest.raises(ValueError, match=r"expected uint8 images \(N, H, W\)"):
        load_mnist_idx(write_idx(tmp_path / "flat", np.zeros((5, 4), np.uint8)), images)
    with pytest.raises(ValueError, match=r"expected uint8 labels \(N,\)"):
        load_mnist_idx(images, write_idx(tmp_path / "f32", np.zeros(5, np.float32)))
