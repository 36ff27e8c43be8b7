"""Samplers with PyTorch's names, whose orders are a function of ``(seed, epoch)``.

``SequentialSampler``, ``RandomSampler``, ``SubsetRandomSampler`` iterate like their
``torch.utils.data`` namesakes (a fresh random order on each ``iter()``), and also expose
``order(epoch)``: the sample indices of that epoch, computed from the sampler's ``seed`` and the
epoch number only. The DataLoader asks for ``order(epoch)`` when a sampler has it, which is what
makes a run resumable at any sample: the order of the interrupted epoch can be recomputed.
``RandomSampler(n).order(e)`` is ``default_rng([seed, e]).permutation(n)``, the same permutation the
DataLoader and ``DistributedSampler`` draw for ``shuffle=True``.

``BatchSampler`` groups any sampler's indices into lists, as in PyTorch.

Seeds. ``generator=`` may be an int seed, a ``numpy.random.Generator`` (one seed is drawn from it
when the sampler is built), or an object with ``initial_seed()`` (a ``torch.Generator``; its
initial seed is used). pyneural has no Generator class of its own: without ``generator`` (and
without ``seed``) a seed is drawn from pyneural's global generator, so ``pn.manual_seed`` makes
the order reproducible.
"""
import numpy as np


def _draw_seed():
    from .. import random as pn_random
    return int(pn_random.get_generator().integers(0, 2**63 - 1))


def seed_from(generator, what):
    """The int seed that ``generator`` (see the module docstring) stands for."""
    if generator is None:
        return _draw_seed()
    if isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
        if generator < 0:
            raise ValueError(f"{what}: a seed must be >= 0, got {generator}")
        return int(generator)
    if isinstance(generator, np.random.Generator):
        return int(generator.integers(0, 2**63 - 1))
    initial_seed = getattr(generator, "initial_seed", None)
    if callable(initial_seed):
        return int(initial_seed()) % 2**63
    raise TypeError(f"{what}: generator must be an int seed, a numpy.random.Generator or an object with "
                    f"initial_seed() such as a torch.Generator, got {type(generator).__name__}")


class Sampler:
    """Base class: an iterable of sample indices, usually with ``__len__``."""

    def __init__(self, data_source=None):
        pass

    def __iter__(self):
        raise NotImplementedError


class SequentialSampler(Sampler):
    """``0, 1, ..., len(data_source) - 1``."""

    def __init__(self, data_source):
        self.data_source = data_source

    def __len__(self):
        return len(self.data_source)

    def order(self, epoch):
        return np.arange(len(self), dtype=np.int64)

    def __iter__(self):
        return iter(range(len(self)))


class _SeededSampler(Sampler):
    """``order(epoch)`` from ``(seed, epoch)``; plain iteration walks the epochs 0, 1, 2, ... (or
    starts from the one given to ``set_epoch``), so each ``iter()`` gives a new order."""

    shuffle = True

    def __init__(self, generator, seed, what):
        if generator is not None and seed is not None:
            raise ValueError(f"{what}: give generator or seed, not both")
        self.seed = seed_from(seed if seed is not None else generator, what)
        self.generator = generator
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def _rng(self, epoch):
        return np.random.default_rng([self.seed, int(epoch)])

    def __iter__(self):
        order = self.order(self.epoch)
        self.epoch += 1
        return iter(order.tolist())


class RandomSampler(_SeededSampler):
    """A random permutation of ``data_source`` per epoch; with ``replacement``, ``num_samples``
    independent draws; without it, ``num_samples`` larger than the data concatenates permutations
    (as PyTorch does)."""

    def __init__(self, data_source, replacement=False, num_samples=None, generator=None, *, seed=None):
        if not isinstance(replacement, bool):
            raise TypeError(f"replacement should be a boolean value, but got replacement={replacement!r}")
        if num_samples is not None and (isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer))
                                        or num_samples <= 0):
            raise ValueError(f"num_samples should be a positive integer value, but got num_samples={num_samples!r}")
        super().__init__(generator, seed, "RandomSampler")
        self.data_source = data_source
        self.replacement = replacement
        self._num_samples = None if num_samples is None else int(num_samples)

    @property
    def num_samples(self):
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def __len__(self):
        return self.num_samples

    def order(self, epoch):
        n, rng = len(self.data_source), self._rng(epoch)
        if self.replacement:
            return rng.integers(0, n, size=self.num_samples, dtype=np.int64)
        rounds = -(-self.num_samples // n)
        return np.concatenate([rng.permutation(n) for _ in range(rounds)])[:self.num_samples].astype(np.int64)


class SubsetRandomSampler(_SeededSampler):
    """The given ``indices`` in a random order per epoch."""

    def __init__(self, indices, generator=None, *, seed=None):
        super().__init__(generator, seed, "SubsetRandomSampler")
        self.indices = indices

    def __len__(self):
        return len(self.indices)

    def order(self, epoch):
        indices = np.asarray(self.indices, dtype=np.int64)
        return indices[self._rng(epoch).permutation(len(indices))]


class BatchSampler(Sampler):
    """Lists of ``batch_size`` indices from ``sampler``; the last one shorter unless ``drop_last``."""

    def __init__(self, sampler, batch_size, drop_last):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise ValueError(f"batch_size should be a positive integer value, but got batch_size={batch_size!r}")
        if not isinstance(drop_last, bool):
            raise ValueError(f"drop_last should be a boolean value, but got drop_last={drop_last!r}")
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.drop_last = drop_last

    def __len__(self):
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        batch = []
        for index in self.sampler:
            batch.append(int(index))
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch
