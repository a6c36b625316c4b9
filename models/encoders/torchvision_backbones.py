"""torchvision architectures as Shelfsight vision encoders.

Weights come from a local file the user gives (``weights=Path``), from torchvision's own
download where the machine can reach it (``weights="torchvision"``), or are random when
asked for explicitly (``weights=None``; the model card then says so).
"""

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tv

from models.encoders.vision import VisionEncoder, VisionWeights, file_sha256
from models.images.preprocessing import Preprocessing

IMAGENET_PREPROCESSING = Preprocessing(input_size=224, resize_size=256, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def _resnet_stages(net: tv.ResNet) -> list[nn.Module]:
    return [nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool), net.layer1, net.layer2, net.layer3, net.layer4]


def _features_stages(net: nn.Module) -> list[nn.Module]:
    # MobileNetV3 and EfficientNet keep their convolutional trunk in `.features`.
    features = net.features
    assert isinstance(features, nn.Sequential), type(features)
    return list(features)


_ARCHITECTURES: dict[str, tuple[Callable[..., nn.Module], Callable[[nn.Module], list[nn.Module]], int, str]] = {
    "resnet18": (tv.resnet18, _resnet_stages, 512, "ResNet18_Weights"),
    "resnet50": (tv.resnet50, _resnet_stages, 2048, "ResNet50_Weights"),
    "mobilenet_v3_small": (tv.mobilenet_v3_small, _features_stages, 576, "MobileNet_V3_Small_Weights"),
    "mobilenet_v3_large": (tv.mobilenet_v3_large, _features_stages, 960, "MobileNet_V3_Large_Weights"),
    "efficientnet_b0": (tv.efficientnet_b0, _features_stages, 1280, "EfficientNet_B0_Weights"),
}


def _build(name: str, weights: str | Path | None, preprocessing: Preprocessing | None) -> VisionEncoder:
    builder, stages_of, dim, enum_name = _ARCHITECTURES[name]
    pre = preprocessing or IMAGENET_PREPROCESSING
    if weights is None:
        net = builder(weights=None)
        described = VisionWeights(source="random", preprocessing=pre)
    elif weights == "torchvision":
        enum = getattr(tv, enum_name).DEFAULT
        net = builder(weights=enum)  # downloads into torch's hub cache when not there yet
        described = VisionWeights(source=f"torchvision:{enum}", preprocessing=pre, pretrained_on="ImageNet-1k")
    else:
        path = Path(weights)
        net = builder(weights=None)
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        described = VisionWeights(source=f"file:{path}", preprocessing=pre, pretrained_on="user file", sha256=file_sha256(path))
    return VisionEncoder(name, stages_of(net), dim=dim, weights=described)


def _builder(name: str) -> Callable[..., VisionEncoder]:
    def build(*, weights: str | Path | None, preprocessing: Preprocessing | None = None) -> VisionEncoder:
        return _build(name, weights, preprocessing)

    build.__name__ = name
    build.__doc__ = f"torchvision {name} ({_ARCHITECTURES[name][2]}-d features); see the module docstring for weights."
    return build


resnet18 = _builder("resnet18")
resnet50 = _builder("resnet50")
mobilenet_v3_small = _builder("mobilenet_v3_small")
mobilenet_v3_large = _builder("mobilenet_v3_large")
efficientnet_b0 = _builder("efficientnet_b0")
