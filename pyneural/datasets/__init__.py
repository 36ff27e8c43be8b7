"""pyneural.datasets: the digits demo set, MNIST-style IDX files, CIFAR-10's python batches,
synthetic benchmark images, and torchvision's classes over them (``MNIST``, ``FashionMNIST``,
``CIFAR10``). Nothing is downloaded."""
from .cifar import cifar10, read_cifar_batch
from .digits import digits
from .images import ImageDataset
from .mnist import load_mnist_idx, mnist, read_idx, read_mnist_idx
from .synthetic import synthetic_images
from .vision import CIFAR10, MNIST, FashionMNIST

__all__ = ["cifar10", "digits", "ImageDataset", "load_mnist_idx", "mnist", "read_cifar_batch", "read_idx",
           "read_mnist_idx", "synthetic_images", "MNIST", "FashionMNIST", "CIFAR10"]
