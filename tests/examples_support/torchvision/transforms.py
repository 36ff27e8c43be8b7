"""torchvision.transforms' Compose, ToTensor and Normalize, for numpy (PIL-layout) images."""
import numpy as np
import torch


class Compose:
    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, img):
        for t in self.transforms:
            img = t(img)
        return img


class ToTensor:
    """(H, W[, C]) uint8 -> (C, H, W) float32 in [0, 1]."""

    def __call__(self, pic):
        a = np.asarray(pic)
        if a.ndim == 2:
            a = a[:, :, None]
        return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).float().div(255)


class Normalize:
    def __init__(self, mean, std):
        self.mean, self.std = torch.tensor(mean), torch.tensor(std)

    def __call__(self, tensor):
        return (tensor - self.mean.view(-1, 1, 1)) / self.std.view(-1, 1, 1)
