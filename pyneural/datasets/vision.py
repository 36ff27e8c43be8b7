"""torchvision's dataset classes over pyneural's readers: ``MNIST``, ``FashionMNIST`` and
``CIFAR10`` with torchvision's signature ``(root, train=True, transform=None,
target_transform=None, download=False)``, its folder layout (``root/MNIST/raw/...``,
``root/cifar-10-batches-py/...``; the files directly in ``root`` are found too) and its
attributes (``data``, ``targets``, ``classes``, ``class_to_idx``), so a script written for
torchvision ports by changing its imports.

Samples are ``(image, target)``: the image a uint8 numpy array in a PIL image's layout
(``(H, W)`` for MNIST, ``(H, W, 3)`` for CIFAR-10) before ``transform``, which is where
``transforms.ToTensor()`` turns it into a ``(C, H, W)`` float Tensor, as with torchvision.

Nothing is downloaded. ``download=True`` means what it means in torchvision, "fetch the files
if they are not there": when they are there it changes nothing; when they are not it raises a
RuntimeError that says where to put them.
"""
import os

import numpy as np

from ..tensor import Tensor
from .cifar import FOLDER, TEST_FILES, TRAIN_FILES, _folder, read_cifar_batch
from .images import ImageDataset
from .mnist import MNIST_FILES, _find, read_mnist_idx


def _no_download(cls, root, error):
    return RuntimeError(f"{cls}(download=True): the files are not under {os.path.abspath(root)!r}, and "
                        f"pyneural downloads nothing; {error}")


def _locate(cls, root, download, find):
    try:
        return find()
    except FileNotFoundError as e:
        if download:
            raise _no_download(cls, root, e) from e
        raise


class _VisionDataset(ImageDataset):
    """The parts torchvision's datasets share: ``root``, ``train``, ``targets``, ``classes``,
    ``class_to_idx`` and the repr."""
    classes = ()

    def __init__(self, root, train, images, labels, transform, target_transform):
        super().__init__(images, labels, transform, target_transform)
        self.root, self.train = os.fspath(root), bool(train)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}

    def __repr__(self):
        lines = [f"Dataset {type(self).__name__}", f"    Number of datapoints: {len(self)}",
                 f"    Root location: {self.root}", f"    Split: {'Train' if self.train else 'Test'}"]
        if self.transform is not None:
            lines.append(f"    StandardTransform\nTransform: {self.transform!r}")
        return "\n".join(lines)


class MNIST(_VisionDataset):
    """MNIST from its IDX files (``train-images-idx3-ubyte`` ...; ``.gz`` or not) in
    ``root/MNIST/raw`` (torchvision's layout) or ``root``. ``data``: uint8 ``(N, 28, 28)``;
    ``targets``: int64 ``(N,)``."""
    classes = ("0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five", "6 - six",
               "7 - seven", "8 - eight", "9 - nine")
    folder_name = "MNIST"

    def __init__(self, root, train=True, transform=None, target_transform=None, download=False):
        paths = _locate(type(self).__name__, root, download,
                        lambda: [self._find(os.fspath(root), stem) for stem in MNIST_FILES[bool(train)]])
        images, labels = read_mnist_idx(*paths)
        super().__init__(root, train, images, labels, transform, target_transform)

    @property
    def data(self):
        """The images as a uint8 Tensor (N, H, W) sharing the dataset's memory (torchvision's type)."""
        return Tensor(self.images)

    @property
    def targets(self):
        """The labels as an int64 Tensor (N,)."""
        return Tensor(self.labels)

    def _find(self, root, stem):
        if self.folder_name == "MNIST":
            return _find(root, stem)
        own = os.path.join(root, self.folder_name, "raw")
        return _find(own, stem) if os.path.isdir(own) else _find(root, stem)


class FashionMNIST(MNIST):
    """Fashion-MNIST: MNIST's file names and format, in ``root/FashionMNIST/raw`` or ``root``."""
    classes = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot")
    folder_name = "FashionMNIST"


class CIFAR10(_VisionDataset):
    """CIFAR-10 from its python batches in ``root/cifar-10-batches-py`` (or ``root``): the five
    data batches for ``train=True``, ``test_batch`` otherwise. ``data``: uint8 ``(N, 32, 32, 3)``
    (torchvision's layout); ``targets``: a list of ints."""
    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

    def __init__(self, root, train=True, transform=None, target_transform=None, download=False):
        names = TRAIN_FILES if train else TEST_FILES

        def find():
            folder = _folder(os.fspath(root))
            paths = [os.path.join(folder, name) for name in names]
            absent = [p for p in paths if not os.path.isfile(p)]
            if absent:
                raise FileNotFoundError(f"cifar10: missing {', '.join(absent)} (the extracted {FOLDER} folder)")
            return paths

        parts = [read_cifar_batch(p) for p in _locate("CIFAR10", root, download, find)]
        images = np.ascontiguousarray(np.concatenate([p[0] for p in parts]).transpose(0, 2, 3, 1))
        labels = np.concatenate([p[1] for p in parts])
        super().__init__(root, train, images, labels, transform, target_transform)

    @property
    def data(self):
        """The images as a uint8 numpy array (N, 32, 32, 3), torchvision's type for CIFAR-10."""
        return self.images

    @property
    def targets(self):
        """The labels as a list of ints (torchvision's type for CIFAR-10)."""
        return self.labels.tolist()
