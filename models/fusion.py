"""Fusing image and text embeddings into one product vector and a category.

Either modality may be missing for a product: a learned "missing" embedding stands in,
and training drops modalities at random so the model does not lean on one alone.

The text's meaning also enters the fused vector directly (``text_weight``): the sentence
embedding goes through a fixed orthonormal projection, which keeps its geometry, and is
added to the mixed vector. The trained layers only ever saw the training catalogue's texts
(Fashion-MNIST titles), so on any other store's language they would place products by what
they resemble among those; the fixed projection keeps "a space opera" next to "a science
fiction film" whatever the head was trained on, and two different titles never give one vector.

>>> import torch
>>> head = FusionClassifier(image_dim=8, text_dim=4, num_classes=3, fused_dim=6, hidden_dim=16)
>>> out = head(torch.randn(2, 8), torch.tensor([True, False]), torch.randn(2, 4), torch.tensor([False, True]))
>>> out.fused.shape, out.logits.shape, [round(n, 4) for n in out.fused.detach().norm(dim=1).tolist()]
(torch.Size([2, 6]), torch.Size([2, 3]), [1.0, 1.0])
"""

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class FusionOutput:
    fused: torch.Tensor  # [B, fused_dim], L2-normalised
    image: torch.Tensor  # [B, fused_dim], L2-normalised projection of the image (missing rows: zeros)
    text: torch.Tensor  # [B, fused_dim], likewise for the text
    logits: torch.Tensor  # [B, num_classes]


