"""pyneural.data: datasets and the DataLoader."""
from .dataset import Dataset, TensorDataset
from .loader import DataLoader

__all__ = ["Dataset", "TensorDataset", "DataLoader"]
