"""Per-sample image transforms with torchvision's names and semantics, for a Dataset's
``transform=`` (``pyneural.datasets.mnist(root, transform=...)``, or your own ``__getitem__``).

Layouts, as in torchvision: a numpy array is an image the way a PIL image is, ``(H, W)`` or
``(H, W, C)`` (usually uint8); a ``pn.Tensor`` is ``(..., C, H, W)``. ``ToTensor`` goes from the
first to the second; ``RandomCrop`` and ``RandomHorizontalFlip`` take either and return the same
kind; ``Normalize`` takes float Tensors. These transforms prepare data: they record no autograd
history.

Randomness. Random transforms draw from ``sample_generator()``. While the DataLoader fetches a
sample it sets that generator, seeded with ``(loader seed, epoch, rank, batch position, index in
the batch)``, so a sample is augmented the same way whichever worker thread fetches it, in
whatever order the threads run, and after a resume (same seed and batch size): augmentation
needs no saved state. Outside a loader it is pyneural's global generator (``pn.manual_seed``).
The batch-level augmentations of ``pyneural.data.augment`` (whole ``(N, C, H, W)`` batches,
vectorised) remain the faster choice for array datasets.
"""
import contextlib
import numbers
import threading

import numpy as np

from ..tensor import Tensor

_draws = threading.local()


def sample_generator():
    """The ``numpy.random.Generator`` random transforms draw from (see the module docstring)."""
    key = getattr(_draws, "key", None)
    if key is None:
        from .. import random as pn_random
        return pn_random.get_generator()
    if _draws.generator is None:
        _draws.generator = np.random.default_rng(key)
    return _draws.generator


@contextlib.contextmanager
def seeded_draws(key):
    """Within the block, ``sample_generator()`` is a generator seeded with ``key`` (a list of
    non-negative ints), made on first use."""
    saved = getattr(_draws, "key", None), getattr(_draws, "generator", None)
    _draws.key, _draws.generator = key, None
    try:
        yield
    finally:
        _draws.key, _draws.generator = saved


# ---- image access in both layouts ---------------------------------------------------------------

def _image(name, img):
    """``(array, is_tensor)``; the array is the Tensor's data or the numpy image itself."""
    if isinstance(img, Tensor):
        if img.ndim < 2:
            raise ValueError(f"{name}: expected an image tensor (..., H, W), got shape {tuple(img.shape)}")
        return img.data, True
    if isinstance(img, np.ndarray):
        if img.ndim not in (2, 3):
            raise ValueError(f"{name}: a numpy image is (H, W) or (H, W, C) like a PIL image, got shape {img.shape}")
        return img, False
    raise TypeError(f"{name}: img should be a pn.Tensor (..., C, H, W) or a numpy image (H, W[, C]), "
                    f"got {type(img).__name__}")


def _hw_axes(a, is_tensor):
    return (a.ndim - 2, a.ndim - 1) if is_tensor else (0, 1)


def _as_kind(a, is_tensor):
    return Tensor(a) if is_tensor else a


def _pair(name, value, what):
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value), int(value)
    if isinstance(value, (tuple, list)) and len(value) == 1:
        return _pair(name, value[0], what)
    if (isinstance(value, (tuple, list)) and len(value) == 2
            and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)):
        return int(value[0]), int(value[1])
    raise ValueError(f"{name}: {what} must be an int or a sequence of 1 or 2 ints, got {value!r}")


# ---- the transforms -----------------------------------------------------------------------------

class Compose:
    """Apply ``transforms`` in order."""

    def __init__(self, transforms):
        transforms = list(transforms)
        for i, t in enumerate(transforms):
            if not callable(t):
                raise TypeError(f"Compose: transform {i} is a {type(t).__name__}, which is not callable")
        self.transforms = transforms

    def __call__(self, img):
        for t in self.transforms:
            img = t(img)
        return img

    def __repr__(self):
        return "Compose(\n" + "".join(f"    {t!r}\n" for t in self.transforms) + ")"


class ToTensor:
    """A numpy image ``(H, W[, C])`` (or anything ``np.asarray`` makes one of, such as a PIL image)
    -> a Tensor ``(C, H, W)``; uint8 is scaled to float32 in [0, 1], other dtypes are kept as
    they are (torchvision's rule)."""

    def __call__(self, pic):
        if isinstance(pic, Tensor):
            raise TypeError("ToTensor: pic should be a numpy image (H, W[, C]) or a PIL image, got a pn.Tensor")
        a = np.asarray(pic)
        if a.ndim not in (2, 3):
            raise ValueError(f"ToTensor: pic should be 2/3 dimensional. Got {a.ndim} dimensions.")
        if a.ndim == 2:
            a = a[:, :, None]
        chw = np.ascontiguousarray(a.transpose(2, 0, 1))
        if chw.dtype == np.uint8:
            chw = chw.astype(np.float32) / np.float32(255.0)
        return Tensor(chw)

    def __repr__(self):
        return "ToTensor()"


