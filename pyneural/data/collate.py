"""Turning a list of samples into a batch, as ``torch.utils.data.default_collate`` does.

``default_collate(samples)`` keeps the structure of one sample and stacks what lies at each place
of it along a new first (batch) dimension:

* ``pn.Tensor`` and numpy arrays -> one ``pn.Tensor`` (their dtype kept);
* numpy scalars -> a 1-d Tensor of their dtype; Python ``int`` -> int64, ``float`` -> float64
  (PyTorch's choice: a Python float is a double), ``bool`` -> bool;
* ``str`` / ``bytes`` -> the list of them, unchanged;
* mappings -> the same mapping type, collated per key; namedtuples -> the same namedtuple;
  tuples -> a *list* (PyTorch does the same); other sequences -> the same type where it can be
  built from a list, else a list. Nesting is followed all the way down.

So a Dataset whose ``__getitem__`` returns ``(image_tensor, label_int)`` gives batches
``[images (N, C, H, W), labels int64 (N,)]``. Stacking copies into new arrays and records no
autograd history: a batch is data, not the result of an op.

``default_convert(sample)`` is the no-batching twin (``DataLoader(batch_size=None)``): numpy arrays
and scalars become Tensors, containers are followed, everything else (Python numbers too) is left
as it is.
"""
import collections.abc
import copy

import numpy as np

from ..tensor import Tensor

_NOT_NUMERIC = "OUSV"  # numpy dtype kinds of object, str, bytes and void arrays


def _bad_element(elem):
    return TypeError(f"default_collate: batch must contain tensors, numpy arrays, numbers, dicts or lists; "
                     f"found {type(elem)}" + (f" of dtype {elem.dtype}" if hasattr(elem, "dtype") else ""))


def _stack(arrays):
    """One array stacking ``arrays`` (all on one device) along a new first axis."""
    from .. import backend
    backend.check_same_device("default_collate", arrays)
    first = arrays[0]
    for i, a in enumerate(arrays[1:], 1):
        if a.shape != first.shape:
            raise RuntimeError(f"default_collate: stack expects each tensor to be equal size, but got "
                               f"{list(first.shape)} at entry 0 and {list(a.shape)} at entry {i}")
    return backend.xp(first).stack(arrays)


def default_collate(batch):
    """Stack a list of samples into a batch (see the module docstring for each kind of element)."""
    if not isinstance(batch, collections.abc.Sequence) or len(batch) == 0:
        raise TypeError(f"default_collate: expected a non-empty list of samples, got {type(batch).__name__}"
                        + (" of length 0" if isinstance(batch, collections.abc.Sequence) else ""))
    elem = batch[0]
    if isinstance(elem, Tensor):
        return Tensor(_stack([t.data for t in batch]))
    if isinstance(elem, np.ndarray):
        if elem.dtype.kind in _NOT_NUMERIC:
            raise _bad_element(elem)
        return Tensor(_stack([np.asarray(a) for a in batch]))
    if isinstance(elem, (np.bool_, np.number)):
        return Tensor(np.array(batch))
    if isinstance(elem, bool):
        return Tensor(np.array(batch, dtype=np.bool_))
    if isinstance(elem, int):
        return Tensor(np.array(batch, dtype=np.int64))
    if isinstance(elem, float):
        return Tensor(np.array(batch, dtype=np.float64))
    if isinstance(elem, (str, bytes)):
        return list(batch)
    if isinstance(elem, collections.abc.Mapping):
        return _rebuild_mapping(elem, {key: default_collate([d[key] for d in batch]) for key in elem})
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):  # namedtuple
        return type(elem)(*(default_collate(list(field)) for field in zip(*batch)))
    if isinstance(elem, collections.abc.Sequence):
        size = len(elem)
        if any(len(s) != size for s in batch):
            raise RuntimeError("each element in list of batch should be of equal size")
        fields = [default_collate(list(field)) for field in zip(*batch)]
        return fields if isinstance(elem, tuple) else _rebuild_sequence(elem, fields)
    raise _bad_element(elem)


def _rebuild_mapping(elem, collated):
    """``collated`` in the mapping type of ``elem`` where that type can hold it, else a dict."""
    if isinstance(elem, collections.abc.MutableMapping):
        clone = copy.copy(elem)
        clone.update(collated)
        return clone
    try:
        return type(elem)(collated)
    except TypeError:
        return collated


def _rebuild_sequence(elem, fields):
    if isinstance(elem, collections.abc.MutableSequence):
        clone = copy.copy(elem)
        clone[:] = fields
        return clone
    try:
        return type(elem)(fields)
    except TypeError:
        return fields


def default_convert(data):
    """numpy arrays and scalars in ``data`` as Tensors, its containers rebuilt, the rest unchanged."""
    if isinstance(data, Tensor):
        return data
    if isinstance(data, np.ndarray):
        return data if data.dtype.kind in _NOT_NUMERIC else Tensor(data)
    if isinstance(data, (np.bool_, np.number)):
        return Tensor(np.asarray(data))
    if isinstance(data, (str, bytes)):
        return data
    if isinstance(data, collections.abc.Mapping):
        return _rebuild_mapping(data, {key: default_convert(value) for key, value in data.items()})
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(default_convert(d) for d in data))
    if isinstance(data, tuple):
        return [default_convert(d) for d in data]
    if isinstance(data, collections.abc.Sequence):
        return _rebuild_sequence(data, [default_convert(d) for d in data])
    return data
