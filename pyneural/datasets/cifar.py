"""CIFAR-10 from its "python version" files (``cifar-10-batches-py``: ``data_batch_1`` .. ``5``,
``test_batch``). Nothing is downloaded: point the reader at the extracted folder.

Each file is a pickled dict: ``data``, a uint8 array ``(10000, 3072)`` holding each image as its
red, green and blue 32x32 planes in row-major order; ``labels``, a list of ints in 0..9; plus
``batch_label`` and ``filenames``. The files were written by Python 2, so they are read with
``encoding="latin1"`` and their keys may come back as ``str`` or ``bytes``.

A pickle can run arbitrary code when loaded. These files need only dicts, lists, strings, ints
and numpy arrays, so the unpickler refuses every global except numpy's array (and scalar)
reconstruction and string encoding: a tampered file fails with a message instead of executing
anything.
"""
import os
import pickle

import numpy as np

from ..data.dataset import TensorDataset

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
FOLDER = "cifar-10-batches-py"
IMAGE_SHAPE = (3, 32, 32)


def _array_globals():
    """The globals a CIFAR batch may name: numpy's array and scalar reconstruction (spelled
``numpy.core`` by numpy 1, ``numpy._core`` by numpy 2), and bytes encoding."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    import codecs
    # codecs.encode: how Python 3 writes bytes into a protocol-2 pickle (a file saved again by Python 3)
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): codecs.encode}
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar  # numpy scalars, e.g. labels
    return allowed


class _BatchUnpickler(pickle.Unpickler):
    def __init__(self, file):
        super().__init__(file, encoding="latin1")
        self._allowed = _array_globals()

    def find_class(self, module, name):
        allowed = self._allowed.get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, but a CIFAR batch holds only arrays, "
                                         f"lists and strings, so it is not loaded (a pickle can run code)")
        return allowed


def read_cifar_batch(path):
    """``(images uint8 (N, 3, 32, 32), labels int64 (N,))`` from one CIFAR-10 python batch file."""
    with open(path, "rb") as f:
        try:
            batch = _BatchUnpickler(f).load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
            raise ValueError(f"cifar10: {path} is not a readable CIFAR-10 python batch: {e}") from e
    if not isinstance(batch, dict):
        raise ValueError(f"cifar10: {path} holds a {type(batch).__name__}, expected the dict of a CIFAR-10 batch")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    missing = {"data", "labels"} - set(batch)
    if missing:
        raise ValueError(f"cifar10: {path} has no {sorted(missing)} (keys: {sorted(batch)}); "
                         f"is it a CIFAR-100 file (fine_labels)?")
    data, labels = batch["data"], np.asarray(batch["labels"])
    per_image = int(np.prod(IMAGE_SHAPE))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != per_image:
        shape = getattr(data, "shape", None)
        raise ValueError(f"cifar10: {path}: data is {type(data).__name__} {getattr(data, 'dtype', '')} of shape "
                         f"{shape}; expected uint8 (N, {per_image})")
    if labels.shape != (data.shape[0],) or labels.dtype.kind not in "iu":
        raise ValueError(f"cifar10: {path}: {data.shape[0]} images but labels of shape {labels.shape} "
                         f"and dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"cifar10: {path}: labels outside 0..9 (from {labels.min()} to {labels.max()})")
    return data.reshape((-1,) + IMAGE_SHAPE), labels.astype(np.int64)


def _folder(root):
    for folder in (root, os.path.join(root, FOLDER)):
        if os.path.isfile(os.path.join(folder, TEST_FILES[0])) or os.path.isfile(os.path.join(folder, TRAIN_FILES[0])):
            return folder
    raise FileNotFoundError(f"cifar10: no {TRAIN_FILES[0]} or {TEST_FILES[0]} in {root} or "
                            f"{os.path.join(root, FOLDER)} "
                            f"(pyneural does not download datasets; extract cifar-10-python.tar.gz there)")


def cifar10(root, train=True, transform=None, target_transform=None):
    """CIFAR-10's training (50 000, the five data batches) or test (10 000) images from ``root``
    (the extracted ``cifar-10-batches-py`` folder or its parent). Without transforms: a
    TensorDataset of images float32 ``(N, 3, 32, 32)`` in [0, 1] and int64 labels. With
    ``transform`` or ``target_transform``: an ``ImageDataset`` whose samples are uint8 images
    ``(32, 32, 3)`` (as torchvision's PIL images) and int labels, passed through them."""
    folder = _folder(root)
    names = TRAIN_FILES if train else TEST_FILES
    paths = [os.path.join(folder, name) for name in names]
    absent = [p for p in paths if not os.path.isfile(p)]
    if absent:
        raise FileNotFoundError(f"cifar10: missing {', '.join(absent)}")
    parts = [read_cifar_batch(p) for p in paths]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if transform is None and target_transform is None:
        return TensorDataset(images.astype(np.float32) / np.float32(255.0), labels)
    from .images import ImageDataset
    return ImageDataset(np.ascontiguousarray(images.transpose(0, 2, 3, 1)), labels, transform, target_transform)