class Normalize:
    """``(img - mean[c]) / std[c]`` per channel of a float Tensor ``(..., C, H, W)``, computed in
    the tensor's dtype."""

    def __init__(self, mean, std, inplace=False):
        self.mean = tuple(float(m) for m in np.atleast_1d(mean))
        self.std = tuple(float(s) for s in np.atleast_1d(std))
        self.inplace = bool(inplace)

    def __call__(self, tensor):
        if not isinstance(tensor, Tensor):
            raise TypeError(f"Normalize: img should be a pn.Tensor image, got {type(tensor).__name__}")
        if not tensor.is_floating_point():
            raise TypeError(f"Normalize: input tensor should be a float tensor, got {tensor.dtype}")
        if tensor.ndim < 3:
            raise ValueError(f"Normalize: expected a tensor image of size (..., C, H, W), got {tuple(tensor.shape)}")
        a = tensor.data
        channels = a.shape[-3]
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, channels):
                raise ValueError(f"Normalize: {name} has {len(values)} values for an image of {channels} channels")
        from .. import backend
        xp = backend.xp(a)
        mean = xp.asarray(np.asarray(self.mean, dtype=a.dtype).reshape(-1, 1, 1))
        std = np.asarray(self.std, dtype=a.dtype)
        if (std == 0).any():
            raise ValueError(f"Normalize: std evaluated to zero after conversion to {a.dtype}, "
                             f"leading to division by zero")
        std = xp.asarray(std.reshape(-1, 1, 1))
        if self.inplace:
            a -= mean
            a /= std
            return tensor
        return Tensor((a - mean) / std)

    def __repr__(self):
        return f"Normalize(mean={list(self.mean)}, std={list(self.std)})"


PADDING_MODES = ("constant", "edge", "reflect", "symmetric")


class RandomCrop:
    """Cut a ``size`` window (int: square, or ``(height, width)``) at a random place, after
    optionally padding the image. ``padding``: an int (every side), ``(left/right, top/bottom)``
    or ``(left, top, right, bottom)``; ``pad_if_needed`` pads an image smaller than the crop (by
    the shortfall on both sides of that dimension, as torchvision); ``fill`` is the value for
    ``padding_mode="constant"``; the other modes are ``edge``, ``reflect`` and ``symmetric``."""

    def __init__(self, size, padding=None, pad_if_needed=False, fill=0, padding_mode="constant"):
        self.size = _pair("RandomCrop", size, "size")
        if min(self.size) < 1:
            raise ValueError(f"RandomCrop: size must be >= 1, got {size!r}")
        self.padding = None if padding is None else self._sides(padding)
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"RandomCrop: padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        if not isinstance(fill, numbers.Number):
            raise TypeError(f"RandomCrop: fill must be a number, got {type(fill).__name__}")
        self.pad_if_needed, self.fill, self.padding_mode = bool(pad_if_needed), fill, padding_mode

    @staticmethod
    def _sides(padding):
        """(left, top, right, bottom) from torchvision's 1-, 2- or 4-value forms."""
        values = [padding] if isinstance(padding, numbers.Number) else list(padding)
        if len(values) not in (1, 2, 4) or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                                                   and v >= 0 for v in values):
            raise ValueError(f"RandomCrop: padding must be an int >= 0 or a sequence of 2 or 4 of them, "
                             f"got {padding!r}")
        if len(values) == 1:
            return tuple(values) * 4
        if len(values) == 2:
            return values[0], values[1], values[0], values[1]
        return tuple(values)

    def _pad(self, a, is_tensor, left, top, right, bottom):
        y, x = _hw_axes(a, is_tensor)
        widths = [(0, 0)] * a.ndim
        widths[y], widths[x] = (top, bottom), (left, right)
        from .. import backend
        xp = backend.xp(a)
        if self.padding_mode == "constant":
            return xp.pad(a, widths, mode="constant", constant_values=self.fill)
        return xp.pad(a, widths, mode=self.padding_mode)

    def __call__(self, img):
        a, is_tensor = _image("RandomCrop", img)
        y, x = _hw_axes(a, is_tensor)
        if self.padding is not None:
            a = self._pad(a, is_tensor, *self.padding)
        th, tw = self.size
        if self.pad_if_needed and a.shape[x] < tw:
            a = self._pad(a, is_tensor, tw - a.shape[x], 0, tw - a.shape[x], 0)
        if self.pad_if_needed and a.shape[y] < th:
            a = self._pad(a, is_tensor, 0, th - a.shape[y], 0, th - a.shape[y])
        h, w = a.shape[y], a.shape[x]
        if h < th or w < tw:
            raise ValueError(f"RandomCrop: required crop size {(th, tw)} is larger than input image size {(h, w)}")
        if (h, w) == (th, tw):
            top = left = 0
        else:
            rng = sample_generator()
            top = int(rng.integers(0, h - th + 1))
            left = int(rng.integers(0, w - tw + 1))
        window = [slice(None)] * a.ndim
        window[y], window[x] = slice(top, top + th), slice(left, left + tw)
        return _as_kind(a[tuple(window)].copy(), is_tensor)

    def __repr__(self):
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class RandomHorizontalFlip:
    """Mirror the image left-right with probability ``p``."""

    def __init__(self, p=0.5):
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)

    def __call__(self, img):
        a, is_tensor = _image("RandomHorizontalFlip", img)
        if sample_generator().random() < self.p:
            _, x = _hw_axes(a, is_tensor)
            from .. import backend
            return _as_kind(backend.xp(a).flip(a, axis=x).copy(), is_tensor)
        return img

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"


class Lambda:
    """A user function as a transform."""

    def __init__(self, lambd):
        if not callable(lambd):
            raise TypeError(f"Argument lambd should be callable, got {repr(type(lambd).__name__)}")
        self.lambd = lambd

    def __call__(self, img):
        return self.lambd(img)

    def __repr__(self):
        return "Lambda()"
