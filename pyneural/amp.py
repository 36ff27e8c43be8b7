"""Automatic mixed precision: ``autocast`` and ``GradScaler``, one mechanism for every device.

``with pn.autocast("cuda", dtype=pn.bfloat16):`` (or ``"cpu"``) makes the ops that run on that
device's tensors choose their own precision, as PyTorch's autocast does:

* **lower-precision ops** (matmul, linear, conv): their tensor operands are rounded to the 16-bit
  dtype (``bfloat16`` or ``float16``); the kernels multiply the 16-bit values (each product exact
  in fp32) and accumulate in fp32. The result stays in **float32**, where PyTorch would round it
  to 16 bits: the elementwise ops, norms and losses that follow then run on fp32 data, on the same
  kernels as without autocast, and no activation is rounded twice. Gradients flow back in fp32.
* **fp32 ops** (softmax, log-softmax, the losses, batch norm, reductions, exp/log): 16-bit inputs
  are widened to float32 first.
* **everything else** runs in the dtype it is given; where a binary op meets two floating dtypes
  (a 16-bit tensor and a float32 one) both are widened to the wider.

The master weights stay float32: the 16-bit copy of a parameter is made once per autocast region
and cached (``cache_enabled``), and its gradient arrives in the parameter's ``.grad`` as float32.

The hook is one check in ``Function.apply``: when no autocast region is open anywhere, ``active``
is 0 and nothing else runs. Regions are per thread, as in PyTorch.

``GradScaler`` is float16's dynamic loss scaling: multiply the loss by a large scale so small
gradients survive fp16's narrow exponent, divide the gradients by it before the step, skip the
step (and halve the scale) when any gradient is inf/NaN, and double the scale after
``growth_interval`` clean steps. bf16 has float32's exponent range and does not need it.
"""
import functools
import sys
import threading
import weakref

import numpy as np

float16 = np.dtype(np.float16)
_F32 = np.dtype(np.float32)


def bfloat16_dtype():
    """bfloat16's numpy dtype (ml_dtypes' bfloat16), importing ml_dtypes on first use. ``import
    pyneural`` does not import it: ml_dtypes registers a dozen dtypes and their casts with numpy,
    which took 1.1-1.5 s of a 1.75 s ``import pyneural`` that most runs, never touching bf16, paid
    for nothing. ``pyneural.bfloat16`` and ``pyneural.amp.bfloat16`` call this."""
    import ml_dtypes
    return np.dtype(ml_dtypes.bfloat16)


def is_bfloat16(dtype):
    """Whether ``dtype`` is bfloat16, without importing ml_dtypes: until something has imported it
    no array can have that dtype, so the answer is False."""
    ml_dtypes = sys.modules.get("ml_dtypes")
    return ml_dtypes is not None and dtype == ml_dtypes.bfloat16


def as_dtype(dtype):
    """``np.dtype(dtype)``, where the names "bfloat16" / "bf16" work before ml_dtypes is imported."""
    if isinstance(dtype, str) and dtype in ("bfloat16", "bf16"):
        return bfloat16_dtype()
    return np.dtype(dtype)


def __getattr__(name):
    if name == "bfloat16":
        return bfloat16_dtype()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


active = 0  # number of autocast regions entered with enabled=True, over all threads


class _State(threading.local):
    def __init__(self):
        self.modes = {}      # device type -> 16-bit dtype while an enabled region is open
        self.depth = 0       # nesting depth of autocast regions in this thread
        self.cache = {}      # id(parameter) -> (weakref to it, its 16-bit cast Tensor)
        self.casting = False


_state = _State()


def _default_dtype(device_type):
    """PyTorch's defaults per device type: float16 on "cuda", bfloat16 on "cpu", None elsewhere."""
    if device_type == "cuda":
        return float16
    return bfloat16_dtype() if device_type == "cpu" else None


# Op policy, by Function class name -> number of leading tensor inputs that are cast (the rest,
# e.g. a bias, are added in fp32 to the fp32 result).
_LOWER = {"MatMul": 2, "Linear": 2, "Conv2d": 2, "Conv1d": 2, "ConvTranspose2d": 2}
_FP32 = {"Softmax", "LogSoftmax", "CrossEntropy", "MSE", "BatchNorm", "LayerNorm", "GroupNorm", "Sum",
         "Mean", "Var", "Exp", "Log", "Sqrt", "PowScalar", "Pow", "LogSumExp", "CumSum", "NLLLoss", "BCE",
         "BCEWithLogits", "L1Loss", "SmoothL1Loss", "HuberLoss", "KLDiv", "Norm"}


def is_low_precision(dtype):
    """True for the 16-bit floating dtypes autocast computes in."""
    return dtype == float16 or is_bfloat16(dtype)


def is_autocast_enabled(device_type="cuda"):
    return device_type in _state.modes


def get_autocast_dtype(device_type="cuda"):
    mode = _state.modes.get(device_type)
    return mode if mode is not None else _default_dtype(device_type)


def _device_type(device_type):
    if not isinstance(device_type, str):
        device_type = getattr(device_type, "type", device_type)
    kind = str(device_type).partition(":")[0]
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"autocast: device_type must be 'cpu' or 'cuda', got {device_type!r}")
    return kind


class autocast:
    """``autocast(device_type, dtype=None, enabled=True, cache_enabled=True)``: context manager or
    decorator running the ops on ``device_type``'s tensors in mixed precision (see the module doc).
    ``dtype`` defaults to float16 on "cuda" and bfloat16 on "cpu", as in PyTorch."""

    def __init__(self, device_type, dtype=None, enabled=True, cache_enabled=True):
        self.device_type = _device_type(device_type)
        dtype = _default_dtype(self.device_type) if dtype is None else as_dtype(dtype)
        if not is_low_precision(dtype):
            raise ValueError(f"autocast: dtype must be one of bfloat16, float16, got {dtype}")
        self.dtype, self.enabled, self.cache_enabled = dtype, bool(enabled), bool(cache_enabled)

    def __enter__(self):
        global active
        st = _state
        self._prev = st.modes.get(self.device_type)
        self._prev_cache = getattr(st, "cache_enabled", True)
        if self.enabled:
            st.modes[self.device_type] = self.dtype
            active += 1
        else:
            st.modes.pop(self.device_type, None)
        st.cache_enabled = self.cache_enabled
        st.depth += 1
        return self

    def __exit__(self, *exc):
        global active
        st = _state
        if self._prev is None:
            st.modes.pop(self.device_type, None)
        else:
            st.modes[self.device_type] = self._prev
        if self.enabled:
            active -= 1
        st.cache_enabled = self._prev_cache
        st.depth -= 1
        if st.depth == 0:
            st.cache.clear()  # the 16-bit weight copies live for the outermost region only
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with autocast(self.device_type, self.dtype, self.enabled, self.cache_enabled):
                return fn(*args, **kwargs)
        return wrapper


def _cast(t, dtype):
    """``t`` cast to ``dtype`` (differentiable); parameters' casts cached for the region."""
    from pyneural.functions.elementwise import Cast
    from pyneural.tensor import is_grad_enabled
    st = _state
    # Only parameters-like leaves, and only while grad mode records the graph: the cached copy is
    # a graph node whose backward feeds the float32 leaf.
    cacheable = st.cache_enabled and t.requires_grad and t._creator is None and is_grad_enabled()
    if cacheable:
        hit = st.cache.get(id(t))
        # Valid while it is the same tensor holding the same array, and its Cast node has not been
        # consumed by a backward (after which an optimizer may have updated the weight in place).
        if (hit is not None and hit[0]() is t and hit[1] is t.data and hit[2].data.dtype == dtype
                and not hit[2]._creator._freed):
            return hit[2]
    out = Cast(dtype).apply(t)
    if cacheable:
        st.cache[id(t)] = (weakref.ref(t), t.data, out)
    return out


def cast_inputs(fn, inputs):
    """The inputs of Function ``fn`` as autocast wants them (called by Function.apply while
    ``active``); the same tuple when nothing changes."""
    st = _state
    if st.casting or not st.modes:
        return inputs
    from pyneural.backend import device_of
    kind = device_of(inputs[0].data).type
    low = st.modes.get(kind)
    if low is None:
        return inputs
    name = type(fn).__name__
    st.casting = True
    try:
        n = _LOWER.get(name)
        if n is not None:
            return tuple(_cast(x, low) if i < n and x.data.dtype == _F32 else x for i, x in enumerate(inputs))
        if name in _FP32:
            return tuple(_cast(x, _F32) if is_low_precision(x.data.dtype) else x for x in inputs)
        if len(inputs) > 1:  # promote a 16-bit operand meeting a float32 one
            dtypes = {x.data.dtype for x in inputs}
            if _F32 in dtypes and any(is_low_precision(d) for d in dtypes):
                return tuple(_cast(x, _F32) if is_low_precision(x.data.dtype) else x for x in inputs)
        return inputs
    finally:
        st.casting = False


