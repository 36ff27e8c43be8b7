"""Start-of-training agreement: every rank holds the same model, with rank 0's values.

``check_model_consistency`` compares parameter and buffer names, shapes and dtypes across ranks
and raises on every rank alike, naming the first difference: a rank built with a different
``--width`` would otherwise get through the broadcast with garbage (or hang in it, when the byte
counts differ). ``broadcast_parameters`` then copies rank 0's values everywhere, so that ranks
that initialised with different seeds still start from one model.

Both read a module through ``named_parameters()`` and, if it has one, ``named_buffers()``;
entries may be Tensors (their ``.data`` is used) or bare arrays.
"""
import json

import numpy as np

from .collectives import allgather_bytes, bcast_
from .transport import array_module, make_wire


def _array(x):
    from ..tensor import Tensor
    return x.data if isinstance(x, Tensor) else x


def named_state(module):
    """``[(kind, name, array)]`` for the parameters, then the buffers, in module order."""
    state = [("parameter", name, _array(p)) for name, p in module.named_parameters()]
    if hasattr(module, "named_buffers"):
        state += [("buffer", name, _array(b)) for name, b in module.named_buffers()]
    return state


def _describe(entry):
    kind, name, shape, dtype = entry
    return f"{kind} '{name}' {tuple(shape)} {dtype}"


def first_mismatch(reference, other, other_rank):
    """The message naming the first difference between rank 0's signature and another rank's,
    or None when they agree."""
    for i, (a, b) in enumerate(zip(reference, other)):
        if a != b:
            if a[:2] == b[:2]:
                what = "shape" if a[2] != b[2] else "dtype"
                return (f"{a[0]} '{a[1]}' differs in {what}: {tuple(a[2])} {a[3]} on rank 0, "
                        f"{tuple(b[2])} {b[3]} on rank {other_rank}")
            return (f"entry {i} of the model is {_describe(a)} on rank 0 but {_describe(b)} "
                    f"on rank {other_rank}")
    if len(reference) != len(other):
        longer, shorter = (0, other_rank) if len(reference) > len(other) else (other_rank, 0)
        extra = (reference if longer == 0 else other)[min(len(reference), len(other))]
        return (f"rank {longer} has {max(len(reference), len(other))} parameters and buffers, rank "
                f"{shorter} has {min(len(reference), len(other))}; the first without a counterpart "
                f"is {_describe(extra)} on rank {longer}")
    return None


def check_model_consistency(world, module):
    """Raise ValueError (on every rank) unless all ranks hold parameters and buffers with the
    same names, shapes and dtypes, in the same order."""
    mine = [[kind, name, list(a.shape), str(a.dtype)] for kind, name, a in named_state(module)]
    payloads = allgather_bytes(world, json.dumps(mine).encode(), "parameter check (names, shapes, dtypes)")
    signatures = [json.loads(p) for p in payloads]
    for rank in range(1, world.size):
        message = first_mismatch(signatures[0], signatures[rank], rank)
        if message is not None:
            error = ValueError(f"distributed: the ranks do not hold the same model: {message}")
            error.raised_on_every_rank = True
            raise error


def broadcast_arrays(world, arrays, root=0, what="broadcast"):
    """Overwrite ``arrays`` on every rank with ``root``'s values, in place. Arrays of one dtype
    travel together in one flat message."""
    by_dtype = {}
    for a in arrays:
        by_dtype.setdefault((np.dtype(a.dtype), array_module(a)), []).append(a)
    for (dtype, xp), group in by_dtype.items():
        flat = xp.concatenate([a.reshape(-1) for a in group])
        wire = make_wire(flat, device_direct=False)
        bcast_(world, wire.to_wire(), root=root, what=f"{what} ({len(group)} {dtype} arrays)")
        wire.from_wire()
        if world.rank != root:
            offset = 0
            for a in group:
                a[...] = flat[offset:offset + a.size].reshape(a.shape)
                offset += a.size


def broadcast_parameters(world, module, root=0):
    """Give every rank ``root``'s parameters and buffers."""
    broadcast_arrays(world, [a for _, _, a in named_state(module)], root, "broadcast of parameters and buffers")


def broadcast_buffers(world, module, root=0):
    """Give every rank ``root``'s buffers (running statistics drift apart between ranks)."""
    buffers = [a for kind, _, a in named_state(module) if kind == "buffer"]
    if buffers:
        broadcast_arrays(world, buffers, root, "broadcast of buffers")
