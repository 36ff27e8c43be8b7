"""Sequential, ModuleList and ModuleDict.

Sequential runs its layers in order, except that a Linear, Conv2d or BatchNorm immediately followed
by a ReLU runs as one op with the ReLU fused into the layer's epilogue (``forward_relu``): one pass
over the output instead of two, and one graph node fewer. Only exact Linear/Conv2d/ReLU types
fuse, so a subclass with its own forward is always called as written.
"""
from collections import OrderedDict
from collections.abc import Mapping

from pyneural.nn.activation import ReLU
from pyneural.nn.conv import Conv2d
from pyneural.nn.linear import Linear
from pyneural.nn.module import Module
from pyneural.nn.normalization import BatchNorm1d, BatchNorm2d

_FUSIBLE = (Linear, Conv2d, BatchNorm1d, BatchNorm2d)


def _plain(module, cls):
    return type(module) is cls and "forward" not in module.__dict__


class Sequential(Module):
    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, m in modules[0].items():
                self.add_module(name, m)
        else:
            for i, m in enumerate(modules):
                if not isinstance(m, Module):
                    raise TypeError(f"Sequential: argument {i} is a {type(m).__name__}, not a Module")
                self.add_module(str(i), m)
        self.__dict__["_plan"] = None
        self.__dict__["_plan_key"] = None

    def _build_plan(self, key):
        steps, i = [], 0
        while i < len(key):
            m = key[i]
            nxt = key[i + 1] if i + 1 < len(key) else None
            if any(_plain(m, cls) for cls in _FUSIBLE) and nxt is not None and _plain(nxt, ReLU):
                steps.append(m.forward_relu)
                i += 2
            else:
                steps.append(m)
                i += 1
        self.__dict__["_plan"] = steps
        self.__dict__["_plan_key"] = key
        return steps

    def forward(self, x):
        key = tuple(self._modules.values())
        plan = self._plan if key == self._plan_key else self._build_plan(key)
        for step in plan:
            x = step(x)
        return x

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return Sequential(OrderedDict(list(self._modules.items())[idx]))
        return list(self._modules.values())[self._index(idx)]

    def __setitem__(self, idx, module):
        name = list(self._modules.keys())[self._index(idx)]
        setattr(self, name, module)

    def __delitem__(self, idx):
        name = list(self._modules.keys())[self._index(idx)]
        delattr(self, name)

    def _index(self, idx):
        n = len(self._modules)
        if not -n <= idx < n:
            raise IndexError(f"Sequential index {idx} out of range for {n} modules")
        return idx % n

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module):
        self.add_module(str(len(self._modules)), module)
        return self


class ModuleList(Module):
    """A list of modules whose parameters the parent module sees."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def _index(self, idx):
        n = len(self._modules)
        if not -n <= idx < n:
            raise IndexError(f"ModuleList index {idx} out of range for {n} modules")
        return idx % n

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return ModuleList(list(self._modules.values())[idx])
        return self._modules[str(self._index(idx))]

    def __setitem__(self, idx, module):
        setattr(self, str(self._index(idx)), module)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module):
        self.add_module(str(len(self._modules)), module)
        return self

    def extend(self, modules):
        for m in modules:
            self.append(m)
        return self

    def __iadd__(self, modules):
        return self.extend(modules)

    def insert(self, index, module):
        """Put ``module`` before position ``index``; the later ones move up (their names too)."""
        modules = list(self._modules.values())
        n = len(modules)
        index = min(max(index + n if index < 0 else index, 0), n)
        self._renumber(modules[:index] + [module] + modules[index:])

    def __delitem__(self, idx):
        modules = list(self._modules.values())
        if isinstance(idx, slice):
            del modules[idx]
        else:
            del modules[self._index(idx)]
        self._renumber(modules)

    def _renumber(self, modules):
        """Register ``modules`` as "0", "1", ... (PyTorch's names stay contiguous after a change)."""
        for name in list(self._modules):
            delattr(self, name)
        for m in modules:
            self.append(m)

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleList is a container: iterate over it in your forward()")


class ModuleDict(Module):
    """Modules by name, in insertion order; the parent module sees their parameters under
    "<dict name>.<key>." as in PyTorch."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key):
        if key not in self._modules:
            raise KeyError(f"ModuleDict has no module {key!r} (keys: {list(self._modules)})")
        return self._modules[key]

    def __setitem__(self, key, module):
        self.add_module(key, module)

    def __delitem__(self, key):
        self[key]  # a KeyError naming the keys when absent
        delattr(self, key)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, key):
        return key in self._modules

    def keys(self):
        return self._modules.keys()

    def items(self):
        return self._modules.items()

    def values(self):
        return self._modules.values()

    def pop(self, key):
        module = self[key]
        del self[key]
        return module

    def clear(self):
        for key in list(self._modules):
            delattr(self, key)

    def update(self, modules):
        """Add (or replace) modules from a mapping or an iterable of (name, module) pairs."""
        pairs = modules.items() if isinstance(modules, (Mapping, ModuleDict)) else modules
        for i, pair in enumerate(pairs):
            try:
                key, module = pair
            except (TypeError, ValueError):
                raise TypeError(f"ModuleDict.update: element {i} is not a (name, module) pair: {pair!r}") from None
            self[key] = module

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleDict is a container: index it in your forward()")
