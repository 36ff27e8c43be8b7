"""Rating models: biased matrix factorisation and neural collaborative filtering.

Both are ordinary ``nn.Module``s whose id tables are ``nn.Embedding(sparse=True)`` parameters, so a
batch's backward yields row-sparse gradients (only the touched users and items) and the optimizer
updates only those rows.

``MatrixFactorization``: ``score(u, i) = mu + b_u + b_i + <p_u, q_i>``. The forward is one fused
kernel over the batch (``embedding_dot``: gather, dot, biases, no materialised rows), and its
backward one deterministic grouped pass per side; the loss is the framework's MSE. Two regularisers:

- ``l2``: the classic per-rating one (mean over the batch of ``l2 * (|p_u|^2 + |q_i|^2 + b_u^2 +
  b_i^2)``), whose gradient ``embedding_dot`` adds in the same pass. Summed over an epoch it weighs
  a row by its number of ratings.
- ``prior`` (after ``set_counts(train)``): a Gaussian prior per row, the MAP objective
  ``(sum of squared errors + prior * sum over rows |w|^2) / N``. In a batch, a rating adds
  ``prior / n_row * |w_row|^2`` to the mean, so its expectation over the epoch is exact; the gradient,
  ``2 prior / B * (batch count / n_row) * w_row`` on the touched rows, is added to the row-sparse
  gradients by ``regularize()`` (the training loop calls it between backward and step). On
  synthetic data this is what a rank-8 truth with a normal prior calls for (rows with few ratings are
  shrunk harder than the per-rating form shrinks them).

``NCF``: the two embeddings go through an MLP, ``relu(W_u p_u + W_i q_i + b)`` (a Linear on the
concatenation, written as two products to skip the copy), then further ReLU layers, and a linear
output plus the global mean.

Both run on the CUDA device as they are (``model.to("cuda")``, id batches on the device): every
step of the forward, backward and ``regularize`` stays there.
"""
import numpy as np

from pyneural import backend, nn
from pyneural.functions.embedding import RowSparseGrad, embedding, embedding_dot, embedding_indices
from pyneural.nn.module import Module, Parameter


def _check_sizes(name, n_users, n_items, factors):
    for what, v in (("n_users", n_users), ("n_items", n_items), ("factors", factors)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name}: {what} must be an int >= 1, got {v!r}")


def _batch_counts(ids, num_rows):
    """How many of the batch's ``ids`` name each row (on the device without a host transfer, which
    cupy.bincount would make)."""
    if backend.is_device_array(ids):
        from pyneural.cuda import embedding as kernels
        return kernels.count_rows(ids, num_rows)
    return np.bincount(ids, minlength=num_rows)


