"""The one object services use: load a checkpoint once, then categorise and embed products.

>>> # Predictor.load(Path("checkpoints/fashion")).predict([ProductInput(image=png_bytes, title="Red dress")])
"""

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from PIL import Image

from models.checkpoint import ModelCard, load_checkpoint
from models.encoders.device import autocast, pick_device
from models.encoders.text import TEXT_DIM, TextEncoder, product_text
from models.fusion import text_gate
from models.images.decoding import ImageError, ImagePolicy, decode_image
from models.product_model import ProductModel


@dataclass(frozen=True)
class ProductInput:
    """What the model sees of a product: a picture (bytes or decoded) and/or its text."""

    image: bytes | Image.Image | None = None
    title: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class Prediction:
    category: str
    confidence: float
    top: list[tuple[str, float]]  # the three likeliest categories
    probabilities: list[float]  # one per category, in the order of Predictor.categories
    vectors: dict[str, list[float]]  # "fused" always; "image" / "text" when that modality was used
    image_error: str | None = None
    text_says: float | None = None  # how much the text alone says of the category (0…1); None: no text


def version_name(card: ModelCard, mirror_average: bool) -> str:
    """A checkpoint's model version as served: marked when pictures are seen with their mirror images."""
    return card.model_version + ("+mirror" if mirror_average else "")


@dataclass(frozen=True)
class LoadedFrom:
    """How a Predictor was loaded, so another process can load the same one."""

    checkpoint: Path
    input_size: int | None = None
    text: bool = True


