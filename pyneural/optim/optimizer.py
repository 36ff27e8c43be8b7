"""The Optimizer base class: parameter groups, per-parameter state, zero_grad, state_dict.

Updates happen in place on each parameter's ``.data`` array (other code, e.g. a distributed
bucket or a module buffer, may hold views of it), so an optimizer never rebinds ``p.data``.

State lives in ``self.state[id(p)]`` (a dict of arrays and plain scalars), on the parameter's
device: the optimizers allocate it with the parameter's own array module. Keying by id rather
than by the parameter object keeps the optimizer independent of whether parameters are hashable;
the parameters themselves are kept alive by ``param_groups``, so ids stay valid.

``state_dict()`` replaces ids by each parameter's position in group order (as PyTorch does), and
holds only arrays (copies, on the state's device), ints, floats, bools, lists and dicts: a
checkpoint can store the arrays in an .npz and the rest as JSON. ``load_state_dict`` puts each
array on its parameter's device and dtype, as PyTorch does, so a CPU checkpoint resumes on a GPU.

Row-sparse gradients (``RowSparseGrad``, from ``nn.Embedding(sparse=True)``) go to
``_sparse_update(p, grad, state, group)`` instead, which SGD and Adam implement by updating only the
touched rows; their state keeps the dense layout (full-size tables), so state_dict is unchanged.
"""
import copy

import numpy as np

from pyneural import backend

from pyneural.functions.embedding import RowSparseGrad


def grad_array(p):
    """The gradient of ``p`` as a numpy array, or None. ``p.grad`` is a Tensor (or, tolerated,
    a bare array); for a RowSparseGrad this is its (U, D) values, which is what norms, scaling and
    zeroing need."""
    g = p.grad
    if g is None:
        return None
    return g.data if not isinstance(g, np.ndarray) else g


def _is_array(v):
    return isinstance(v, np.ndarray) or backend.is_device_array(v)


