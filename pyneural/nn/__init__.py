"""pyneural.nn: Module, Parameter and the layers."""
from pyneural.nn import init, utils
from pyneural.nn.activation import GELU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from pyneural.nn.activation import (ELU, SELU, Hardsigmoid, Hardswish, Hardtanh, LeakyReLU, Mish, ReLU6, SiLU,
                                    Softplus)
from pyneural.nn.container import ModuleList, Sequential
from pyneural.nn.container import ModuleDict
from pyneural.nn.conv import Conv1d, Conv2d, ConvTranspose2d
from pyneural.nn.pool import AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, MaxPool2d, Upsample
from pyneural.nn.pool import PixelShuffle, PixelUnshuffle
from pyneural.nn.padding import ConstantPad2d, ReflectionPad2d, ReplicationPad2d, ZeroPad2d
from pyneural.nn.dropout import Dropout
from pyneural.nn.linear import Flatten, Identity, Linear
from pyneural.nn.linear import Unflatten
from pyneural.nn.loss import CrossEntropyLoss, MSELoss
from pyneural.nn.loss import (BCELoss, BCEWithLogitsLoss, HuberLoss, KLDivLoss, L1Loss, NLLLoss,
                              SmoothL1Loss)
from pyneural.nn.module import Module, Parameter
from pyneural.nn.normalization import BatchNorm1d, BatchNorm2d
from pyneural.nn.normalization import GroupNorm, InstanceNorm2d, LayerNorm
from pyneural.nn.sparse import Embedding
from pyneural import functional

import sys as _sys
_sys.modules[__name__ + ".functional"] = functional  # `import torch.nn.functional as F` ports as is

__all__ = ["Module", "Parameter", "Sequential", "ModuleList", "Linear", "Conv2d", "MaxPool2d", "AvgPool2d",
           "BatchNorm1d", "BatchNorm2d", "ReLU", "GELU", "Tanh", "Sigmoid", "Softmax", "LogSoftmax", "Dropout",
           "Flatten", "Identity", "Embedding", "CrossEntropyLoss", "MSELoss", "init", "functional", "utils"]
__all__ += ["ModuleDict", "Conv1d", "ConvTranspose2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "Upsample",
            "Unflatten", "LayerNorm", "GroupNorm"]
__all__ += ["ELU", "SELU", "Hardsigmoid", "Hardswish", "Hardtanh", "LeakyReLU", "Mish", "ReLU6", "SiLU", "Softplus",
            "BCELoss", "BCEWithLogitsLoss", "HuberLoss", "KLDivLoss", "L1Loss", "NLLLoss", "SmoothL1Loss"]
__all__ += ["InstanceNorm2d", "PixelShuffle", "PixelUnshuffle", "ConstantPad2d", "ReflectionPad2d",
            "ReplicationPad2d", "ZeroPad2d"]
