"""Module and Parameter: the bookkeeping every layer shares (registration of parameters,
buffers and submodules; state_dict; train/eval; the printed tree).

Registered parameters, buffers and submodules live both in their registry dicts and in the
instance ``__dict__``: ``__setattr__`` keeps the two in step, and reading ``self.weight`` in a
forward pass is a plain attribute lookup (PyTorch instead routes every such read through a
Python-level ``__getattr__``, which costs about as much as a small op at batch 32).
"""
from collections import OrderedDict, namedtuple

import numpy as np

from pyneural.tensor import Tensor, get_array_module, is_floating_dtype


class Parameter(Tensor):
    """A Tensor that is a module's learnable parameter: ``requires_grad`` is on by default and
    assigning one to a Module attribute registers it."""
    __slots__ = ()

    def __init__(self, data, requires_grad=True):
        if isinstance(data, Tensor):
            data = data.data
        elif not isinstance(data, np.ndarray) and get_array_module(data) is np:
            data = np.asarray(data, dtype=np.float32)
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()

    def __reduce_ex__(self, protocol):
        return (Parameter, (self.data, self.requires_grad))


IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def _addindent(text, spaces):
    lines = text.split("\n")
    if len(lines) == 1:
        return text
    return lines[0] + "\n" + "\n".join(" " * spaces + line for line in lines[1:])


