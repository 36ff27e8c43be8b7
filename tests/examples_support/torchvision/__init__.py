"""A stand-in for the three torchvision pieces the ported examples use (``datasets.MNIST``,
``datasets.CIFAR10``, ``transforms.Compose/ToTensor/Normalize``), for running the ORIGINAL
PyTorch scripts on the tiny files tests/test_examples.py writes. Real torchvision cannot serve
there: its CIFAR10 checks the MD5 sums of the real files (and would download them), and this
machine has no torchvision. Built on torch and numpy only; samples and layouts as torchvision's
(a uint8 numpy image in PIL layout before ``transform``)."""
from . import datasets, transforms  # noqa: F401
