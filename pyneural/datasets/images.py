"""A per-sample image dataset: raw images and labels in memory, passed through torchvision-style
``transform`` / ``target_transform`` one sample at a time (what ``mnist(..., transform=...)`` and
``cifar10(..., transform=...)`` return)."""
import numpy as np

from ..data.dataset import Dataset


class ImageDataset(Dataset):
    """``dataset[i]`` is ``(transform(images[i]), target_transform(int(labels[i])))``, each
    function skipped when None. ``images[i]`` is a uint8 numpy image ``(H, W)`` or ``(H, W, C)``,
    the layout a PIL image has, so ``pyneural.data.transforms.ToTensor`` turns it into a Tensor."""

    def __init__(self, images, labels, transform=None, target_transform=None):
        if len(images) != len(labels):
            raise ValueError(f"ImageDataset: {len(images)} images but {len(labels)} labels")
        for name, fn in (("transform", transform), ("target_transform", target_transform)):
            if fn is not None and not callable(fn):
                raise TypeError(f"ImageDataset: {name} must be callable, got {type(fn).__name__}")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform, self.target_transform = transform, target_transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        image, target = self.images[index], int(self.labels[index])
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target

    def __repr__(self):
        return (f"ImageDataset({len(self)} images of {self.images.shape[1:]} {self.images.dtype}, "
                f"transform={self.transform!r})")
