"""Batch augmentations: each transform takes a whole batch ``(N, C, H, W)`` and a
``numpy.random.Generator`` and returns the augmented batch, with no Python loop over samples.

Randomness comes only from the generator passed in. The DataLoader passes one derived from
``(seed, epoch, batch number)``, so a batch is augmented the same way whichever worker builds it
and whether or not the run was interrupted and resumed: resuming needs no augmentation state.

    loader = DataLoader(train, batch_size=64, shuffle=True, seed=0,
                        transform=Compose([RandomCrop(32, padding=4), RandomHorizontalFlip()]))
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _check_batch(name, x):
    if not isinstance(x, np.ndarray) or x.ndim != 4:
        shape = getattr(x, "shape", None)
        raise ValueError(f"{name}: expected a batch of images (N, C, H, W) as a numpy array, got "
                         f"{type(x).__name__} of shape {shape}")


def _check_rng(name, rng):
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{name}: rng must be a numpy.random.Generator, got {type(rng).__name__}")


class RandomCrop:
    """Zero-pad each image by ``padding`` on every side, then cut a ``size`` window at a random
    offset per image. ``size`` is an int (square) or ``(height, width)``.

    Vectorised as one gather: a strided view of all windows of the padded batch (no copy), indexed
    by ``(sample, offset_y, offset_x)`` per image, so the only copy is the output itself."""

    def __init__(self, size, padding=0):
        size = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
        if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1
                                 for s in size):
            raise ValueError(f"RandomCrop: size must be an int >= 1 or a pair of them, got {size!r}")
        if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or padding < 0:
            raise ValueError(f"RandomCrop: padding must be an int >= 0, got {padding!r}")
        self.size = (int(size[0]), int(size[1]))
        self.padding = int(padding)

    def __call__(self, x, rng):
        _check_batch("RandomCrop", x)
        _check_rng("RandomCrop", rng)
        n, _, h, w = x.shape
        p, (ch, cw) = self.padding, self.size
        if ch > h + 2 * p or cw > w + 2 * p:
            raise ValueError(f"RandomCrop: crop {self.size} is larger than the padded image "
                             f"({h + 2 * p}, {w + 2 * p}) of batch {x.shape} with padding {p}")
        padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))) if p else x
        dy = rng.integers(0, h + 2 * p - ch + 1, size=n)
        dx = rng.integers(0, w + 2 * p - cw + 1, size=n)
        windows = sliding_window_view(padded, (ch, cw), axis=(2, 3))
        # Advanced indices around a slice: result is (N, C, ch, cw), sample axis first.
        return windows[np.arange(n), :, dy, dx]

    def __repr__(self):
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class RandomHorizontalFlip:
    """Mirror each image left-right with probability ``p``."""

    def __init__(self, p=0.5):
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)

    def __call__(self, x, rng):
        _check_batch("RandomHorizontalFlip", x)
        _check_rng("RandomHorizontalFlip", rng)
        flip = rng.random(x.shape[0]) < self.p
        # Always draw, even with p in {0, 1}, so the generator advances the same way for any p.
        out = x.copy()
        out[flip] = x[flip, :, :, ::-1]
        return out

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"


class Compose:
    """Apply transforms in order, all drawing from the same generator."""

    def __init__(self, transforms):
        transforms = list(transforms)
        for i, t in enumerate(transforms):
            if not callable(t):
                raise TypeError(f"Compose: transform {i} is a {type(t).__name__}, which is not callable")
        self.transforms = transforms

    def __call__(self, x, rng):
        for t in self.transforms:
            x = t(x, rng)
        return x

    def __repr__(self):
        return "Compose([" + ", ".join(repr(t) for t in self.transforms) + "])"
