"""Gradient sync for models with row-sparse embedding gradients (nn.Embedding(sparse=True)).

Each rank trains on its own shard of the ratings; after ``backward`` every rank holds a
``RowSparseGrad`` per embedding table (its batch's touched rows) and dense gradients for the rest
(an MLP, a global bias). ``SparseGradSync(model)(model)`` makes all ranks hold the same averaged
gradients, after which every rank takes the same optimizer step and the replicas stay identical.

The choice: embedding tables are synced by **allgather of the touched rows and their gradients**,
not by all-reducing the dense tables. A batch of B ratings touches at most B rows of a table of V
rows (162k users for ML-25M); all-reducing the dense (V, D) gradient every step would move V x D
floats (20 MB at D = 32) where the touched rows are a fraction of that, and would make the
optimizer update every row (breaking lazy Adam). Per table this is three collectives: the row
counts, the row indices and the (U, D) values (``Iallgatherv``); every rank then concatenates the
ranks' contributions in rank order and coalesces them with the embedding backward's deterministic
row grouping, so all ranks compute bitwise the same sum. The result is divided by the world size:
the average, as DistributedDataParallel gives for dense gradients. Dense gradients are all-reduced
(sum, then / size) in one flat float32/float64 buffer per dtype.

A parameter whose gradient is None on every rank stays None; one that is None on some ranks only
is treated as zeros there. All collectives run under the watchdog (a dead rank aborts the job).
DistributedDataParallel does not handle sparse gradients (it all-reduces dense buckets from
post-accumulate hooks, which sparse gradients do not fire): use this class instead for such models.
"""
import numpy as np

from pyneural.functions.embedding import RowSparseGrad
from pyneural.kernels import embedding as _emb_kernels
from pyneural.tensor import wrap

from . import collectives
from ._mpi import import_mpi
from .comm import get_world, init, is_initialized
from .sync import broadcast_parameters


def _allgatherv(world, mine, what):
    """Every rank's 1-D ``mine`` concatenated in rank order, and the per-rank lengths."""
    MPI = import_mpi()
    lengths = collectives.allgather(world, np.array([mine.size], dtype=np.int64), what + " (lengths)")[:, 0]
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    out = np.empty(int(lengths.sum()), dtype=mine.dtype)
    mpi_type = MPI._typedict[mine.dtype.char]
    counts, displs = [int(n) for n in lengths], [int(o) for o in offsets]
    collectives.run(world, lambda: world.comm.Iallgatherv(mine, [out, counts, displs, mpi_type]), what)
    return out, lengths


class SparseGradSync:
    """Broadcasts rank 0's parameters at construction; then ``sync(model)`` (also ``sync()``)
    averages the gradients over ranks as described in the module docstring."""

    def __init__(self, module, world=None):
        self.world = world if world is not None else (get_world() if is_initialized() else init())
        self.module = module
        self.params = [(name, p) for name, p in module.named_parameters() if p.requires_grad]
        broadcast_parameters(self.world, module)
        self.rows_moved = 0  # touched rows received per sync, summed (what a dense all-reduce avoids)

    def __call__(self, module=None):
        world = self.world
        if world.size == 1:
            return
        # which parameters have which kind of gradient, agreed by all ranks
        kinds = np.array([0 if p.grad is None else (2 if isinstance(p.grad, RowSparseGrad) else 1)
                          for _, p in self.params], dtype=np.int8)
        every = collectives.allgather(world, kinds, "sparse sync: gradient kinds")
        dense = []
        for k, (name, p) in enumerate(self.params):
            col = every[:, k]
            if np.all(col == 0):
                continue
            if np.any(col == 2):
                if np.any(col == 1):
                    raise RuntimeError(f"SparseGradSync: parameter {name!r} has a sparse gradient on some ranks "
                                       f"and a dense one on others")
                self._sync_sparse(name, p)
            else:
                if p.grad is None:
                    p.grad = wrap(np.zeros_like(p.data))
                dense.append(p)
        self._sync_dense(dense)

    def _sync_sparse(self, name, p):
        world = self.world
        g = p.grad
        if g is None:
            g = RowSparseGrad(np.empty(0, np.int64), np.empty((0,) + p.data.shape[1:], p.data.dtype), p.data.shape)
        rows, _ = _allgatherv(world, np.ascontiguousarray(g.indices), f"sparse sync: rows of {name}")
        values, _ = _allgatherv(world, np.ascontiguousarray(g.values).reshape(-1), f"sparse sync: values of {name}")
        values = values.reshape((rows.size,) + p.data.shape[1:])
        self.rows_moved += int(rows.size)
        if rows.size:
            rows, values = _emb_kernels.embedding_backward_sparse(np.ascontiguousarray(values), rows, p.data.shape[0])
        values /= world.size
        p.grad = RowSparseGrad(rows, values, p.data.shape)

    def _sync_dense(self, params):
        by_dtype = {}
        for p in params:
            by_dtype.setdefault(p.grad.data.dtype, []).append(p)
        for dtype, group in by_dtype.items():
            flat = np.concatenate([p.grad.data.reshape(-1) for p in group]).astype(dtype, copy=False)
            collectives.allreduce_(self.world, flat, what=f"sparse sync: dense gradients ({dtype})")
            flat /= self.world.size
            offset = 0
            for p in group:
                n = p.grad.data.size
                p.grad.data[...] = flat[offset:offset + n].reshape(p.grad.data.shape)
                offset += n