class FusionClassifier(nn.Module):
    """Projects each modality, fuses them, and classifies the fused representation."""

    def __init__(
        self,
        *,
        image_dim: int,
        text_dim: int,
        num_classes: int,
        fused_dim: int = 256,
        hidden_dim: int = 512,
        dropout: float = 0.2,
        modality_dropout: float = 0.2,
        text_weight: float = 0.0,
        text_only_weight: float = 0.0,
        mix_text: bool = True,
    ) -> None:
        """``text_weight``: how much the text's meaning weighs against the mixed vector (0: not
        at all, as in checkpoints from before it existed); ``text_only_weight``: the same for a
        product without a picture, where the text is all there is to go on. ``mix_text=False``:
        the head never saw texts in training, so the mixer and classifier treat text as missing
        (the text still places the product through the weights)."""
        super().__init__()
        self.image_dim, self.text_dim, self.num_classes = image_dim, text_dim, num_classes
        self.fused_dim, self.hidden_dim = fused_dim, hidden_dim
        self.dropout, self.modality_dropout = dropout, modality_dropout
        self.text_weight, self.text_only_weight, self.mix_text = text_weight, text_only_weight, mix_text
        self.image_proj = nn.Sequential(nn.LayerNorm(image_dim), nn.Linear(image_dim, fused_dim))
        self.text_proj = nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, fused_dim))
        self.missing_image = nn.Parameter(torch.zeros(fused_dim))
        self.missing_text = nn.Parameter(torch.zeros(fused_dim))
        self.mixer = nn.Sequential(nn.Linear(2 * fused_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden_dim, fused_dim))
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(fused_dim, num_classes))
        if self.places_by_text:
            self.register_buffer("text_basis", meaning_basis(text_dim, fused_dim))

    @property
    def places_by_text(self) -> bool:
        """Whether the text's meaning enters the fused vector (see ``text_weight``)."""
        return self.text_weight > 0 or self.text_only_weight > 0

    def config(self) -> dict[str, float | int]:
        return {
            "image_dim": self.image_dim,
            "text_dim": self.text_dim,
            "num_classes": self.num_classes,
            "fused_dim": self.fused_dim,
            "hidden_dim": self.hidden_dim,
            "dropout": self.dropout,
            "modality_dropout": self.modality_dropout,
            "text_weight": self.text_weight,
            "text_only_weight": self.text_only_weight,
            "mix_text": self.mix_text,
        }

    def forward(
        self,
        image: torch.Tensor,
        image_mask: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        text_gate: torch.Tensor | None = None,
    ) -> FusionOutput:
        """``text_gate`` (0…1 per product, inference only): how much a text next to a picture may
        say; at 0 the picture alone places the product (:func:`text_gate`)."""
        has_text, has_image = text_mask, image_mask
        mixed_text = text_mask if self.mix_text else torch.zeros_like(text_mask)
        if self.training and self.modality_dropout > 0:
            image_mask, mixed_text = self._drop_modalities(image_mask, mixed_text)
        image_p = self.image_proj(image)
        text_p = self.text_proj(text)
        image_in = torch.where(image_mask[:, None], image_p, self.missing_image.expand_as(image_p))
        text_in = torch.where(mixed_text[:, None], text_p, self.missing_text.expand_as(text_p))
        if text_gate is not None:
            gate = text_gate.to(text_p.dtype)[:, None]
            text_in = gate * text_in + (1 - gate) * self.missing_text.expand_as(text_p)
        hidden = self.mixer(torch.cat([image_in, text_in], dim=1))
        fused = F.normalize(hidden, dim=1)
        if self.places_by_text:
            basis = self.get_buffer("text_basis")  # a buffer (register_buffer): a tensor
            meaning = F.normalize(text @ basis, dim=1) * has_text[:, None]
            weight = self.text_only_weight + has_image.to(fused.dtype) * (self.text_weight - self.text_only_weight)
            if text_gate is not None:
                weight = weight * text_gate.to(fused.dtype)
            fused = F.normalize(fused + weight[:, None] * meaning, dim=1)
            text_vec = meaning
        else:
            text_vec = F.normalize(text_p, dim=1) * text_mask[:, None]
        return FusionOutput(
            fused=fused,
            image=F.normalize(image_p, dim=1) * image_mask[:, None],
            text=text_vec,
            logits=self.classifier(hidden),
        )

    def text_informativeness(self, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """How much each text alone says about the category: 1 − the entropy of the head's
        prediction from the text without a picture, over its maximum (0: nothing, "Item 40213";
        1: certain, "Ankle boot"). Titles in a language the text model does not read score low too."""
        n = text.shape[0]
        none = torch.zeros(n, self.image_dim, dtype=text.dtype, device=text.device)
        logits = self.forward(none, torch.zeros_like(text_mask), text, text_mask).logits.float()
        probabilities = logits.softmax(dim=1)
        entropy = -(probabilities * probabilities.clamp_min(1e-12).log()).sum(dim=1)
        return (1 - entropy / math.log(self.num_classes)) * text_mask.float()

    def _drop_modalities(self, image_mask: torch.Tensor, text_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        both = image_mask & text_mask
        drop = both & (torch.rand_like(image_mask, dtype=torch.float) < self.modality_dropout)
        drop_image = drop & (torch.rand_like(image_mask, dtype=torch.float) < 0.5)
        drop_text = drop & ~drop_image
        return image_mask & ~drop_image, text_mask & ~drop_text


def meaning_basis(text_dim: int, fused_dim: int, seed: int = 0) -> torch.Tensor:
    """A fixed ``[text_dim, fused_dim]`` matrix with orthonormal columns (or rows, when the
    fused space is the larger): projecting through it keeps cosine similarities of sentence
    embeddings nearly intact (in expectation it scales every inner product by the same factor)."""
    generator = torch.Generator().manual_seed(seed)
    big, small = max(text_dim, fused_dim), min(text_dim, fused_dim)
    q, _ = torch.linalg.qr(torch.randn(big, small, generator=generator))
    return q if text_dim >= fused_dim else q.T.contiguous()


def text_gate(informativeness: torch.Tensor, says_nothing: float = 0.15, says_enough: float = 0.45) -> torch.Tensor:
    """How much a text next to a picture may place the product: 0 up to ``says_nothing``, all of it
    from ``says_enough``, in between linearly. The thresholds separate what the Fashion-MNIST
    model reads of neutral or foreign titles (≤ 0.11: "Item 40213", "SKU 83721-B", "Robe d'été")
    from its catalogue's titles (≥ 0.63: "Slim denim trouser"), docs/models.md.

    >>> text_gate(torch.tensor([0.05, 0.3, 0.9])).tolist()
    [0.0, 0.5, 1.0]
    """
    return ((informativeness - says_nothing) / (says_enough - says_nothing)).clamp(0.0, 1.0)