@dataclass
class Predictor:
    """Thread-safe, batched inference with one loaded checkpoint."""

    model: ProductModel
    card: ModelCard
    device: torch.device
    text_encoder: TextEncoder | None
    image_policy: ImagePolicy = field(default_factory=ImagePolicy)
    mirror_average: bool = False  # see ModelCard.mirror_average: about twice the vision cost
    origin: LoadedFrom | None = None  # None: built from a model in memory

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        # Pictures are resized one by one but normalised as a batch: at small input sizes the
        # per-picture float work cost as much as a fifth of the throughput.
        self._resize = self.model.encoder.preprocessing.resize_picture

    @classmethod
    def load(
        cls,
        checkpoint: Path,
        device: str | None = None,
        image_policy: ImagePolicy | None = None,
        input_size: int | None = None,
        text: bool = True,
        mirror_average: bool | None = None,
    ) -> "Predictor":
        """``input_size`` overrides the checkpoint's resolution and ``text=False`` leaves the text
        model unloaded (texts are then ignored): both for measuring the vision path alone.
        ``mirror_average`` overrides the checkpoint's choice (:attr:`ModelCard.mirror_average`)."""
        model, card = load_checkpoint(checkpoint)
        if input_size is not None:
            weights = model.encoder.weights
            model.encoder.weights = replace(weights, preprocessing=weights.preprocessing.at_size(input_size))
        where = pick_device(device)
        model.encoder.prepare_for_inference(where)
        model.fusion.to(where).eval()
        text_encoder = TextEncoder(device=where) if card.text_model and text else None
        mirror = card.mirror_average if mirror_average is None else mirror_average
        origin = LoadedFrom(checkpoint, input_size, text)
        return cls(model, card, where, text_encoder, image_policy or ImagePolicy(), mirror, origin)

    @property
    def model_version(self) -> str:
        """The checkpoint's version, marked when pictures are seen with their mirror images: the
        same weights then give other vectors, and products embedded either way can be told apart."""
        return version_name(self.card, self.mirror_average)

    @property
    def categories(self) -> list[str]:
        return self.card.categories

    @property
    def dims(self) -> dict[str, int]:
        return {"image": self.model.fusion.fused_dim, "text": self.model.fusion.fused_dim, "fused": self.model.fusion.fused_dim}

    def decode(self, product: ProductInput) -> tuple[Image.Image | None, str | None]:
        """The product's picture, or why it has none usable. Safe to call from many threads."""
        if product.image is None:
            return None, None
        if isinstance(product.image, Image.Image):
            return product.image.convert("RGB"), None
        try:
            return decode_image(product.image, self.image_policy), None
        except ImageError as exc:
            return None, str(exc)

    def _picture_features(self, batch: torch.Tensor) -> torch.Tensor:
        if not self.mirror_average:
            return self.model.encoder(batch).float()
        mirrored = batch.flip(dims=[3]).contiguous(memory_format=torch.channels_last)
        # Two passes, not one over both views: on the 2-core CI CPU a batch twice the size took
        # 1.4x as long as two (a timing in docs/benchmarks.md).
        return (self.model.encoder(batch).float() + self.model.encoder(mirrored).float()) / 2

    def predict(self, products: Sequence[ProductInput]) -> list[Prediction]:
        """Categories and vectors for a batch; a bad picture falls back to text, never raises."""
        decoded = [self.decode(p) for p in products]
        return self.predict_decoded(products, decoded)

    def resize(self, picture: Image.Image) -> torch.Tensor:
        """A decoded picture at the model's input size (uint8 ``[3, H, W]``), as predict_decoded takes it."""
        return self._resize(picture)

    def predict_decoded(
        self, products: Sequence[ProductInput], decoded: Sequence[tuple[Image.Image | torch.Tensor | None, str | None]]
    ) -> list[Prediction]:
        """Like :meth:`predict`, with pictures already decoded (e.g. in a thread pool), or already
        resized by :meth:`resize` (in another process)."""
        if not products:
            return []
        n = len(products)
        pictures = [d[0] for d in decoded]
        image_mask = torch.tensor([p is not None for p in pictures])
        texts = [product_text(p.title, p.description) for p in products]
        if self.text_encoder is not None:
            text, text_mask = self.text_encoder.embed(texts)
        else:
            text, text_mask = torch.zeros(n, TEXT_DIM), torch.zeros(n, dtype=torch.bool)
        present = [p if isinstance(p, torch.Tensor) else self._resize(p) for p in pictures if p is not None]
        with self._lock, torch.inference_mode():
            features = torch.zeros(n, self.model.encoder.dim, device=self.device)
            if present:
                pixels = torch.stack(present).to(self.device)
                batch = self.model.encoder.preprocessing.normalize_batch(pixels).contiguous(memory_format=torch.channels_last)
                with autocast(self.device):
                    features[image_mask.to(self.device)] = self._picture_features(batch)
            fusion, on = self.model.fusion, self.device
            says = fusion.text_informativeness(text.to(on), text_mask.to(on))
            # Next to a picture, a title that says nothing ("Item 40213", a SKU, another language)
            # must not pull the product away from what it looks like: the picture then places it.
            gate = torch.where(image_mask.to(on), text_gate(says), torch.ones_like(says))
            out = fusion(features, image_mask.to(on), text.to(on), text_mask.to(on), text_gate=gate)
            says = says.cpu()
            probabilities = out.logits.float().softmax(dim=1).cpu()
            fused, image_vec, text_vec = out.fused.float().cpu(), out.image.float().cpu(), out.text.float().cpu()
        results = []
        for i in range(n):
            top_p, top_i = probabilities[i].topk(min(3, probabilities.shape[1]))
            vectors = {"fused": fused[i].tolist()}
            if image_mask[i]:
                vectors["image"] = image_vec[i].tolist()
            if text_mask[i]:
                vectors["text"] = text_vec[i].tolist()
            results.append(
                Prediction(
                    category=self.categories[int(top_i[0])],
                    confidence=float(top_p[0]),
                    top=[(self.categories[int(j)], float(p)) for p, j in zip(top_p, top_i, strict=True)],
                    probabilities=probabilities[i].tolist(),
                    vectors=vectors,
                    image_error=decoded[i][1],
                    text_says=round(float(says[i]), 4) if text_mask[i] else None,
                )
            )
        return results
