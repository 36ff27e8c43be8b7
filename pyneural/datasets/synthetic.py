"""Synthetic labelled images for benchmarks: any shape and size, no download, still learnable.

Each class has a fixed prototype (smooth random blobs, the same for every call with the same
``pattern_seed``); a sample is its class prototype, randomly rescaled in contrast, plus Gaussian
pixel noise. A model has to learn the prototypes to beat chance, so a benchmark that trains on it
exercises real gradients rather than noise.
"""
import numpy as np

from ..data.dataset import TensorDataset


def class_prototypes(shape, num_classes, pattern_seed=0):
    """``(num_classes, *shape)`` float32 patterns with zero mean and unit variance each."""
    rng = np.random.default_rng(pattern_seed)
    c, h, w = shape
    # Low-resolution noise upsampled by repetition: blobs a few pixels wide, which a conv net's
    # small receptive fields can pick up (white noise prototypes would be hard for them).
    coarse = rng.standard_normal((num_classes, c, -(-h // 4), -(-w // 4)))
    protos = coarse.repeat(4, axis=2).repeat(4, axis=3)[:, :, :h, :w]
    protos -= protos.mean(axis=(1, 2, 3), keepdims=True)
    protos /= protos.std(axis=(1, 2, 3), keepdims=True) + 1e-12
    return protos.astype(np.float32)


def synthetic_images(n, shape=(3, 32, 32), num_classes=10, seed=0, noise=1.0, pattern_seed=0):
    """A TensorDataset of ``n`` float32 images ``(n, *shape)`` and int64 labels ``(n,)``, classes
    balanced up to one sample. ``seed`` draws the samples; ``pattern_seed`` the class prototypes,
    so a train and a test set with different ``seed`` share their classes."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"synthetic_images: shape must be (channels, height, width) >= 1, got {shape}")
    if n < 1 or num_classes < 2:
        raise ValueError(f"synthetic_images: need n >= 1 and num_classes >= 2, got n={n}, "
                         f"num_classes={num_classes}")
    protos = class_prototypes(shape, num_classes, pattern_seed)
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % num_classes).astype(np.int64)
    contrast = rng.uniform(0.5, 1.5, size=(n, 1, 1, 1)).astype(np.float32)
    images = protos[labels] * contrast
    images += rng.standard_normal(images.shape, dtype=np.float32) * np.float32(noise)
    return TensorDataset(images, labels)
