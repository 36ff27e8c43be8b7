"""pyneural.datasets: the digits demo set, MNIST-style IDX files, synthetic benchmark images."""
from .digits import digits
from .mnist import load_mnist_idx, mnist, read_idx
from .synthetic import synthetic_images

__all__ = ["digits", "load_mnist_idx", "mnist", "read_idx", "synthetic_images"]
