"""pyneural.datasets: the digits demo set, MNIST-style IDX files, CIFAR-10's python batches,
synthetic benchmark images. Nothing is downloaded."""
from .cifar import cifar10, read_cifar_batch
from .digits import digits
from .images import ImageDataset
from .mnist import load_mnist_idx, mnist, read_idx, read_mnist_idx
from .synthetic import synthetic_images

__all__ = ["cifar10", "digits", "ImageDataset", "load_mnist_idx", "mnist", "read_cifar_batch", "read_idx",
           "read_mnist_idx", "synthetic_images"]