class MatrixFactorization(Module):
    """Biased matrix factorisation with ``factors``-dimensional user and item vectors."""

    def __init__(self, n_users, n_items, factors=32, mean=3.5, init_std=0.05, l2=0.0, prior=0.0, sparse=True):
        super().__init__()
        _check_sizes("MatrixFactorization", n_users, n_items, factors)
        self.user_factors = nn.Embedding(n_users, factors, sparse=sparse)
        self.item_factors = nn.Embedding(n_items, factors, sparse=sparse)
        self.user_bias = nn.Embedding(n_users, 1, sparse=sparse)
        self.item_bias = nn.Embedding(n_items, 1, sparse=sparse)
        self.global_bias = Parameter(np.array([mean], dtype=np.float32))
        self.sparse, self.init_std, self.l2, self.prior = sparse, float(init_std), float(l2), float(prior)
        if self.l2 < 0 or self.prior < 0:
            raise ValueError(f"MatrixFactorization: l2 and prior must be >= 0, got l2={l2}, prior={prior}")
        self._inv_counts, self._batch = None, None
        self.reset_parameters()

    def set_counts(self, train):
        """Per-row rating counts of the training data (``Ratings``, on any device), needed by ``prior``."""
        xp = backend.xp(train.users)
        self._inv_counts = tuple(1.0 / xp.maximum(xp.bincount(ids, minlength=n), 1).astype(np.float32)
                                 for ids, n in ((train.users, self.user_factors.num_embeddings),
                                                (train.items, self.item_factors.num_embeddings)))

    def _inverse_counts_on(self, device):
        """The 1 / count tables of ``set_counts``, moved to ``device`` (once) if they are elsewhere."""
        if backend.device_of(self._inv_counts[0]) != device:
            self._inv_counts = tuple(backend.to_device(inv, device) for inv in self._inv_counts)
        return self._inv_counts

    def regularize(self):
        """Add the ``prior`` gradient of the last training batch to the tables' gradients."""
        if self.prior == 0.0 or self._batch is None:
            return
        if self._inv_counts is None:
            raise RuntimeError("MatrixFactorization: prior > 0 needs set_counts(train) before training")
        users, items = self._batch
        self._batch = None
        scale = np.float32(2.0 * self.prior / users.shape[0])
        inv_users, inv_items = self._inverse_counts_on(backend.device_of(users))
        for ids, inv, tables in ((users, inv_users, (self.user_factors, self.user_bias)),
                                 (items, inv_items, (self.item_factors, self.item_bias))):
            counts = _batch_counts(ids, inv.shape[0])
            for emb in tables:
                w, g = emb.weight, emb.weight.grad
                if g is None:
                    continue
                if isinstance(g, RowSparseGrad):
                    coef = counts[g.indices] * inv[g.indices] * scale
                    g.values += coef.astype(np.float32)[:, None] * w.data[g.indices]
                else:
                    dense = g.data if hasattr(g, "data") else g
                    dense += (counts * inv * scale).astype(np.float32)[:, None] * w.data

    def reset_parameters(self):
        for emb in (self.user_factors, self.item_factors):
            nn.init.normal_(emb.weight, 0.0, self.init_std)
        self.user_bias.weight.data[...] = 0
        self.item_bias.weight.data[...] = 0

    def forward(self, users, items):
        if self.training and self.prior:
            self._batch = (embedding_indices(users, "MatrixFactorization"),
                           embedding_indices(items, "MatrixFactorization"))
        return embedding_dot(users, self.user_factors.weight, items, self.item_factors.weight,
                             self.user_bias.weight, self.item_bias.weight, self.global_bias, sparse=self.sparse,
                             l2=self.l2 if self.training else 0.0)


class NCF(Module):
    """Neural collaborative filtering: embeddings -> MLP (``hidden`` widths, ReLU) -> rating."""

    def __init__(self, n_users, n_items, factors=32, hidden=(64, 32), mean=3.5, sparse=True):
        super().__init__()
        _check_sizes("NCF", n_users, n_items, factors)
        hidden = tuple(int(h) for h in hidden)
        if not hidden or min(hidden) < 1:
            raise ValueError(f"NCF: hidden must be a non-empty list of widths >= 1, got {hidden}")
        self.user_embedding = nn.Embedding(n_users, factors, sparse=sparse)
        self.item_embedding = nn.Embedding(n_items, factors, sparse=sparse)
        for emb in (self.user_embedding, self.item_embedding):
            nn.init.normal_(emb.weight, 0.0, 0.1)
        self.user_in = nn.Linear(factors, hidden[0])
        self.item_in = nn.Linear(factors, hidden[0], bias=False)
        self.layers = nn.Sequential(*[m for a, b in zip(hidden, hidden[1:]) for m in (nn.Linear(a, b), nn.ReLU())])
        self.out = nn.Linear(hidden[-1], 1)
        self.global_bias = Parameter(np.array([mean], dtype=np.float32))

    @staticmethod
    def _lookup(table, ids):
        # The functional lookup rather than table(ids): nn.Embedding's forward range-checks the ids on
        # the host, a device -> host read per lookup on the GPU, which the sparse backward's own check
        # (and the kernels' bounds guard) make unnecessary.
        return embedding(ids, table.weight, padding_idx=table.padding_idx, sparse=table.sparse)

    def forward(self, users, items):
        h = (self.user_in(self._lookup(self.user_embedding, users))
             + self.item_in(self._lookup(self.item_embedding, items))).relu()
        return self.out(self.layers(h)).reshape(-1) + self.global_bias


MODELS = {"mf": MatrixFactorization, "ncf": NCF}
