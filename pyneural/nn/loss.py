"""Loss modules with PyTorch's constructor arguments (the deprecated ``size_average``/``reduce``
included): CrossEntropyLoss, NLLLoss, MSELoss, L1Loss, SmoothL1Loss, HuberLoss, BCELoss,
BCEWithLogitsLoss, KLDivLoss. Class weights and ``pos_weight`` are buffers, so ``.to(device)``
moves them with the module."""
from pyneural.functions import loss as _loss
from pyneural.nn.linear import input_shape
from pyneural.nn.module import Module
from pyneural.tensor import Tensor


class _Loss(Module):
    _fn = None  # the functional loss, (input, target, **self._arguments())

    def __init__(self, size_average=None, reduce=None, reduction="mean", extra_reductions=()):
        super().__init__()
        reduction = _loss.legacy_reduction(size_average, reduce, reduction)
        _loss._check_reduction(type(self).__name__, reduction, extra_reductions)
        self.reduction = reduction

    def _arguments(self):
        return {"reduction": self.reduction}

    def forward(self, input, target):
        input_shape(self, input)
        try:
            return type(self)._fn(input, target, **self._arguments())
        except ValueError as e:
            raise ValueError(f"{self!r}: {e}") from None

    def extra_repr(self):
        return f"reduction={self.reduction!r}"


def _buffer(module, name, value):
    if value is not None and not isinstance(value, Tensor):
        from pyneural.creation import tensor
        value = tensor(value)
    module.register_buffer(name, value)


class CrossEntropyLoss(_Loss):
    _fn = _loss.cross_entropy

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean",
                 label_smoothing=0.0):
        super().__init__(size_average, reduce, reduction)
        _buffer(self, "weight", weight)
        self.ignore_index, self.label_smoothing = ignore_index, float(label_smoothing)

    def _arguments(self):
        return dict(weight=self.weight, ignore_index=self.ignore_index, reduction=self.reduction,
                    label_smoothing=self.label_smoothing)

    def extra_repr(self):
        return f"reduction={self.reduction!r}, label_smoothing={self.label_smoothing}"


class NLLLoss(_Loss):
    _fn = _loss.nll_loss

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        _buffer(self, "weight", weight)
        self.ignore_index = ignore_index

    def _arguments(self):
        return dict(weight=self.weight, ignore_index=self.ignore_index, reduction=self.reduction)


class MSELoss(_Loss):
    _fn = _loss.mse_loss


class L1Loss(_Loss):
    _fn = _loss.l1_loss


class SmoothL1Loss(_Loss):
    _fn = _loss.smooth_l1_loss

    def __init__(self, size_average=None, reduce=None, reduction="mean", beta=1.0):
        super().__init__(size_average, reduce, reduction)
        self.beta = float(beta)

    def _arguments(self):
        return dict(reduction=self.reduction, beta=self.beta)


class HuberLoss(_Loss):
    _fn = _loss.huber_loss

    def __init__(self, reduction="mean", delta=1.0):
        super().__init__(None, None, reduction)
        self.delta = float(delta)

    def _arguments(self):
        return dict(reduction=self.reduction, delta=self.delta)


class BCELoss(_Loss):
    _fn = _loss.binary_cross_entropy

    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        _buffer(self, "weight", weight)

    def _arguments(self):
        return dict(weight=self.weight, reduction=self.reduction)


class BCEWithLogitsLoss(_Loss):
    _fn = _loss.binary_cross_entropy_with_logits

    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean", pos_weight=None):
        super().__init__(size_average, reduce, reduction)
        _buffer(self, "weight", weight)
        _buffer(self, "pos_weight", pos_weight)

    def _arguments(self):
        return dict(weight=self.weight, reduction=self.reduction, pos_weight=self.pos_weight)


class KLDivLoss(_Loss):
    _fn = _loss.kl_div

    def __init__(self, size_average=None, reduce=None, reduction="mean", log_target=False):
        super().__init__(size_average, reduce, reduction, extra_reductions=("batchmean",))
        self.log_target = bool(log_target)

    def _arguments(self):
        return dict(reduction=self.reduction, log_target=self.log_target)
