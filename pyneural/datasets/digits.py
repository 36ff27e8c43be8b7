"""scikit-learn's handwritten digits (UCI optdigits test set): 1797 real 8x8 images, ten classes.

Small enough to train on in seconds on a laptop CPU yet real data, which makes it the demo and
test dataset. The train/test split is stratified and seeded, so every run and every machine sees
the same 1437/360 split.
"""
from collections import namedtuple

import numpy as np

from ..data.dataset import TensorDataset

Split = namedtuple("Split", ["train", "test"])

NUM_TEST = 360


def digits(standardize=False, split_seed=0):
    """``(train, test)`` TensorDatasets of ``(images, labels)``: images float32 ``(N, 1, 8, 8)``
    scaled from the 0..16 ink counts to [0, 1] (or, with ``standardize``, to zero mean and unit
    variance using the train set's per-pixel statistics); labels int64 in 0..9."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError("pyneural.datasets.digits needs scikit-learn (pip install scikit-learn)") from e
    bunch = load_digits()
    images = (bunch.images.astype(np.float32) / np.float32(16.0)).reshape(-1, 1, 8, 8)
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = stratified_split(labels, NUM_TEST, split_seed)
    x_train, x_test = images[train_idx], images[test_idx]
    if standardize:
        mean = x_train.mean(axis=0, keepdims=True)
        std = x_train.std(axis=0, keepdims=True)
        # Border pixels are blank in almost every image: keep their std from vanishing.
        std = np.maximum(std, np.float32(1e-2))
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    return Split(TensorDataset(x_train, labels[train_idx]), TensorDataset(x_test, labels[test_idx]))


def stratified_split(labels, num_test, seed):
    """Index arrays (train, test), each class split in proportion to its frequency."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    # Largest-remainder apportionment: per-class test counts that sum exactly to num_test.
    exact = counts * num_test / len(labels)
    take = np.floor(exact).astype(np.int64)
    take[np.argsort(-(exact - take), kind="stable")[:num_test - take.sum()]] += 1
    test = []
    for cls, k in zip(classes, take):
        members = np.flatnonzero(labels == cls)
        test.append(rng.choice(members, size=k, replace=False))
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(len(labels)), test)
    return rng.permutation(train), rng.permutation(test)
