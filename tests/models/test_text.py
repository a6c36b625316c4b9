"""all-MiniLM-L6-v2 from its PyPI package, offline."""

import torch

from models.encoders.text import TextEncoder, product_text


def test_text_embeddings_are_offline_normalised_and_meaningful():
    encoder = TextEncoder()
    vectors, mask = encoder.embed(
        ["Red leather ankle boots", "Burgundy leather boots for autumn", "Stainless steel kitchen knife", "", None]
    )
    assert vectors.shape == (5, 384)
    assert mask.tolist() == [True, True, True, False, False]
    assert torch.allclose(vectors[:3].norm(dim=1), torch.ones(3), atol=1e-4)
    assert torch.count_nonzero(vectors[3:]) == 0
    similar = float(vectors[0] @ vectors[1])
    unrelated = float(vectors[0] @ vectors[2])
    assert similar > unrelated + 0.2


def test_product_text_joins_title_and_description():
    assert product_text("Boot", " Warm. ") == "Boot. Warm."
    assert product_text(None, "  ") == ""
