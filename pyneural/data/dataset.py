"""Datasets: the per-sample protocol, and TensorDataset that hands out whole batches at once.

A ``Dataset`` has ``__len__`` and ``__getitem__(i)`` returning one sample (a tuple of arrays or
scalars). A dataset that overrides ``get_batch(indices)``, as TensorDataset does with one
fancy-index per array, is batched by the DataLoader through it, which is what keeps batch
preparation cheap (one C-level gather per array instead of a Python loop); any other dataset is
read sample by sample and collated by ``default_collate``, as in PyTorch. The base class's
``get_batch`` (loop and stack) remains for callers that want arrays directly. ``Subset`` and
``random_split`` cut a dataset into parts, as PyTorch's do.
"""
import numpy as np


def as_array(x, what):
    """A numpy array from an array, a pyneural Tensor (its ``.data``) or a nested sequence."""
    if isinstance(x, np.ndarray):
        return x
    data = getattr(x, "data", None)
    if isinstance(data, np.ndarray):
        return data
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{what} must be a numpy array or a Tensor, got {type(x).__name__}") from e


def stack_samples(samples):
    """Default collation: a list of samples (each a tuple of fields) -> a tuple of stacked
    arrays, one per field."""
    if not samples:
        raise ValueError("stack_samples: got an empty list of samples")
    first = samples[0]
    if not isinstance(first, (tuple, list)):
        return (np.stack([np.asarray(s) for s in samples]),)
    return tuple(np.stack([np.asarray(s[f]) for s in samples]) for f in range(len(first)))


class Dataset:
    """Subclass and implement ``__len__`` and ``__getitem__``; override ``get_batch`` when a
    whole batch can be produced faster than sample by sample."""

    def __len__(self):
        raise NotImplementedError

    def __getitem__(self, index):
        raise NotImplementedError

    def get_batch(self, indices):
        """A tuple of arrays holding the samples at ``indices`` (an int array), stacked."""
        return stack_samples([self[int(i)] for i in indices])


class TensorDataset(Dataset):
    """Samples are the rows of equally long arrays: ``TensorDataset(images, labels)``."""

    def __init__(self, *arrays):
        if not arrays:
            raise ValueError("TensorDataset: needs at least one array")
        self.arrays = tuple(as_array(a, f"TensorDataset: argument {i}") for i, a in enumerate(arrays))
        for i, a in enumerate(self.arrays):
            if a.ndim == 0:
                raise ValueError(f"TensorDataset: argument {i} is a scalar; every argument needs a "
                                 f"first (sample) dimension")
        lengths = [a.shape[0] for a in self.arrays]
        if len(set(lengths)) != 1:
            shapes = ", ".join(str(a.shape) for a in self.arrays)
            raise ValueError(f"TensorDataset: arrays must have the same first dimension, got shapes {shapes}")

    def __len__(self):
        return self.arrays[0].shape[0]

    def __getitem__(self, index):
        return tuple(a[index] for a in self.arrays)

    def get_batch(self, indices):
        # Fancy indexing always copies: a batch never aliases the dataset, so in-place work on a
        # batch (augmentation, a fused kernel writing into its input) cannot corrupt the data.
        return tuple(a[indices] for a in self.arrays)

    def __repr__(self):
        shapes = ", ".join(f"{a.shape} {a.dtype}" for a in self.arrays)
        return f"TensorDataset({len(self)} samples: {shapes})"


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices``, in that order (PyTorch's ``Subset``)."""

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = [int(i) for i in indices]

    def __getitem__(self, idx):
        if isinstance(idx, list):
            return [self.dataset[self.indices[i]] for i in idx]
        return self.dataset[self.indices[idx]]

    def __len__(self):
        return len(self.indices)


def _split_lengths(n, lengths):
    """Whole lengths from ``lengths``: ints that sum to ``n``, or fractions that sum to 1 (floor of
    each share, then the remainder one by one to the first splits, PyTorch's rule)."""
    lengths = list(lengths)
    if lengths and all(isinstance(x, float) for x in lengths):
        if any(not 0.0 <= x <= 1.0 for x in lengths) or abs(sum(lengths) - 1.0) > 1e-6:
            raise ValueError(f"random_split: fractions must lie in [0, 1] and sum to 1, got {lengths}")
        counts = [int(np.floor(n * x)) for x in lengths]
        for i in range(n - sum(counts)):
            counts[i % len(counts)] += 1
        return counts
    if any(isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < 0 for x in lengths):
        raise ValueError(f"random_split: lengths must be ints >= 0 or fractions, got {lengths}")
    if sum(lengths) != n:
        raise ValueError(f"random_split: sum of input lengths ({sum(lengths)}) does not equal the length of the "
                         f"input dataset ({n})")
    return [int(x) for x in lengths]


def random_split(dataset, lengths, generator=None):
    """``dataset`` cut at random into non-overlapping ``Subset``s of the given ``lengths`` (ints
    summing to ``len(dataset)``, or fractions summing to 1). ``generator``: a ``pn.Generator``
    (or a numpy Generator) to draw the permutation from; None draws from the global one."""
    from .. import random as pn_random
    counts = _split_lengths(len(dataset), lengths)
    rng = pn_random.numpy_generator(generator, "random_split")
    order = rng.permutation(len(dataset))
    starts = np.cumsum([0] + counts)
    return [Subset(dataset, order[start:start + count]) for start, count in zip(starts[:-1], counts)]
