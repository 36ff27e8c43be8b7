"""MNIST-style datasets from IDX files (the format of MNIST, Fashion-MNIST, EMNIST), plain or
gzip-compressed. Nothing is downloaded: point the reader at files you have.

IDX layout (big-endian): two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16,
0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions, one uint32 per dimension,
then the data in C order. The reader checks every part of that against the file size, so a
truncated download or a wrong file fails with a message instead of a garbled array.
"""
import gzip
import os
import zlib

import numpy as np

from ..data.dataset import TensorDataset

IDX_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
             0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path):
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"read_idx: {path} looks gzip-compressed but does not decompress: {e}") from e


def read_idx(path):
    """The array stored in the IDX file at ``path`` (native byte order)."""
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise ValueError(f"read_idx: {path} is {len(raw)} bytes long, too short for the 4-byte IDX magic number")
    zero, dtype_code, ndim = raw[0:2], raw[2], raw[3]
    if zero != b"\x00\x00" or dtype_code not in IDX_TYPES:
        raise ValueError(f"read_idx: {path} has magic number 0x{raw[:4].hex()}, not an IDX file "
                         f"(expected 0x0000 then a type code in "
                         f"{', '.join(f'0x{c:02x}' for c in IDX_TYPES)} then the number of dimensions)")
    if ndim == 0:
        raise ValueError(f"read_idx: {path} declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"read_idx: {path} is truncated: {len(raw)} bytes, but its header of {ndim} "
                         f"dimensions needs {header}")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_TYPES[dtype_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(raw) - header
    if got < expected:
        raise ValueError(f"read_idx: {path} is truncated: shape {shape} of {dtype.name} needs {expected} "
                         f"data bytes, the file has {got}")
    if got > expected:
        raise ValueError(f"read_idx: {path} has {got - expected} bytes after the data of shape {shape}; "
                         f"the header does not describe this file")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=True)


def read_mnist_idx(images_path, labels_path):
    """``(images uint8 (N, H, W), labels uint8 (N,))`` from a pair of MNIST-style IDX files,
    checked against each other."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"load_mnist_idx: {images_path} holds {images.dtype} of shape {images.shape}; "
                         f"expected uint8 images (N, H, W)")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(f"load_mnist_idx: {labels_path} holds {labels.dtype} of shape {labels.shape}; "
                         f"expected uint8 labels (N,)")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"load_mnist_idx: {images.shape[0]} images in {images_path} but "
                         f"{labels.shape[0]} labels in {labels_path}")
    return images, labels


def load_mnist_idx(images_path, labels_path):
    """A TensorDataset of images float32 ``(N, 1, H, W)`` scaled to [0, 1] and labels int64
    ``(N,)`` from an uint8 images file ``(N, H, W)`` and a uint8 labels file ``(N,)``."""
    images, labels = read_mnist_idx(images_path, labels_path)
    x = (images.astype(np.float32) / np.float32(255.0))[:, None, :, :]
    return TensorDataset(np.ascontiguousarray(x), labels.astype(np.int64))


MNIST_FILES = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _find(root, stem):
    """``root/stem`` or torchvision's ``root/MNIST/raw/stem``, plain or ``.gz``."""
    candidates = [os.path.join(folder, stem + ext) for folder in (root, os.path.join(root, "MNIST", "raw"))
                  for ext in ("", ".gz")]
    found = [c for c in candidates if os.path.isfile(c)]
    if not found:
        raise FileNotFoundError(f"mnist: none of {candidates} exists (pyneural does not download "
                                f"datasets; put the IDX files there)")
    return found[0]


def mnist(root, train=True, transform=None, target_transform=None):
    """MNIST (or Fashion-MNIST) from a directory holding the standard file names, ``.gz`` or not
    (directly, or in torchvision's ``MNIST/raw``). Without transforms: a TensorDataset of images
    float32 ``(N, 1, H, W)`` in [0, 1] and int64 labels, batched by whole-array gathers. With
    ``transform`` or ``target_transform``: an ``ImageDataset`` whose samples are uint8 images
    ``(H, W)`` (as torchvision's PIL images) and int labels, passed through them."""
    images_path, labels_path = (_find(root, stem) for stem in MNIST_FILES[bool(train)])
    if transform is None and target_transform is None:
        return load_mnist_idx(images_path, labels_path)
    from .images import ImageDataset
    images, labels = read_mnist_idx(images_path, labels_path)
    return ImageDataset(images, labels, transform, target_transform)
