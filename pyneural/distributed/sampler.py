"""DistributedSampler: each rank a disjoint 1/N of every epoch.

The epoch's order is the same permutation the DataLoader would draw on its own
(``default_rng([seed, epoch]).permutation(n)``), computed identically on every rank from the
shared seed; no communication is needed. Rank r then takes every N-th index starting at r.

Why strided rather than contiguous chunks: with per-rank batch B, step k of rank r gets
``order[k*B*N + r :: N][:B]``, so the union over ranks of step k is exactly
``order[k*B*N:(k+1)*B*N]``: the batch a single process with global batch B*N would see at step
k. Averaging the ranks' mean gradients then gives that process's mean gradient, which is what
makes distributed training reproduce single-process training.

The tail. N must divide the epoch, or ranks would run different numbers of steps and the last
collective would wait forever. ``drop_last=False`` pads by repeating the epoch's first indices
(N-1 at most) at the *end* of the order; ``drop_last=True`` drops the last ``n mod N``. Every
rank computes the same padding, so they always agree.

Padding still changes the last step: its union over ranks holds the repeated samples, and the
ranks' batches differ in real size, so the mean of their means is not the mean over the real
samples. ``real_in_batch`` and ``real_in_step`` say, without communication, how many samples of
this rank's batch and of the whole step are real; weighting each rank's loss by
``N * real_local / real_step`` over its real samples only (``step_loss_weight``) makes the
averaged gradient the single-process gradient of the real samples exactly.

Resuming on another number of ranks. Step k of all ranks consumes ``order[k*B*N:(k+1)*B*N]``,
so the position of a job in its epoch is one number that does not depend on N: how many samples
of the epoch's global order were consumed (``global_position``). ``order(epoch, start)`` shards
what is left of the epoch after ``start`` over *this* sampler's ranks, padding or trimming only
that remainder; ``real_in_batch``/``real_in_step``/``step_loss_weight`` take the same ``start``.
A checkpoint written by N ranks at position s therefore resumes on M ranks with every real
sample of the interrupted epoch used exactly once (with ``drop_last``, the dropped tail is the
remainder's, ``(n - s) mod M``).
"""
import numpy as np


class DistributedSampler:
    """Indices for one rank. ``dataset`` is anything with ``len()`` (or an int: the number of
    samples). ``num_replicas``/``rank`` default to the initialised world's size and rank.
    Plugs into ``DataLoader(sampler=...)`` through ``order(epoch)`` and ``len()``; iterating it
    directly yields the order of the epoch set with ``set_epoch``."""

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0, drop_last=False):
        n = dataset if isinstance(dataset, (int, np.integer)) and not isinstance(dataset, bool) else len(dataset)
        if num_replicas is None or rank is None:
            from .comm import get_world
            world = get_world()
            num_replicas = world.size if num_replicas is None else num_replicas
            rank = world.rank if rank is None else rank
        if not isinstance(num_replicas, (int, np.integer)) or num_replicas < 1:
            raise ValueError(f"DistributedSampler: num_replicas must be an int >= 1, got {num_replicas!r}")
        if not isinstance(rank, (int, np.integer)) or not 0 <= rank < num_replicas:
            raise ValueError(f"DistributedSampler: rank must be an int in [0, {num_replicas}), got {rank!r}")
        if n < 1:
            raise ValueError("DistributedSampler: the dataset is empty")
        if drop_last and n < num_replicas:
            raise ValueError(f"DistributedSampler: drop_last with {n} samples and {num_replicas} ranks "
                             f"leaves every rank empty")
        self.dataset_size = int(n)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        if self.drop_last:
            self.num_samples = self.dataset_size // self.num_replicas
        else:
            self.num_samples = -(-self.dataset_size // self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def __len__(self):
        return self.num_samples

    def _extent(self, start):
        """``(real, total)`` for the part of an epoch from global position ``start``: how many
        real samples it holds, and its length once padded or trimmed to a multiple of the ranks."""
        if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or not 0 <= start <= self.dataset_size:
            raise ValueError(f"DistributedSampler: start must be an int in [0, {self.dataset_size}], got {start!r}")
        left = self.dataset_size - int(start)
        if self.drop_last:
            total = left // self.num_replicas * self.num_replicas
            return total, total
        return left, -(-left // self.num_replicas) * self.num_replicas

    def global_order(self, epoch, start=0):
        """The epoch's order from global position ``start`` on, before sharding, padded (by
        repeating its first indices) or trimmed to a multiple of the ranks."""
        n = self.dataset_size
        if self.shuffle:
            order = np.random.default_rng([self.seed, int(epoch)]).permutation(n)
        else:
            order = np.arange(n, dtype=np.int64)
        _, total = self._extent(start)
        order = order[int(start):]
        if total <= len(order):
            return order[:total]
        repeats = -(-total // len(order))
        return np.tile(order, repeats)[:total]

    def order(self, epoch, start=0):
        """This rank's indices for ``epoch`` (int64), in visiting order, from global position
        ``start`` (samples of the epoch's global order already consumed, by any number of ranks)."""
        return self.global_order(epoch, start)[self.rank::self.num_replicas]

    def global_position(self, start, batches, batch_size):
        """The global position after every rank took ``batches`` batches of ``batch_size`` from
        position ``start``: the samples of the epoch's global order consumed so far (padding is
        not counted)."""
        real, _ = self._extent(start)
        return int(start) + min(int(batches) * int(batch_size) * self.num_replicas, real)

    def real_in_batch(self, step, batch_size, start=0):
        """How many leading samples of this rank's batch number ``step`` (counted from position
        ``start``) are real data; the rest (at most one sample, in the epoch's last batch) is padding."""
        real, _ = self._extent(start)
        real_here = len(range(self.rank, real, self.num_replicas))
        return max(0, min(batch_size, real_here - step * batch_size))

    def real_in_step(self, step, batch_size, start=0):
        """Real samples in step ``step`` (from position ``start``) summed over all ranks (each
        with ``batch_size``)."""
        real, _ = self._extent(start)
        width = batch_size * self.num_replicas
        return max(0, min(width, real - step * width))

    def step_loss_weight(self, step, batch_size, start=0):
        """``(real_local, weight)``: a rank whose loss is the mean over its first ``real_local``
        samples, multiplied by ``weight``, contributes exactly its share of the step's mean over
        real samples once the gradients are averaged over ranks. ``weight`` is 1.0 when no
        padding is involved (every step but possibly the last of an epoch)."""
        real_local = self.real_in_batch(step, batch_size, start)
        real_step = self.real_in_step(step, batch_size, start)
        if real_step == 0:
            return 0, 0.0
        return real_local, self.num_replicas * real_local / real_step

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __iter__(self):
        return iter(self.order(self.epoch).tolist())