class GradScaler:
    """Dynamic loss scaling for float16 training, as ``torch.amp.GradScaler``::

        scaler = pn.amp.GradScaler("cuda")
        with pn.autocast("cuda", dtype=pn.float16):
            loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)            # optional: to clip the true gradients
        scaler.step(opt)                # skipped when a gradient is inf/NaN
        scaler.update()

    ``step`` reads one flag from the device (the only host/device synchronisation it adds)."""

    def __init__(self, device="cuda", init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5,
                 growth_interval=2000, enabled=True):
        if not growth_factor > 1.0:
            raise ValueError(f"GradScaler: growth_factor must be > 1, got {growth_factor}")
        if not 0.0 < backoff_factor < 1.0:
            raise ValueError(f"GradScaler: backoff_factor must be in (0, 1), got {backoff_factor}")
        if not (isinstance(growth_interval, int) and growth_interval > 0):
            raise ValueError(f"GradScaler: growth_interval must be a positive int, got {growth_interval!r}")
        if not init_scale > 0:
            raise ValueError(f"GradScaler: init_scale must be > 0, got {init_scale}")
        self.device = _device_type(device)
        self._enabled = bool(enabled)
        self._scale = float(init_scale)
        self._growth_factor, self._backoff_factor = float(growth_factor), float(backoff_factor)
        self._growth_interval = growth_interval
        self._growth_tracker = 0
        self._per_optimizer = {}  # id(optimizer) -> {"unscaled": bool, "found_inf": bool or None, "stepped"}

    # -- scaling ---------------------------------------------------------------------------
    def scale(self, outputs):
        """``outputs`` (a Tensor, or a list/tuple of them) multiplied by the current scale."""
        if not self._enabled:
            return outputs
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(o) for o in outputs)
        return outputs * self._scale

    def _state(self, optimizer):
        return self._per_optimizer.setdefault(id(optimizer), {"unscaled": False, "found_inf": None,
                                                              "stepped": False})

    def unscale_(self, optimizer):
        """Divide ``optimizer``'s gradients by the scale, in place, noting whether any is inf/NaN."""
        if not self._enabled:
            return
        st = self._state(optimizer)
        if st["unscaled"]:
            raise RuntimeError("GradScaler.unscale_() has already been called on this optimizer since the last "
                               "update()")
        if st["stepped"]:
            raise RuntimeError("GradScaler.unscale_() is being called after step(): call update() first")
        from pyneural.tensor import get_array_module
        inv = 1.0 / self._scale
        flags = []
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.data
                xp = get_array_module(g)
                g *= g.dtype.type(inv)
                flags.append(xp.isfinite(g).all())
        st["found_inf"] = flags  # device booleans, read once in step()
        st["unscaled"] = True

    def _found_inf(self, st):
        flags = st["found_inf"]
        if isinstance(flags, list):
            st["found_inf"] = not all(bool(f) for f in flags)
        return st["found_inf"]

    def step(self, optimizer, *args, **kwargs):
        """``optimizer.step()`` unless the (unscaled) gradients hold an inf or NaN."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        st = self._state(optimizer)
        if st["stepped"]:
            raise RuntimeError("GradScaler.step() has already been called since the last update()")
        if not st["unscaled"]:
            self.unscale_(optimizer)
        result = None
        if not self._found_inf(st):
            result = optimizer.step(*args, **kwargs)
        st["stepped"] = True
        return result

    def update(self, new_scale=None):
        """Back off the scale if any step of this iteration saw inf/NaN, else count towards growth."""
        if not self._enabled:
            return
        if new_scale is not None:
            self._scale = float(new_scale.item() if hasattr(new_scale, "item") else new_scale)
            self._growth_tracker = 0
        else:
            seen = [self._found_inf(st) for st in self._per_optimizer.values() if st["unscaled"]]
            if not seen:
                raise RuntimeError("GradScaler.update(): no inf checks were recorded: call step() (or unscale_()) "
                                   "first")
            if any(seen):
                self._scale *= self._backoff_factor
                self._growth_tracker = 0
            else:
                self._growth_tracker += 1
                if self._growth_tracker == self._growth_interval:
                    self._scale *= self._growth_factor
                    self._growth_tracker = 0
        self._per_optimizer.clear()

    # -- introspection, checkpoints --------------------------------------------------------
    def get_scale(self):
        return self._scale if self._enabled else 1.0

    def is_enabled(self):
        return self._enabled

    def get_growth_factor(self):
        return self._growth_factor

    def get_backoff_factor(self):
        return self._backoff_factor

    def get_growth_interval(self):
        return self._growth_interval

    def state_dict(self):
        if not self._enabled:
            return {}
        return {"scale": self._scale, "growth_factor": self._growth_factor, "backoff_factor": self._backoff_factor,
                "growth_interval": self._growth_interval, "_growth_tracker": self._growth_tracker}

    def load_state_dict(self, state):
        if not self._enabled:
            return
        if not state:
            raise RuntimeError("GradScaler.load_state_dict: the state is empty (saved from a disabled scaler?)")
        self._scale = float(state["scale"])
        self._growth_factor = float(state["growth_factor"])
        self._backoff_factor = float(state["backoff_factor"])
        self._growth_interval = int(state["growth_interval"])
        self._growth_tracker = int(state["_growth_tracker"])
