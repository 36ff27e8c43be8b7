"""The model zoo of the demo and the benchmarks: an MLP and a small CNN for 8x8 digits, and a
small ResNet for CIFAR-shaped (3, 32, 32) input.

The MLP and CNN are plain ``Sequential`` stacks so that each Linear/Conv2d followed by a ReLU runs
as one fused op. ``bench/train.py`` builds the same architectures in PyTorch; keep the two in step.
"""
from . import functional as F
from . import nn


def mlp(in_features=64, hidden=512, num_classes=10):
    """Flatten, then in_features -> hidden -> hidden -> num_classes with ReLUs (64-512-512-10)."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_features, hidden), nn.ReLU(),
        nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


def cnn(in_channels=1, image_size=8, num_classes=10):
    """conv 3x3 -> 32, conv 3x3 -> 64 (both padded, ReLU), 2x2 max-pool, linear -> 128 (ReLU),
    linear -> num_classes. On 8x8 digits the flattened features are 64 * 4 * 4 = 1024."""
    features = 64 * (image_size // 2) ** 2
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(features, 128), nn.ReLU(),
        nn.Linear(128, num_classes),
    )


class BasicBlock(nn.Module):
    """Two 3x3 conv + BatchNorm layers with an identity shortcut (He et al., 2016); when the block
    changes width or resolution the shortcut is a strided 1x1 conv + BatchNorm."""

    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_channels))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        out = self.bn1.forward_relu(self.conv1(x))  # relu(bn1(...)) in one pass
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetSmall(nn.Module):
    """Stem (3x3 conv + BN + ReLU), one stage per width (the first at full resolution, each later
    one halving it), global average pooling, a linear classifier."""

    def __init__(self, in_channels=3, num_classes=10, widths=(16, 32, 64), blocks_per_stage=1):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
        blocks, channels = [], widths[0]
        for i, width in enumerate(widths):
            for j in range(blocks_per_stage):
                blocks.append(BasicBlock(channels, width, stride=2 if i > 0 and j == 0 else 1))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.fc(x.mean(dim=(2, 3)))


def resnet_small(in_channels=3, num_classes=10, widths=(16, 32, 64), blocks_per_stage=1):
    """A ResNet-8-style network for 32x32 images (about 78k parameters with the defaults)."""
    return ResNetSmall(in_channels, num_classes, widths, blocks_per_stage)


MODELS = {"mlp": mlp, "cnn": cnn, "resnet_small": resnet_small}
