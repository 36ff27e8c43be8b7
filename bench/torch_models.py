"""PyTorch twins of pyneural.models, layer for layer and name for name: the benchmark times them
side by side, and the tests load a pyneural state_dict into them to check the architectures match."""
import torch.nn as tnn
import torch.nn.functional as tF


def mlp(in_features=64, hidden=512, num_classes=10):
    return tnn.Sequential(tnn.Flatten(), tnn.Linear(in_features, hidden), tnn.ReLU(), tnn.Linear(hidden, hidden),
                          tnn.ReLU(), tnn.Linear(hidden, num_classes))


def cnn(in_channels=1, image_size=8, num_classes=10):
    return tnn.Sequential(tnn.Conv2d(in_channels, 32, 3, padding=1), tnn.ReLU(), tnn.Conv2d(32, 64, 3, padding=1),
                          tnn.ReLU(), tnn.MaxPool2d(2), tnn.Flatten(), tnn.Linear(64 * (image_size // 2) ** 2, 128),
                          tnn.ReLU(), tnn.Linear(128, num_classes))


class BasicBlock(tnn.Module):
    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        self.conv1 = tnn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = tnn.BatchNorm2d(out_channels)
        self.conv2 = tnn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = tnn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = tnn.Sequential(tnn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                           tnn.BatchNorm2d(out_channels))
        else:
            self.shortcut = tnn.Identity()

    def forward(self, x):
        out = tF.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return tF.relu(out + self.shortcut(x))


class ResNetSmall(tnn.Module):
    def __init__(self, in_channels=3, num_classes=10, widths=(16, 32, 64), blocks_per_stage=1):
        super().__init__()
        self.stem = tnn.Sequential(tnn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
                                   tnn.BatchNorm2d(widths[0]), tnn.ReLU())
        blocks, channels = [], widths[0]
        for i, width in enumerate(widths):
            for j in range(blocks_per_stage):
                blocks.append(BasicBlock(channels, width, stride=2 if i > 0 and j == 0 else 1))
                channels = width
        self.blocks = tnn.Sequential(*blocks)
        self.fc = tnn.Linear(channels, num_classes)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean(dim=(2, 3)))


def resnet_small(in_channels=3, num_classes=10, widths=(16, 32, 64), blocks_per_stage=1):
    return ResNetSmall(in_channels, num_classes, widths, blocks_per_stage)


MODELS = {"mlp": mlp, "cnn": cnn, "resnet_small": resnet_small}