class Module:
    """Base class of every layer and model. Subclasses call ``super().__init__()`` first, assign
    Parameters, submodules and buffers as attributes, and implement ``forward``."""

    def __init__(self):
        d = self.__dict__
        d["_parameters"] = OrderedDict()
        d["_buffers"] = OrderedDict()
        d["_non_persistent"] = set()
        d["_modules"] = OrderedDict()
        d["training"] = True

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- registration -----------------------------------------------------------------------
    def _registries(self, name):
        try:
            return self.__dict__["_parameters"], self.__dict__["_buffers"], self.__dict__["_modules"]
        except KeyError:
            raise AttributeError(f"cannot assign {name!r} before Module.__init__() has run: call "
                                 f"super().__init__() first in {type(self).__name__}.__init__") from None

    def __setattr__(self, name, value):
        if isinstance(value, Parameter):
            params, buffers, modules = self._registries(name)
            buffers.pop(name, None)
            modules.pop(name, None)
            params[name] = value
        elif isinstance(value, Module):
            params, buffers, modules = self._registries(name)
            params.pop(name, None)
            buffers.pop(name, None)
            modules[name] = value
        else:
            d = self.__dict__
            params, buffers, modules = d.get("_parameters"), d.get("_buffers"), d.get("_modules")
            if params is not None and name in params:
                if value is not None:
                    raise TypeError(f"cannot assign {type(value).__name__} as parameter {name!r} of "
                                    f"{type(self).__name__} (a Parameter or None is expected)")
                params[name] = None
            elif buffers is not None and name in buffers:
                if value is not None and not isinstance(value, Tensor):
                    raise TypeError(f"cannot assign {type(value).__name__} as buffer {name!r} of "
                                    f"{type(self).__name__} (a Tensor or None is expected)")
                buffers[name] = value
            elif modules is not None and name in modules:
                if value is not None:
                    raise TypeError(f"cannot assign {type(value).__name__} as submodule {name!r} of "
                                    f"{type(self).__name__} (a Module or None is expected)")
                modules[name] = None
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        for registry in ("_parameters", "_buffers", "_modules"):
            self.__dict__[registry].pop(name, None)
        self._non_persistent.discard(name)
        object.__delattr__(self, name)

    def register_parameter(self, name, param):
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter: {name!r} must be a Parameter or None, got {type(param).__name__}")
        self._check_name(name)
        self._parameters[name] = param
        object.__setattr__(self, name, param)

    def register_buffer(self, name, tensor, persistent=True):
        """A non-learnable tensor saved in the state_dict (unless ``persistent=False``), e.g.
        BatchNorm's running statistics."""
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"register_buffer: {name!r} must be a Tensor or None, got {type(tensor).__name__}")
        self._check_name(name)
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent.discard(name)
        else:
            self._non_persistent.add(name)
        object.__setattr__(self, name, tensor)

    def add_module(self, name, module):
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module: {name!r} must be a Module or None, got {type(module).__name__}")
        self._check_name(name)
        self._modules[name] = module
        object.__setattr__(self, name, module)

    register_module = add_module

    def _check_name(self, name):
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"{type(self).__name__}: invalid attribute name {name!r} (non-empty, no '.')")

    # -- traversal ----------------------------------------------------------------------------
    def named_modules(self, memo=None, prefix=""):
        if memo is None:
            memo = set()
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, m in self._modules.items():
            if m is not None:
                yield from m.named_modules(memo, prefix + ("." if prefix else "") + name)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        seen = set()
        for name, m in self._modules.items():
            if m is not None and id(m) not in seen:
                seen.add(id(m))
                yield name, m

    def children(self):
        for _, m in self.named_children():
            yield m

    def _named_members(self, registry, prefix, recurse):
        seen = set()
        modules = self.named_modules(prefix=prefix) if recurse else [(prefix, self)]
        for mod_prefix, m in modules:
            for name, t in getattr(m, registry).items():
                if t is None or id(t) in seen:
                    continue
                seen.add(id(t))
                yield mod_prefix + ("." if mod_prefix else "") + name, t

    def named_parameters(self, prefix="", recurse=True):
        return self._named_members("_parameters", prefix, recurse)

    def parameters(self, recurse=True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix="", recurse=True):
        return self._named_members("_buffers", prefix, recurse)

    def buffers(self, recurse=True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def apply(self, fn):
        """Call ``fn(module)`` on every submodule (children first) and on self; returns self."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # -- modes and gradients --------------------------------------------------------------------
    def train(self, mode=True):
        if not isinstance(mode, bool):
            raise TypeError(f"train(): mode must be a bool, got {type(mode).__name__}")
        for m in self.modules():
            m.__dict__["training"] = mode
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none=True):
        for p in self.parameters():
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.data[...] = 0

    # -- device / dtype -------------------------------------------------------------------
    def to(self, *args, dtype=None, device=None, memory_format=None):
        """``to(device)``, ``to(dtype)`` or both, in place: every parameter, gradient and buffer moves
        (or, for a dtype, floating ones are cast); the Parameter objects stay the same, so an
        optimizer made before keeps working. Returns the module."""
        from pyneural import backend
        for a in args:
            if isinstance(a, (str, backend.device)):
                device = a
            else:
                dtype = a
        if device is not None:
            dev = backend.device(device)
            backend.for_device(dev)  # raises when the device cannot be used here
            for t in list(self.parameters()) + list(self.buffers()):
                t.data = backend.to_device(t.data, dev)
                if t.grad is not None:
                    t.grad.data = backend.to_device(t.grad.data, dev)
        if dtype is not None:
            dtype = np.dtype(dtype)
            for t in list(self.parameters()) + list(self.buffers()):
                if is_floating_dtype(t.data.dtype) and t.data.dtype != dtype:
                    t.data = t.data.astype(dtype)
                    if t.grad is not None:
                        t.grad.data = t.grad.data.astype(dtype)
        if memory_format is not None and memory_format is not backend.preserve_format:
            # 4-D parameters (convolution weights) and their gradients change layout; others keep theirs
            for t in list(self.parameters()) + list(self.buffers()):
                if t.data.ndim == 4:
                    t.data = backend.to_memory_format(t.data, memory_format)
                    if t.grad is not None:
                        t.grad.data = backend.to_memory_format(t.grad.data, memory_format)
        return self

    def cpu(self):
        return self.to("cpu")

    def cuda(self, device=None):
        return self.to("cuda" if device is None else (f"cuda:{device}" if isinstance(device, int) else device))

    def float(self):
        return self.to(dtype=np.float32)

    def double(self):
        return self.to(dtype=np.float64)

    # -- state ----------------------------------------------------------------------------------
    def _state_tensors(self):
        """(name, Tensor) for everything state_dict saves: each module's parameters, then its
        persistent buffers, modules in definition order."""
        out = []
        for prefix, m in self.named_modules():
            dot = prefix + "." if prefix else ""
            for name, p in m._parameters.items():
                if p is not None:
                    out.append((dot + name, p))
            for name, b in m._buffers.items():
                if b is not None and name not in m._non_persistent:
                    out.append((dot + name, b))
        return out

    def state_dict(self):
        """OrderedDict of name -> array (a copy, on the tensor's device: numpy on the CPU) for every
        parameter and persistent buffer."""
        state = OrderedDict()
        for name, t in self._state_tensors():
            state[name] = get_array_module(t.data).array(t.data, copy=True)
        return state

    def load_state_dict(self, state_dict, strict=True):
        """Copy the arrays of ``state_dict`` into this module's parameters and buffers, in place.

        Raises RuntimeError naming every missing key, unexpected key (when ``strict``) and
        mis-shaped entry; nothing is copied in that case. Returns (missing_keys, unexpected_keys).
        """
        if not isinstance(state_dict, dict):
            raise TypeError(f"load_state_dict: expected a dict of name -> array, got {type(state_dict).__name__}")
        targets = OrderedDict(self._state_tensors())
        missing = [k for k in targets if k not in state_dict]
        unexpected = [k for k in state_dict if k not in targets]
        arrays, mismatched = {}, []
        for name, t in targets.items():
            if name not in state_dict:
                continue
            value = state_dict[name]
            arr = value.data if isinstance(value, Tensor) else value
            if not hasattr(arr, "shape"):
                arr = np.asarray(arr)
            if tuple(arr.shape) != t.data.shape:
                mismatched.append(f"{name}: checkpoint shape {tuple(arr.shape)}, model shape {t.data.shape}")
            else:
                arrays[name] = arr
        problems = []
        if strict and missing:
            problems.append("missing key(s): " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected key(s): " + ", ".join(unexpected))
        if mismatched:
            problems.append("size mismatch for " + "; ".join(mismatched))
        if problems:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n  "
                               + "\n  ".join(problems))
        from pyneural import backend
        for name, arr in arrays.items():
            data = targets[name].data
            data[...] = backend.to_device(arr, backend.device_of(data))  # a CPU checkpoint loads onto a GPU
        return IncompatibleKeys(missing, unexpected)

    # -- printing -------------------------------------------------------------------------------
    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = []
        extra = self.extra_repr()
        if extra:
            lines.extend(extra.split("\n"))
        for name, m in self._modules.items():
            lines.append(f"({name}): " + _addindent(repr(m), 2))
        main = type(self).__name__ + "("
        if not lines:
            return main + ")"
        if len(lines) == 1 and not self._modules:
            return main + lines[0] + ")"
        return main + "\n" + "\n".join("  " + line for line in lines) + "\n)"
