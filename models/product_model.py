"""The whole product model: a vision encoder and the fusion head on top of it."""

import torch
from torch import nn

from models.encoders.vision import VisionEncoder
from models.fusion import FusionClassifier, FusionOutput


class ProductModel(nn.Module):
    def __init__(self, encoder: VisionEncoder, fusion: FusionClassifier) -> None:
        super().__init__()
        self.encoder = encoder
        self.fusion = fusion

    def forward(
        self,
        pixels_or_activations: torch.Tensor,
        image_mask: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        start: int = 0,
    ) -> FusionOutput:
        """From preprocessed pixels (``start=0``) or cached activations of stage ``start``."""
        features = self.encoder(pixels_or_activations, start=start)
        return self.fusion(features, image_mask, text, text_mask)

    def fuse_features(self, features: torch.Tensor, image_mask: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> FusionOutput:
        """From pooled image features (frozen-backbone training caches these)."""
        return self.fusion(features, image_mask, text, text_mask)
