"""Building a vision encoder by name."""

from collections.abc import Callable
from pathlib import Path

from models.encoders import efficientnet_lite, torchvision_backbones
from models.encoders.vision import VisionEncoder, VisionWeights
from models.images.preprocessing import Preprocessing

VISION_ENCODERS: dict[str, Callable[..., VisionEncoder]] = {
    "efficientnet-lite0": efficientnet_lite.efficientnet_lite0,
    "resnet18": torchvision_backbones.resnet18,
    "resnet50": torchvision_backbones.resnet50,
    "mobilenet_v3_small": torchvision_backbones.mobilenet_v3_small,
    "mobilenet_v3_large": torchvision_backbones.mobilenet_v3_large,
    "efficientnet_b0": torchvision_backbones.efficientnet_b0,
}

DEFAULT_BACKBONE = "efficientnet-lite0"


class UnknownBackbone(ValueError):
    pass


def default_weights(name: str) -> str | None:
    """The weights used when the user names none: the offline package for the default backbone.

    Other architectures have no offline weights; they need a file, ``torchvision``, or an
    explicit ``random``.
    """
    return "package" if name == DEFAULT_BACKBONE else None


def build_vision_encoder(name: str, *, weights: str | Path | None = "default", input_size: int | None = None) -> VisionEncoder:
    """Build ``name`` with ``weights``: "default", "package", "torchvision", "random", or a file path."""
    if name not in VISION_ENCODERS:
        raise UnknownBackbone(f"unknown backbone {name!r}; choose one of {', '.join(VISION_ENCODERS)}")
    if weights == "default":
        weights = default_weights(name)
        if weights is None:
            raise UnknownBackbone(f"{name} has no offline weights: give a weights file, 'torchvision' (downloads), or 'random'")
    if weights == "random":
        weights = None
    encoder = VISION_ENCODERS[name](weights=weights)
    if input_size is not None and input_size != encoder.input_size:
        encoder.weights = _resized(encoder, input_size)
    return encoder


def _resized(encoder: VisionEncoder, input_size: int) -> VisionWeights:
    from dataclasses import replace

    pre: Preprocessing = encoder.preprocessing.at_size(input_size)
    return replace(encoder.weights, preprocessing=pre)
