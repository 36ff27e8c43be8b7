"""pyneural.recsys: rating prediction at MovieLens scale (readers, synthetic data, MF and NCF, training)."""
from .data import Ratings, read_ratings, rmse, synthetic, train_test_split
from .models import MODELS, NCF, MatrixFactorization
from .train import evaluate, fit, predict, train_epoch

__all__ = ["Ratings", "read_ratings", "synthetic", "train_test_split", "rmse", "MatrixFactorization", "NCF",
           "MODELS", "fit", "train_epoch", "evaluate", "predict"]
