"""pyneural.data: datasets, the DataLoader, batch augmentations, and the GPU side-stream prefetcher."""
from .augment import Compose, RandomCrop, RandomHorizontalFlip
from .dataset import Dataset, TensorDataset
from .device import CudaPrefetcher
from .loader import DataLoader

__all__ = ["Dataset", "TensorDataset", "DataLoader", "CudaPrefetcher", "Compose", "RandomCrop",
           "RandomHorizontalFlip"]
