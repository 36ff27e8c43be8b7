"""pyneural.data: datasets, the DataLoader with PyTorch's arguments, samplers, collation, batch
augmentations, per-sample transforms (``pyneural.data.transforms``), pinned memory and the
side-stream device prefetcher."""
from . import transforms
from .augment import Compose, RandomCrop, RandomHorizontalFlip
from .collate import default_collate, default_convert
from .dataset import Dataset, Subset, TensorDataset, random_split
from .device import DevicePrefetcher
from .loader import DataLoader
from .sampler import BatchSampler, RandomSampler, Sampler, SequentialSampler, SubsetRandomSampler

__all__ = ["Dataset", "TensorDataset", "Subset", "random_split", "DataLoader", "DevicePrefetcher", "default_collate",
           "default_convert",
           "Sampler", "SequentialSampler", "RandomSampler", "SubsetRandomSampler", "BatchSampler", "transforms",
           "Compose", "RandomCrop", "RandomHorizontalFlip"]
