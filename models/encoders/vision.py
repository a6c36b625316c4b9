"""The one interface every vision backbone is used through."""

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from models.encoders.device import autocast
from models.images.preprocessing import Preprocessing


@dataclass(frozen=True)
class VisionWeights:
    """Where a backbone's weights came from, and the preprocessing they expect."""

    source: str  # "package:<name>", "file:<path>", "torchvision:<enum>" or "random"
    preprocessing: Preprocessing
    pretrained_on: str | None = None  # e.g. "ImageNet-1k"; None for random weights
    sha256: str | None = None
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def random(self) -> bool:
        return self.source == "random"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class VisionEncoder(nn.Module):
    """A backbone cut into ``stages`` followed by global average pooling.

    Cutting it into stages lets training freeze the bottom and fine-tune the top on
    cached activations (:meth:`bottom` / :meth:`top`).
    """

    def __init__(self, name: str, stages: list[nn.Module], dim: int, weights: VisionWeights) -> None:
        super().__init__()
        self.name = name
        self.stages = nn.ModuleList(stages)
        self.dim = dim
        self.weights = weights
        self.pool = nn.AdaptiveAvgPool2d(1)

    @property
    def preprocessing(self) -> Preprocessing:
        return self.weights.preprocessing

    @property
    def input_size(self) -> int:
        return self.preprocessing.input_size

    def forward(self, images: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Pooled features ``[B, dim]``; ``start`` > 0 takes activations from stage ``start``."""
        x = images
        for stage in self.stages[start:]:
            x = stage(x)
        return self.pool(x).flatten(1)

    def bottom(self, images: torch.Tensor, stop: int) -> torch.Tensor:
        """Activations after the first ``stop`` stages."""
        x = images
        for stage in self.stages[:stop]:
            x = stage(x)
        return x

    @torch.inference_mode()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Features of a preprocessed batch, on the encoder's device, in inference mode."""
        device = next(self.parameters()).device
        x = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with autocast(device):
            return self(x).float()

    def prepare_for_inference(self, device: torch.device) -> "VisionEncoder":
        # channels_last made EfficientNet-lite0 about 2x faster on the 2-core CI CPU.
        return self.eval().to(device).to(memory_format=torch.channels_last)