class Optimizer:
    """Base class. Subclasses pass their hyperparameter defaults, may validate/normalise a group
    in ``_check_group`` and implement ``_update(p, grad, state, group)``."""

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.state = {}
        self.param_groups = []
        self._scratch = {}
        if isinstance(params, np.ndarray) or hasattr(params, "data"):
            raise TypeError(f"{type(self).__name__}: params must be an iterable of parameters or of "
                            f"dicts, got a single {type(params).__name__}; wrap it in a list")
        groups = list(params)
        if not groups:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group):
        """Add a dict with a ``params`` list and optional per-group hyperparameters; missing
        hyperparameters come from the optimizer's defaults."""
        name = type(self).__name__
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"{name}: a parameter group must be a dict with a 'params' key, got {group!r}")
        params = group["params"]
        params = [params] if hasattr(params, "data") else list(params)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for i, p in enumerate(params):
            data = getattr(p, "data", None)
            if not isinstance(data, np.ndarray) and not backend.is_device_array(data):
                raise TypeError(f"{name}: params[{i}] must be a Tensor with a numpy or CUDA array, "
                                f"got {type(p).__name__}")
            if data.dtype not in (np.float32, np.float64):
                raise TypeError(f"{name}: params[{i}] must be float32 or float64, got {data.dtype} "
                                f"(shape {data.shape})")
            if id(p) in seen:
                raise ValueError(f"{name}: params[{i}] (shape {data.shape}) appears in more than one "
                                 f"parameter group or twice in one")
            seen.add(id(p))
        unknown = set(group) - set(self.defaults) - {"params", "initial_lr"}
        if unknown:
            raise ValueError(f"{name}: unknown hyperparameter(s) {sorted(unknown)} in a parameter group; "
                             f"known: {sorted(self.defaults)}")
        full = dict(self.defaults)
        full.update({k: v for k, v in group.items() if k != "params"})
        full["params"] = params
        self._check_group(full)
        self.param_groups.append(full)

    def _check_group(self, group):
        """Validate and normalise a group's hyperparameters in place (raise ValueError)."""

    def zero_grad(self, set_to_none=True):
        """Drop every gradient (``set_to_none``), or fill existing ones with zeros."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                else:
                    g = grad_array(p)
                    if g is not None:
                        g.fill(0)

    def step(self, closure=None):
        """Apply one update to every parameter that has a gradient. ``closure``, if given,
        re-evaluates the model and returns the loss, which is returned."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if isinstance(p.grad, RowSparseGrad):
                    if p.grad.shape != p.data.shape:
                        raise ValueError(f"{type(self).__name__}: row-sparse gradient of a {p.grad.shape} table "
                                         f"for a parameter of shape {p.data.shape}")
                    self._sparse_update(p.data, p.grad, self.state.setdefault(id(p), {}), group)
                    continue
                g = grad_array(p)
                if g is None:
                    continue
                if g.shape != p.data.shape:
                    raise ValueError(f"{type(self).__name__}: gradient shape {g.shape} does not match "
                                     f"parameter shape {p.data.shape}")
                self._update(p.data, g, self.state.setdefault(id(p), {}), group)
        return loss

    def _update(self, param, grad, state, group):
        raise NotImplementedError

    def _sparse_update(self, param, grad, state, group):
        """Update the rows ``grad.indices`` of ``param`` from a RowSparseGrad."""
        raise TypeError(f"{type(self).__name__} does not support row-sparse gradients "
                        f"(nn.Embedding(sparse=True)); use SGD or Adam, or sparse=False")

    def _scratch_like(self, a, slot=0):
        """A scratch view shaped like ``a``: one growing buffer per device and dtype shared by all
        parameters, so the update needs no temporaries per step. Views of different ``slot``s
        (0, 1, 2, ...) are disjoint; slots 0 and 1 are always there."""
        key = (backend.device_of(a), a.dtype)
        need = max(2, slot + 1) * a.size
        buf = self._scratch.get(key)
        if buf is None or buf.size < need:
            buf = self._scratch[key] = backend.xp(a).empty(max(need, 0 if buf is None else buf.size), dtype=a.dtype)
        return buf[slot * a.size:(slot + 1) * a.size].reshape(a.shape)

    def _regularized_grad(self, param, grad, group):
        """``grad`` negated under ``maximize`` and plus ``weight_decay * param`` (L2), as PyTorch's
        RMSprop/Adagrad/Adadelta form it; in scratch slot 1 when it differs from ``grad``."""
        wd, maximize = group["weight_decay"], group["maximize"]
        if wd == 0 and not maximize:
            return grad
        xp = backend.xp(param)
        g = self._scratch_like(param, 1)
        if wd == 0:
            return xp.negative(grad, out=g)
        xp.multiply(param, wd, out=g)
        if maximize:
            g -= grad
        else:
            g += grad
        return g

    def _check_numbers(self, group, keys, upper=None):
        """Each hyperparameter in ``keys`` a number >= 0 (and <= ``upper``), stored as a float."""
        for key in keys:
            value = group[key]
            if (isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not value >= 0
                    or (upper is not None and value > upper)):
                bound = f" and <= {upper}" if upper is not None else ""
                raise ValueError(f"{type(self).__name__}: {key} must be a number >= 0{bound}, got {value!r}")
            group[key] = float(value)

    def _ordered_params(self):
        return [p for group in self.param_groups for p in group["params"]]

    def state_dict(self):
        """A snapshot: ``{"state": {index: {...}}, "param_groups": [{..., "params": [index]}]}``.
        Arrays are copied (on their device), so later steps do not change a saved snapshot."""
        index = {id(p): i for i, p in enumerate(self._ordered_params())}
        groups = []
        for group in self.param_groups:
            saved = {k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items() if k != "params"}
            saved["params"] = [index[id(p)] for p in group["params"]]
            groups.append(saved)
        state = {}
        for pid, st in self.state.items():
            if pid in index:
                state[index[pid]] = {k: (v.copy() if _is_array(v) else v) for k, v in st.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore a snapshot taken by ``state_dict()`` of an optimizer built over parameters of
        the same shapes in the same groups. State keys may be ints or their strings (JSON). Each
        array goes to its parameter's device and dtype (a copy)."""
        name = type(self).__name__
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{name}.load_state_dict: snapshot has {len(saved_groups)} parameter groups, "
                             f"this optimizer has {len(self.param_groups)}")
        for i, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"{name}.load_state_dict: group {i} has {len(saved['params'])} parameters "
                                 f"in the snapshot, {len(group['params'])} here")
        params = self._ordered_params()
        new_state = {}
        for key, st in state_dict["state"].items():
            i = int(key)
            if not 0 <= i < len(params):
                raise ValueError(f"{name}.load_state_dict: state for parameter {i}, but there are "
                                 f"only {len(params)} parameters")
            p = params[i]
            restored = {}
            for k, v in st.items():
                if _is_array(v):
                    if v.shape != p.data.shape:
                        raise ValueError(f"{name}.load_state_dict: state '{k}' of parameter {i} has shape "
                                         f"{v.shape}, the parameter has shape {p.data.shape}")
                    restored[k] = backend.to_device(v, backend.device_of(p.data)).astype(p.data.dtype, copy=True)
                else:
                    restored[k] = copy.deepcopy(v)
            new_state[id(p)] = restored
        for saved, group in zip(saved_groups, self.param_groups):
            hyper = {k: copy.deepcopy(v) for k, v in saved.items() if k != "params"}
            hyper["params"] = group["params"]
            self._check_group(hyper)
            group.clear()
            group.update(hyper)
        self.state = new_state

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            hyper = ", ".join(f"{k}={v}" for k, v in sorted(group.items()) if k != "params")
            lines.append(f"  group {i}: {len(group['params'])} params, {hyper}")
        return "\n".join(lines + [")"])

