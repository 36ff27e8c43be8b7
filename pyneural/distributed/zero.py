"""Sharded optimizer state (ZeRO stage 1): each of N data-parallel ranks keeps the optimizer
state of only 1/N of the parameters.

``ZeroRedundancyOptimizer(model.parameters(), optim.Adam, lr=1e-3)`` wraps any elementwise
optimizer (SGD, Adam, AdamW, RMSprop, Adagrad, ...). Per parameter group, the parameters are
viewed as one flat vector, padded to a multiple of N and cut into N equal contiguous shards;
rank r owns shard r. ``step()``:

1. **reduce-scatter** the flat gradient: rank r receives the sum over ranks of shard r only
   (``deterministic=True``: an allgather and a rank-order sum instead, bitwise reproducible and
   bitwise equal to DistributedDataParallel(deterministic=True) with the unsharded optimizer),
   divided by N;
2. the wrapped optimizer updates shard r, a 1-D parameter, with its 1/N of the state (elementwise
   updates do not care where a shard starts or ends: the same arithmetic as the unsharded step);
3. **all-gather** the updated shards into every rank's parameters.

Communication per step equals one allreduce (a reduce-scatter plus an all-gather), and optimizer
memory per rank drops by N (``state_nbytes()``). The gradients must not already be averaged: use it
instead of DistributedDataParallel's reduction (``reduce_gradients=False`` takes gradients that are
already averaged, e.g. by DDP, and skips step 1's communication).

Checkpoints. ``state_dict()`` (collective: every rank calls it) gathers the shards into the
unsharded optimizer's own format (state per parameter, in parameter order), so a checkpoint is the
same whatever the rank count: it loads into a ZeroRedundancyOptimizer on any number of ranks, or
into the plain optimizer in one process, and vice versa.
"""
import numpy as np

from .. import backend
from ..nn.module import Parameter
from ..tensor import wrap
from ._mpi import import_mpi
from .collectives import allgather, run
from .comm import get_world, init, is_initialized


class _Shard:
    """One parameter group, flattened: its parameters' offsets and this rank's slice."""

    def __init__(self, params, size, rank):
        self.params = params
        self.sizes = [p.data.size for p in params]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64).tolist()
        total = self.offsets[-1]
        self.chunk = -(-total // size)  # ceil: shards of equal length, the last padded with zeros
        self.padded = self.chunk * size
        self.lo, self.hi = rank * self.chunk, (rank + 1) * self.chunk
        self.dtype = params[0].data.dtype

    def flatten(self, arrays):
        flat = np.zeros(self.padded, dtype=self.dtype)
        for a, o, n in zip(arrays, self.offsets, self.sizes):
            if a is not None:
                flat[o:o + n] = a.reshape(-1)
        return flat

    def slice(self, arrays):
        """This rank's part [lo, hi) of the flattened ``arrays``, without building the whole vector."""
        out = np.zeros(self.chunk, dtype=self.dtype)
        for a, o, n in zip(arrays, self.offsets, self.sizes):
            lo, hi = max(o, self.lo), min(o + n, self.hi)
            if lo < hi:
                out[lo - self.lo:hi - self.lo] = a.reshape(-1)[lo - o:hi - o]
        return out

    def unflatten(self, flat):
        return [flat[o:o + n].reshape(p.data.shape) for p, o, n in zip(self.params, self.offsets, self.sizes)]


class ZeroRedundancyOptimizer:
    """``optimizer_class`` over this rank's shard of ``params`` (a list of parameters or of
    param-group dicts); ``**defaults`` go to ``optimizer_class``. See the module doc."""

    def __init__(self, params, optimizer_class, world=None, deterministic=False, reduce_gradients=True,
                 **defaults):
        self.world = world if world is not None else (get_world() if is_initialized() else init())
        groups = list(params)
        if not groups:
            raise ValueError("ZeroRedundancyOptimizer: got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.deterministic, self.reduce_gradients = bool(deterministic), bool(reduce_gradients)
        size, rank = self.world.size, self.world.rank
        self._shards, inner_groups = [], []
        for i, group in enumerate(groups):
            plist = list(group["params"])
            for p in plist:
                if not isinstance(p.data, np.ndarray):
                    raise TypeError(f"ZeroRedundancyOptimizer: parameters must be host (numpy) arrays; "
                                    f"group {i} has one on {backend.device_of(p.data)}")
            if len({p.data.dtype for p in plist}) != 1:
                raise TypeError(f"ZeroRedundancyOptimizer: the parameters of group {i} must share one dtype, "
                                f"got {sorted({str(p.data.dtype) for p in plist})}")
            shard = _Shard(plist, size, rank)
            piece = Parameter(shard.slice([p.data for p in plist]))
            shard.param = piece
            self._shards.append(shard)
            inner_groups.append(dict({k: v for k, v in group.items() if k != "params"}, params=[piece]))
        self.optim = optimizer_class(inner_groups, **defaults)
        self.optimizer_class = optimizer_class

    # -- what schedulers, clipping and the trainer see -------------------------------------
    @property
    def param_groups(self):
        """The wrapped optimizer's groups (hyperparameters: a scheduler's lr changes reach it)."""
        return self.optim.param_groups

    @property
    def defaults(self):
        return self.optim.defaults

    def zero_grad(self, set_to_none=True):
        for shard in self._shards:
            for p in shard.params:
                if set_to_none or p.grad is None:
                    p.grad = None
                else:
                    p.grad.data[...] = 0

    # -- the step ----------------------------------------------------------------------------
    def _reduce_scatter(self, shard):
        MPI = import_mpi()
        flat = shard.flatten([None if p.grad is None else p.grad.data for p in shard.params])
        if not self.reduce_gradients:
            return flat[shard.lo:shard.hi].copy()
        if self.deterministic:
            rows = allgather(self.world, flat, what="allgather of gradients (ZeRO)")
            total = rows[0][shard.lo:shard.hi].copy()
            for row in rows[1:]:
                total += row[shard.lo:shard.hi]
        else:
            total = np.empty(shard.chunk, dtype=flat.dtype)
            run(self.world, lambda: self.world.comm.Ireduce_scatter_block(flat, total, op=MPI.SUM),
                "reduce-scatter of gradients (ZeRO)")
        total /= self.world.size
        return total

    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for shard in self._shards:
            shard.param.grad = wrap(self._reduce_scatter(shard))
            # the shard starts from the parameters' current values (a checkpoint may have been loaded
            # into the model, or the parameters broadcast, since the last step)
            shard.param.data[...] = shard.slice([p.data for p in shard.params])
        self.optim.step()
        for shard in self._shards:
            full = np.empty(shard.padded, dtype=shard.dtype)
            piece = np.ascontiguousarray(shard.param.data)
            run(self.world, lambda: self.world.comm.Iallgather(piece, full), "allgather of parameters (ZeRO)")
            for p, value in zip(shard.params, shard.unflatten(full)):
                p.data[...] = value
        return loss

    # -- memory and checkpoints --------------------------------------------------------------
    def state_nbytes(self):
        """Bytes of optimizer state held by this rank."""
        return int(sum(v.nbytes for st in self.optim.state.values() for v in st.values() if hasattr(v, "nbytes")))

    def state_dict(self):
        """The unsharded optimizer's state_dict (collective: every rank calls it, every rank gets it)."""
        inner = self.optim.state_dict()
        state, groups, index = {}, [], 0
        for g, (shard, saved) in enumerate(zip(self._shards, inner["param_groups"])):
            mine = inner["state"].get(g, {})
            keys = sorted(mine)
            per_param = [dict() for _ in shard.params]
            for k in keys:
                v = mine[k]
                if isinstance(v, np.ndarray) and v.shape == (shard.chunk,):
                    full = allgather(self.world, np.ascontiguousarray(v), what=f"allgather of optimizer state {k!r}")
                    for d, part in zip(per_param, shard.unflatten(full.reshape(-1))):
                        d[k] = part.copy()
                else:
                    for d in per_param:
                        d[k] = v
            params = []
            for d in per_param:
                if d:
                    state[index] = d
                params.append(index)
                index += 1
            groups.append(dict({k: v for k, v in saved.items() if k != "params"}, params=params))
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Take this rank's shard of an unsharded state_dict (from any rank count, or a plain
        optimizer)."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self._shards):
            raise ValueError(f"ZeroRedundancyOptimizer.load_state_dict: the snapshot has {len(saved_groups)} "
                             f"parameter groups, this optimizer {len(self._shards)}")
        inner = {"state": {}, "param_groups": []}
        saved_state = {int(k): v for k, v in state_dict["state"].items()}
        for g, (shard, saved) in enumerate(zip(self._shards, saved_groups)):
            if len(saved["params"]) != len(shard.params):
                raise ValueError(f"ZeroRedundancyOptimizer.load_state_dict: group {g} has {len(saved['params'])} "
                                 f"parameters in the snapshot, {len(shard.params)} here")
            entries = [saved_state.get(int(i), {}) for i in saved["params"]]
            keys = sorted({k for e in entries for k in e})
            mine = {}
            for k in keys:
                values = [e.get(k) for e in entries]
                if any(isinstance(v, np.ndarray) or backend.is_device_array(v) for v in values):
                    arrays = []
                    for v, p in zip(values, shard.params):
                        v = np.zeros(p.data.shape, shard.dtype) if v is None else backend.to_device(v, "cpu")
                        if v.shape != p.data.shape:
                            raise ValueError(f"ZeroRedundancyOptimizer.load_state_dict: state {k!r} of a parameter "
                                             f"has shape {v.shape}, the parameter {p.data.shape}")
                        arrays.append(v)
                    mine[k] = shard.flatten(arrays)[shard.lo:shard.hi].copy()
                else:
                    mine[k] = next(v for v in values if v is not None)
            if mine:
                inner["state"][g] = mine
            inner["param_groups"].append(dict({k: v for k, v in saved.items() if k != "params"}, params=[g]))
        self.optim.load_state_dict(inner)
