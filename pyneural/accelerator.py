"""``pn.accelerator``: PyTorch 2.6's device-agnostic names, which current examples use to pick a
device (``device = pn.accelerator.current_accelerator() or "cpu"``)."""
from pyneural import cuda as _cuda
from pyneural.backend import device as _device


def is_available():
    return _cuda.is_available()


def current_accelerator(check_available=False):
    """``pn.device("cuda")`` when a CUDA device can run kernels here, else None."""
    return _device("cuda") if _cuda.is_available() else None


def device_count():
    return _cuda.device_count()


def synchronize(device=None):
    if _cuda.is_available():
        _cuda.synchronize(device)
