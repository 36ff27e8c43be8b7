"""Embedding: a lookup table of num_embeddings vectors of size embedding_dim."""
import numpy as np

from pyneural.functions import embedding as _embedding
from pyneural.nn import init
from pyneural.nn.module import Module, Parameter


class Embedding(Module):
    """``Embedding(n, d)(indices)`` -> indices.shape + (d,). Weight init N(0, 1) like PyTorch;
    the row at ``padding_idx`` starts at zero and gets no gradient. Gradients are dense (V, D) arrays,
    or with ``sparse=True`` a ``RowSparseGrad`` holding only the rows the batch touched (see
    pyneural/functions/embedding.py); SGD and Adam then update only those rows."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, sparse=False, dtype=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        if padding_idx is not None:
            if not -self.num_embeddings <= padding_idx < self.num_embeddings:
                raise ValueError(f"Embedding: padding_idx {padding_idx} out of range for "
                                 f"{self.num_embeddings} embeddings")
            padding_idx %= self.num_embeddings
        self.padding_idx = padding_idx
        self.sparse = bool(sparse)
        self.weight = Parameter(np.empty((self.num_embeddings, self.embedding_dim), dtype=np.dtype(dtype or np.float32)))
        self.reset_parameters()

    def reset_parameters(self):
        init.normal_(self.weight)
        if self.padding_idx is not None:
            self.weight.data[self.padding_idx] = 0

    def forward(self, indices):
        idx = _embedding.embedding_indices(indices, repr(self))
        # On the device the lookup checks the range itself (no host read per lookup)
        if idx.size and type(idx) is np.ndarray and (idx.min() < 0 or idx.max() >= self.num_embeddings):
            bad = idx.max() if idx.max() >= self.num_embeddings else idx.min()
            raise ValueError(f"{self!r}: index {int(bad)} out of range [0, {self.num_embeddings}) "
                             f"in indices of shape {idx.shape}")
        target = _embedding._sparse_target(self.weight, self.sparse)
        return _embedding.Embedding(idx, self.padding_idx, target).apply(self.weight)

    def extra_repr(self):
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        if self.sparse:
            s += ", sparse=True"
        return s
