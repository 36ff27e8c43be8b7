"""Embedding lookup: rows of a (num_embeddings, dim) weight gathered by integer indices of any
shape. The weight gradient is dense here (a scatter-add of the output gradient into a zero matrix
by the embedding kernel); rows at ``padding_idx`` get no gradient."""
import numpy as np

from pyneural.kernels import embedding as _emb_kernels
from pyneural.tensor import Function, Tensor, get_array_module


class Embedding(Function):
    def __init__(self, indices, padding_idx=None):
        self.indices = indices
        self.padding_idx = padding_idx

    def forward(self, weight):
        self.num_embeddings = weight.shape[0]
        flat = self.indices.reshape(-1)
        if flat.size == 0:
            return get_array_module(weight).empty(self.indices.shape + (weight.shape[1],), dtype=weight.dtype)
        out = _emb_kernels.embedding_forward(weight, flat)
        return out.reshape(self.indices.shape + (weight.shape[1],))

    def backward(self, gy):
        dim = gy.shape[-1]
        if gy.size == 0:
            return (get_array_module(gy).zeros((self.num_embeddings, dim), dtype=gy.dtype),)
        gy2 = gy.reshape(-1, dim)
        if not gy2.flags.c_contiguous:
            gy2 = get_array_module(gy2).ascontiguousarray(gy2)
        gw = _emb_kernels.embedding_backward_dense(gy2, self.indices.reshape(-1), self.num_embeddings)
        if self.padding_idx is not None:
            gw[self.padding_idx] = 0
        return (gw,)


def embedding_indices(indices, fn):
    """The index array of ``indices`` (a Tensor or array-like of integers), C-contiguous int64."""
    idx = indices.data if isinstance(indices, Tensor) else np.asarray(indices)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"{fn}: indices must be integers, got dtype {idx.dtype}")
    if idx.dtype != np.int64:
        idx = idx.astype(np.int64)
    if not idx.flags.c_contiguous:
        idx = np.ascontiguousarray(idx)
    return idx


def embedding(indices, weight, padding_idx=None):
    """Rows of ``weight`` selected by ``indices``; the result has shape indices.shape + (dim,)."""
    idx = embedding_indices(indices, "embedding")
    if weight.data.ndim != 2:
        raise ValueError(f"embedding: weight must be (num_embeddings, dim), got shape {weight.data.shape}")
    n = weight.data.shape[0]
    if padding_idx is not None:
        if not -n <= padding_idx < n:
            raise ValueError(f"embedding: padding_idx {padding_idx} out of range for {n} embeddings")
        padding_idx %= n
    return Embedding(idx, padding_idx).apply(weight)
