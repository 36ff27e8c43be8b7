"""torchvision.datasets' MNIST (IDX files in root/MNIST/raw) and CIFAR10 (python batches in
root/cifar-10-batches-py), with torchvision's signature; ``download`` is accepted and ignored."""
import os
import pickle

import numpy as np
import torch


def _read_idx(path):
    with open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


class _ImageDataset(torch.utils.data.Dataset):
    def __init__(self, images, labels, transform, target_transform):
        self.images, self.labels = images, labels
        self.transform, self.target_transform = transform, target_transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        img, target = self.images[index], int(self.labels[index])
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target


class MNIST(_ImageDataset):
    def __init__(self, root, train=True, transform=None, target_transform=None, download=False):
        split = "train" if train else "t10k"
        raw = os.path.join(root, "MNIST", "raw")
        super().__init__(_read_idx(os.path.join(raw, f"{split}-images-idx3-ubyte")),
                         _read_idx(os.path.join(raw, f"{split}-labels-idx1-ubyte")), transform, target_transform)


class CIFAR10(_ImageDataset):
    def __init__(self, root, train=True, transform=None, target_transform=None, download=False):
        names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
        images, labels = [], []
        for name in names:
            with open(os.path.join(root, "cifar-10-batches-py", name), "rb") as f:
                batch = pickle.load(f, encoding="latin1")
            images.append(batch["data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels.extend(batch["labels"])
        super().__init__(np.concatenate(images), labels, transform, target_transform)
