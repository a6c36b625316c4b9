"""Fusion copes with a missing image or text, and trains with modality dropout."""

import torch

from models.fusion import FusionClassifier


def _head(**kwargs) -> FusionClassifier:
    torch.manual_seed(0)
    return FusionClassifier(image_dim=12, text_dim=6, num_classes=4, fused_dim=8, hidden_dim=16, **kwargs)


def test_missing_modalities_use_learned_stand_ins():
    head = _head().eval()
    image, text = torch.randn(3, 12), torch.randn(3, 6)
    image_mask = torch.tensor([True, False, True])
    text_mask = torch.tensor([True, True, False])
    out = head(image, image_mask, text, text_mask)
    assert torch.allclose(out.fused.norm(dim=1), torch.ones(3), atol=1e-5)
    assert out.image[1].abs().sum() == 0 and out.text[2].abs().sum() == 0
    assert torch.allclose(out.image[0].norm(), torch.tensor(1.0), atol=1e-5)
    # A missing modality's values must not matter: only its stand-in does.
    changed = head(torch.randn(3, 12) * 100, image_mask, text, text_mask)
    assert torch.allclose(out.fused[1], changed.fused[1], atol=1e-5)
    assert not torch.allclose(out.fused[0], changed.fused[0], atol=1e-3)


def test_stand_ins_learn():
    head = _head().train()
    out = head(torch.randn(4, 12), torch.zeros(4, dtype=torch.bool), torch.randn(4, 6), torch.ones(4, dtype=torch.bool))
    torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 1, 2, 3])).backward()
    assert head.missing_image.grad is not None and head.missing_image.grad.abs().sum() > 0


def test_modality_dropout_only_in_training_and_never_both():
    head = _head(modality_dropout=1.0)
    both = torch.ones(1000, dtype=torch.bool)
    image_mask, text_mask = head._drop_modalities(both, both)
    assert not (image_mask & text_mask).any()
    assert (image_mask | text_mask).all()
    assert 300 < int(image_mask.sum()) < 700
    head.eval()
    x, t = torch.randn(2, 12), torch.randn(2, 6)
    mask = torch.ones(2, dtype=torch.bool)
    assert torch.equal(head(x, mask, t, mask).fused, head(x, mask, t, mask).fused)
