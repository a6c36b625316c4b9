"""Checkpoints: ``weights.safetensors`` plus ``model_card.json`` describing everything else.

A checkpoint that does not fit this code (another format version, an unknown backbone,
tensors of the wrong shape) raises :class:`CheckpointError` with one clear line.
"""

import hashlib
import json
import platform
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from models.encoders.registry import VISION_ENCODERS, build_vision_encoder
from models.fusion import FusionClassifier
from models.images.preprocessing import Preprocessing
from models.product_model import ProductModel

FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
CARD_FILE = "model_card.json"


class CheckpointError(ValueError):
    pass


@dataclass
class ModelCard:
    """What a checkpoint is, how it was made, and how well it did."""

    backbone: str
    backbone_weights: str  # source of the pretrained weights, or "random"
    backbone_pretrained_on: str | None
    backbone_fine_tuned: bool
    image_dim: int
    preprocessing: dict[str, object]
    text_model: str | None  # None: trained without texts; text is ignored at inference
    text_dim: int
    fusion: dict[str, Any]  # FusionClassifier's keyword arguments
    categories: list[str]
    training: dict[str, Any] = field(default_factory=dict)  # the run's settings and data, as JSON
    metrics: dict[str, object] = field(default_factory=dict)
    libraries: dict[str, str] = field(default_factory=dict)
    # Serve each picture with its mirror image, features averaged: chosen on validation when the
    # model learned from mirrored pictures too (models/training/views.py); twice the vision work.
    mirror_average: bool = False
    created_at: str = ""
    format_version: int = FORMAT_VERSION
    model_version: str = ""

    @property
    def random_init(self) -> bool:
        return self.backbone_weights == "random"


def library_versions() -> dict[str, str]:
    import torchvision

    # torch's own version string names the build too (e.g. +cu130), which matters for numbers.
    versions = {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__}
    for name in ("sentence-transformers", "shelfsight"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def save_checkpoint(directory: Path, model: ProductModel, card: ModelCard) -> Path:
    """Write the weights and the card; the model version is derived from the weights' hash."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"fusion.{k}": v.detach().cpu().contiguous() for k, v in model.fusion.state_dict().items()}
    if card.backbone_fine_tuned or card.random_init:
        tensors |= {f"encoder.{k}": v.detach().cpu().contiguous() for k, v in model.encoder.state_dict().items()}
    save_file(tensors, str(directory / WEIGHTS_FILE))
    digest = hashlib.sha256((directory / WEIGHTS_FILE).read_bytes()).hexdigest()[:12]
    card.model_version = f"{card.backbone}-{len(card.categories)}c-{digest}"
    card.created_at = card.created_at or datetime.now(UTC).isoformat(timespec="seconds")
    card.libraries = card.libraries or library_versions()
    write_card(directory, card)
    return directory


def write_card(directory: Path, card: ModelCard) -> None:
    """The card alone: for changes that leave the weights (and so the model version) as they are."""
    (directory / CARD_FILE).write_text(json.dumps(asdict(card), indent=2) + "\n")


def read_card(directory: Path) -> ModelCard:
    path = directory / CARD_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a Shelfsight checkpoint: {CARD_FILE} is missing")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None
    if data.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{directory} has checkpoint format {data.get('format_version')!r}; this Shelfsight reads "
            f"format {FORMAT_VERSION}: retrain with `shelfsight train`"
        )
    try:
        card = ModelCard(**data)
    except TypeError as exc:
        raise CheckpointError(f"{path} does not describe a model this Shelfsight knows: {exc}") from None
    if card.backbone not in VISION_ENCODERS:
        raise CheckpointError(f"{directory} uses backbone {card.backbone!r}, unknown here ({', '.join(VISION_ENCODERS)})")
    return card


def load_checkpoint(directory: Path) -> tuple[ProductModel, ModelCard]:
    """The model (on the CPU, in eval mode) and its card."""
    card = read_card(directory)
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise CheckpointError(f"{directory} has no {WEIGHTS_FILE}")
    tensors = load_file(str(weights_path))
    has_encoder = any(k.startswith("encoder.") for k in tensors)
    if card.random_init or has_encoder:
        weights: str | None = "random"  # every encoder tensor comes from the checkpoint
    else:
        weights = "default"
    preprocessing = Preprocessing.from_dict(card.preprocessing)
    try:
        encoder = build_vision_encoder(card.backbone, weights=weights, input_size=preprocessing.input_size)
    except ValueError as exc:
        raise CheckpointError(f"cannot rebuild the backbone of {directory}: {exc}") from None
    encoder.weights = type(encoder.weights)(
        source=card.backbone_weights, preprocessing=preprocessing, pretrained_on=card.backbone_pretrained_on
    )
    if encoder.dim != card.image_dim:
        raise CheckpointError(f"{directory}: backbone gives {encoder.dim}-d features, the card says {card.image_dim}")
    fusion = FusionClassifier(**card.fusion)
    if fusion.num_classes != len(card.categories):
        raise CheckpointError(f"{directory}: {len(card.categories)} categories but a {fusion.num_classes}-way head")
    model = ProductModel(encoder, fusion)
    _load_part(model.fusion, tensors, "fusion.", directory)
    if has_encoder:
        _load_part(model.encoder, tensors, "encoder.", directory)
    return model.eval(), card


def _load_part(module: torch.nn.Module, tensors: dict[str, torch.Tensor], prefix: str, directory: Path) -> None:
    part = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
    try:
        module.load_state_dict(part, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise CheckpointError(f"{directory}: weights do not fit the model ({first})") from None
