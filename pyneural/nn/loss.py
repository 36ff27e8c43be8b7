"""Loss modules: CrossEntropyLoss and MSELoss."""
from pyneural.functions import loss as _loss
from pyneural.nn.linear import input_shape
from pyneural.nn.module import Module


class CrossEntropyLoss(Module):
    def __init__(self, reduction="mean", label_smoothing=0.0, ignore_index=-100):
        super().__init__()
        _loss._check_reduction("CrossEntropyLoss", reduction)
        self.reduction, self.label_smoothing, self.ignore_index = reduction, float(label_smoothing), ignore_index

    def forward(self, input, target):
        input_shape(self, input)
        try:
            return _loss.cross_entropy(input, target, self.reduction, self.label_smoothing, self.ignore_index)
        except ValueError as e:
            raise ValueError(f"{self!r}: {e}") from None

    def extra_repr(self):
        return f"reduction={self.reduction!r}, label_smoothing={self.label_smoothing}"


class MSELoss(Module):
    def __init__(self, reduction="mean"):
        super().__init__()
        _loss._check_reduction("MSELoss", reduction)
        self.reduction = reduction

    def forward(self, input, target):
        input_shape(self, input)
        try:
            return _loss.mse_loss(input, target, self.reduction)
        except ValueError as e:
            raise ValueError(f"{self!r}: {e}") from None

    def extra_repr(self):
        return f"reduction={self.reduction!r}"
