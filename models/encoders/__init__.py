"""Vision backbones (a builder per architecture, weights described as data) and the text encoder."""

from models.encoders.registry import VISION_ENCODERS, build_vision_encoder
from models.encoders.vision import VisionEncoder, VisionWeights

__all__ = ["VISION_ENCODERS", "VisionEncoder", "VisionWeights", "build_vision_encoder"]
