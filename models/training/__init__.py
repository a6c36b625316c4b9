"""Training the product model on an ImageFolder dataset."""

from models.training.config import TrainConfig
from models.training.train import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]
