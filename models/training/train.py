"""One training run: data → frozen inputs → fit with early stopping → checkpoint."""

import copy
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from models.checkpoint import ModelCard, save_checkpoint
from models.data.folder import FolderDataset, load_folder
from models.encoders.device import pick_device
from models.encoders.registry import build_vision_encoder
from models.encoders.text import TEXT_DIM, TextEncoder, product_text
from models.encoders.vision import VisionEncoder
from models.fusion import FusionClassifier
from models.product_model import ProductModel
from models.training.augmentation import erase_maps, shift_maps
from models.training.config import TrainConfig
from models.training.features import frozen_inputs, load_picture
from models.training.split import split_indices
from models.training.views import choose_on_validation

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model: ProductModel
    card: ModelCard
    history: list[dict[str, float]] = field(default_factory=list)
    best_val_accuracy: float = 0.0
    seconds: float = 0.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(
    data: Path,
    config: TrainConfig,
    out: Path | None = None,
    texts: Path | None = None,
    per_class: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train on the ImageFolder at ``data``; write a checkpoint to ``out`` when given."""
    started = time.monotonic()
    seed_everything(config.seed)
    device = pick_device(config.device)
    dataset = load_folder(data, texts, per_class)
    labels = [s.label for s in dataset.samples]
    train_idx, val_idx = split_indices(labels, config.val_fraction, config.seed)

    encoder = build_vision_encoder(config.backbone, weights=config.weights, input_size=config.input_size)
    use_text = config.use_text and any(s.title or s.description for s in dataset.samples)
    text, text_mask = _text_features(dataset, device) if use_text else _no_text(len(dataset.samples))
    model = ProductModel(encoder, _fusion_head(config, encoder.dim, len(dataset.categories), use_text))
    trainable = _unfreeze_top_stages(encoder, config)
    fit = _batches(model, dataset, text, text_mask, torch.tensor(labels), trainable, config, device, progress)
    history, best = _fit(fit, model, train_idx, val_idx, config, device, progress)

    card = _card(
        model,
        dataset,
        trainable,
        use_text,
        training={
            **config.to_dict(),
            "trainable_stages": trainable,
            "data": str(data),
            "data_sha256": dataset.fingerprint(),
            "samples": {"train": len(train_idx), "validation": len(val_idx)},
            "epochs_run": len(history),
            "seconds": round(time.monotonic() - started, 1),
            "device": str(device),
        },
        metrics={"best_val_accuracy": best, "history": history},
    )
    if config.mirror_views and val_idx:
        model.eval()
        choice = choose_on_validation(model, card, dataset, val_idx, device, config.batch_size)
        log.info(
            "views chosen on validation",
            extra={"once": choice.once, "mirror_averaged": choice.mirrored, "mirror_average": choice.mirror_average},
        )
    model = model.cpu().eval()
    if out is not None:
        save_checkpoint(out, model, card)
    return TrainResult(model, card, history, best, time.monotonic() - started)


def _fusion_head(config: TrainConfig, image_dim: int, num_classes: int, use_text: bool) -> FusionClassifier:
    return FusionClassifier(
        image_dim=image_dim,
        text_dim=TEXT_DIM,
        num_classes=num_classes,
        fused_dim=config.fused_dim,
        hidden_dim=config.hidden_dim,
        modality_dropout=config.modality_dropout,
        text_weight=config.text_weight,
        text_only_weight=config.text_only_weight,
        mix_text=use_text,
    )


def _unfreeze_top_stages(encoder: VisionEncoder, config: TrainConfig) -> int:
    """Freeze the backbone but for its top ``config.trainable_stages`` (none in frozen mode); how many that is."""
    stages = len(encoder.stages)
    trainable = 0 if config.mode == "frozen" else min(config.trainable_stages, stages)
    for p in encoder.parameters():
        p.requires_grad_(False)
    for stage in encoder.stages[stages - trainable :]:
        for p in stage.parameters():
            p.requires_grad_(True)
    return trainable


def _batches(
    model: ProductModel,
    dataset: FolderDataset,
    text: torch.Tensor,
    text_mask: torch.Tensor,
    y: torch.Tensor,
    trainable: int,
    config: TrainConfig,
    device: torch.device,
    progress: bool,
) -> "_Fit":
    """Where training batches come from: the frozen stages' activations, computed once and cached,
    or (all stages trainable) the pictures themselves."""
    stages = len(model.encoder.stages)
    if trainable == stages:
        return _EndToEndFit(model, dataset, text, text_mask, y)
    cut = None if trainable == 0 else stages - trainable
    inputs = frozen_inputs(model.encoder, dataset, cut, device, cache_dir=config.cache_dir, progress=progress)
    mirrored = (
        frozen_inputs(model.encoder, dataset, cut, device, cache_dir=config.cache_dir, progress=progress, mirrored=True)
        if config.mirror_views
        else None
    )
    return _CachedFit(
        model,
        inputs,
        text,
        text_mask,
        y,
        start=cut,
        mirrored=mirrored,
        seed=config.seed,
        shift_cells=config.shift_cells,
        erase_probability=config.erase_probability,
    )


def _card(
    model: ProductModel, dataset: FolderDataset, trainable: int, use_text: bool, training: dict[str, Any], metrics: dict[str, object]
) -> ModelCard:
    """The card of the trained ``model``: what it is, with how the run went (``training``, ``metrics``)."""
    encoder, fusion = model.encoder, model.fusion
    return ModelCard(
        backbone=encoder.name,
        backbone_weights=encoder.weights.source,
        backbone_pretrained_on=encoder.weights.pretrained_on,
        backbone_fine_tuned=trainable > 0,
        image_dim=encoder.dim,
        preprocessing=encoder.preprocessing.to_dict(),
        # Carried whenever the text places products, even by a head that never saw texts.
        text_model=TextEncoder.name if use_text or fusion.places_by_text else None,
        text_dim=TEXT_DIM,
        fusion=fusion.config(),
        categories=list(dataset.categories),
        training=training,
        metrics=metrics,
    )


def _no_text(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(n, TEXT_DIM), torch.zeros(n, dtype=torch.bool)


def _text_features(dataset: FolderDataset, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Each distinct text embedded once (catalogue titles repeat: Fashion-MNIST's 60,000 photos
    have about 2,000 distinct ones)."""
    texts = [product_text(s.title, s.description) for s in dataset.samples]
    distinct = sorted(set(texts))
    vectors, mask = TextEncoder(device=device).embed(list(distinct))
    row = {t: i for i, t in enumerate(distinct)}
    at = torch.tensor([row[t] for t in texts], dtype=torch.long)
    return vectors[at], mask[at]


class _CachedFit:
    """Batches from cached activations (or pooled features) plus text."""

    def __init__(
        self,
        model: ProductModel,
        inputs: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        y: torch.Tensor,
        start: int | None,
        mirrored: torch.Tensor | None = None,
        seed: int = 0,
        shift_cells: int = 0,
        erase_probability: float = 0.0,
    ) -> None:
        self.model, self.inputs, self.text, self.text_mask, self.y, self.start = model, inputs, text, text_mask, y, start
        self.mirrored, self.shift_cells, self.erase_probability = mirrored, shift_cells, erase_probability
        self.views = torch.Generator().manual_seed(seed + 1)

    def batch(self, idx: list[int], device: torch.device, training: bool) -> "_Batch":
        x = self.inputs[idx]
        if training and self.mirrored is not None:
            flip = torch.rand(len(idx), generator=self.views) < 0.5
            x = torch.where(flip.view(-1, *[1] * (x.dim() - 1)), self.mirrored[idx], x)
        if training and self.start is not None:  # maps, not pooled features: they can be moved and erased
            x = erase_maps(shift_maps(x, self.shift_cells, self.views), self.erase_probability, self.views)
        x = x.to(device).float()
        features = x if self.start is None else self.model.encoder(x.contiguous(memory_format=torch.channels_last), start=self.start)
        return _Batch(features, self.text[idx].to(device), self.text_mask[idx].to(device), self.y[idx].to(device))


class _EndToEndFit:
    """Batches of augmented pictures through the whole backbone."""

    def __init__(self, model: ProductModel, dataset: FolderDataset, text: torch.Tensor, text_mask: torch.Tensor, y: torch.Tensor) -> None:
        self.model, self.dataset, self.text, self.text_mask, self.y = model, dataset, text, text_mask, y
        self.train_tf = model.encoder.preprocessing.train_transform()
        self.eval_tf = model.encoder.preprocessing.eval_transform()

    def batch(self, idx: list[int], device: torch.device, training: bool) -> "_Batch":
        tf = self.train_tf if training else self.eval_tf
        x = torch.stack([tf(load_picture(self.dataset.samples[i].path)) for i in idx]).to(device)
        features = self.model.encoder(x.contiguous(memory_format=torch.channels_last))
        return _Batch(features, self.text[idx].to(device), self.text_mask[idx].to(device), self.y[idx].to(device))


_Fit = _CachedFit | _EndToEndFit


@dataclass
class _Batch:
    """Pooled picture features of a batch (through the trainable stages), its texts and labels."""

    features: torch.Tensor
    text: torch.Tensor
    text_mask: torch.Tensor
    y: torch.Tensor

    def logits(self, model: ProductModel, photos_only: bool = False) -> torch.Tensor:
        image_mask = torch.ones(len(self.y), dtype=torch.bool, device=self.y.device)
        text_mask = torch.zeros_like(self.text_mask) if photos_only else self.text_mask
        return model.fuse_features(self.features, image_mask, self.text, text_mask).logits


def _fit(
    fit: "_Fit", model: ProductModel, train_idx: list[int], val_idx: list[int], config: TrainConfig, device: torch.device, progress: bool
) -> tuple[list[dict[str, float]], float]:
    model.to(device)
    head = [p for p in model.fusion.parameters()]
    body = [p for p in model.encoder.parameters() if p.requires_grad]
    groups: list[dict[str, Any]] = [{"params": head, "lr": config.lr}]
    if body:
        groups.append({"params": body, "lr": config.backbone_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    steps = config.epochs * max(1, -(-len(train_idx) // config.batch_size))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in groups], total_steps=steps, pct_start=0.15)
    generator = torch.Generator().manual_seed(config.seed)
    best, best_state, stale, history = -1.0, None, 0, []
    for epoch in range(1, config.epochs + 1):
        _train_mode(model)
        order = [train_idx[i] for i in torch.randperm(len(train_idx), generator=generator).tolist()]
        total_loss, seen = 0.0, 0
        bar = tqdm(total=len(order), desc=f"epoch {epoch}/{config.epochs}", unit="img", disable=not progress, leave=False)
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size]
            batch = fit.batch(idx, device, training=True)
            loss = F.cross_entropy(batch.logits(model), batch.y, label_smoothing=config.label_smoothing)
            if batch.text_mask.any():
                # Every sample also teaches the picture alone: catalogue titles often name the
                # category, and a model that only saw both would learn to read the title.
                loss = loss + F.cross_entropy(batch.logits(model, photos_only=True), batch.y, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += loss.item() * len(idx)
            seen += len(idx)
            bar.update(len(idx))
        bar.close()
        # Chosen on the pictures alone: catalogue titles often name the category, which would make
        # the validation figure with texts near-perfect and blind to the vision side.
        val_acc, with_text = _accuracies(fit, model, val_idx or train_idx, device, config.batch_size)
        record = {"epoch": epoch, "train_loss": round(total_loss / max(seen, 1), 4), "val_accuracy": round(val_acc, 4)}
        summary = f"epoch {epoch}/{config.epochs}: train loss {total_loss / max(seen, 1):.4f}, validation accuracy {val_acc:.4f}"
        if with_text is not None:
            record["val_accuracy_with_text"] = round(with_text, 4)
            summary += f" (with texts {with_text:.4f})"
        history.append(record)
        if progress:
            tqdm.write(summary)
        else:
            log.info(summary)
        if val_acc > best:
            best, best_state, stale = val_acc, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= config.patience:
                log.info("early stopping", extra={"epoch": epoch, "best_val_accuracy": best})
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return history, best


def _train_mode(model: ProductModel) -> None:
    """Train the head and the trainable stages; frozen stages keep their BatchNorm statistics."""
    model.eval()
    model.fusion.train()
    for stage in model.encoder.stages:
        if any(p.requires_grad for p in stage.parameters()):
            stage.train()


@torch.no_grad()
def _accuracies(fit: "_Fit", model: ProductModel, idx: list[int], device: torch.device, batch_size: int) -> tuple[float, float | None]:
    """Accuracy on the pictures alone and, when the data has texts, as listed: one pass through
    the backbone's trainable stages serves both."""
    model.eval()
    photos = listed = 0
    with_text = bool(fit.text_mask.any())
    for start in range(0, len(idx), batch_size):
        batch = fit.batch(idx[start : start + batch_size], device, training=False)
        photos += int((batch.logits(model, photos_only=True).argmax(1) == batch.y).sum())
        if with_text:
            listed += int((batch.logits(model).argmax(1) == batch.y).sum())
    n = max(len(idx), 1)
    return photos / n, (listed / n if with_text else None)
