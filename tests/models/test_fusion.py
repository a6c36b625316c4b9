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


def test_the_text_meaning_is_kept_in_the_fused_vector():
    """Two texts close in meaning stay closer than a third, through a head that never learned from them."""
    from torch.nn import functional as F

    head = _head(text_weight=0.5, text_only_weight=2.0).eval()
    near, close, far = F.normalize(torch.tensor([[1.0, 0.9, 0, 0, 0, 0.1], [1.0, 1.0, 0.1, 0, 0, 0], [0, 0, 0, 1.0, 1.0, 0]]), dim=1)
    text = torch.stack([near, close, far])
    no_image, has_text = torch.zeros(3, dtype=torch.bool), torch.ones(3, dtype=torch.bool)
    out = head(torch.randn(3, 12), no_image, text, has_text)
    similarity = out.fused @ out.fused.T
    assert similarity[0, 1] > similarity[0, 2] + 0.2
    assert torch.allclose(out.text.norm(dim=1), torch.ones(3), atol=1e-5)
    # The stored text vector keeps the sentence geometry (an orthonormal projection).
    assert torch.allclose(
        out.text @ out.text.T,
        (text @ head.text_basis)
        @ (text @ head.text_basis).T
        / ((text @ head.text_basis).norm(dim=1)[:, None] * (text @ head.text_basis).norm(dim=1)[None, :]),
        atol=1e-5,
    )
    # With a picture, the text still moves the vector, by less.
    image = torch.randn(1, 12).expand(3, 12)
    with_picture = head(image, torch.ones(3, dtype=torch.bool), text, has_text).fused
    assert not torch.allclose(with_picture[0], with_picture[2], atol=1e-3)
    assert (with_picture @ with_picture.T)[0, 2] > similarity[0, 2]  # the shared picture dominates


def test_meaning_basis_is_orthonormal_and_fixed():
    from models.fusion import meaning_basis

    basis = meaning_basis(384, 256)
    assert basis.shape == (384, 256)
    assert torch.allclose(basis.T @ basis, torch.eye(256), atol=1e-5)
    assert torch.equal(basis, meaning_basis(384, 256))  # a checkpoint stores it, but it never changes


def test_a_head_trained_without_texts_ignores_them_for_the_category():
    head = _head(text_weight=0.5, text_only_weight=2.0, mix_text=False).eval()
    image, mask = torch.randn(2, 12), torch.ones(2, dtype=torch.bool)
    a = head(image, mask, torch.randn(2, 6), mask)
    b = head(image, mask, torch.randn(2, 6) * 10, mask)
    assert torch.allclose(a.logits, b.logits)
    assert not torch.allclose(a.fused, b.fused, atol=1e-3)


def test_checkpoints_from_before_text_weights_behave_as_before():
    old = _head().eval()
    assert "text_weight" in old.config() and old.config()["text_weight"] == 0.0
    image, text, mask = torch.randn(2, 12), torch.randn(2, 6), torch.ones(2, dtype=torch.bool)
    out = old(image, mask, text, mask)
    hidden = old.mixer(torch.cat([old.image_proj(image), old.text_proj(text)], dim=1))
    assert torch.allclose(out.fused, torch.nn.functional.normalize(hidden, dim=1), atol=1e-6)
    assert "text_basis" not in old.state_dict()
