"""Seeing each picture once, or with its mirror image too: chosen per model, on validation.

A model trained on mirrored pictures as well (``TrainConfig.mirror_views``) may classify better
when the features of a picture and of its mirror image are averaged, or worse: on Fashion-MNIST
validation the same averaging gained 0.23 points with one checkpoint and lost 0.17 with another
(docs/benchmarks.md). So a training run measures both on its validation photos and the
checkpoint records the better one (``ModelCard.mirror_average``), which the Predictor follows.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from models.checkpoint import ModelCard, write_card
from models.data.folder import FolderDataset, load_folder
from models.predictor import Predictor, ProductInput
from models.product_model import ProductModel
from models.training.split import split_indices


class ViewsError(ValueError):
    """The checkpoint and the data cannot be used to choose (one line, for the user)."""


@dataclass(frozen=True)
class ViewChoice:
    """Validation accuracy on the photos alone, seen once and with their mirror images."""

    once: float
    mirrored: float

    @property
    def mirror_average(self) -> bool:
        return self.mirrored > self.once  # a tie keeps the path with half the vision work


def choose_views(
    model: ProductModel,
    card: ModelCard,
    pictures: Sequence[Path],
    labels: Sequence[int],
    device: torch.device,
    batch_size: int = 128,
) -> ViewChoice:
    """Both accuracies as the services would measure them: the Predictor on the pictures' bytes.

    ``labels`` index ``card.categories``.
    """
    predictors = [Predictor(model, card, device, text_encoder=None, mirror_average=mirror) for mirror in (False, True)]
    right = [0, 0]
    for start in range(0, len(pictures), batch_size):
        chunk = [ProductInput(image=path.read_bytes()) for path in pictures[start : start + batch_size]]
        decoded = [predictors[0].decode(p) for p in chunk]  # read and decoded once for both ways
        truth = [card.categories[y] for y in labels[start : start + batch_size]]
        for way, predictor in enumerate(predictors):
            right[way] += sum(p.category == t for p, t in zip(predictor.predict_decoded(chunk, decoded), truth, strict=True))
    accuracies = [r / max(len(pictures), 1) for r in right]
    return ViewChoice(once=accuracies[0], mirrored=accuracies[1])


def choose_views_for_checkpoint(checkpoint: Path, data: Path, device: str | None = None) -> ViewChoice:
    """The same choice for a checkpoint trained before training made it, recorded in its card.

    ``data`` must be the folder it was trained on: the validation photos are that run's, found
    again from the seed and share in its card. The weights, and so the model version, stay.
    """
    predictor = Predictor.load(checkpoint, device=device, text=False)  # loaded and prepared as the services do
    model, card = predictor.model, predictor.card
    training = card.training
    if not training.get("mirror_views"):
        raise ViewsError(f"{checkpoint} was trained without mirrored pictures: it is served on each picture once")
    dataset = load_folder(data, None, None)
    if dataset.fingerprint() != training.get("data_sha256") or list(dataset.categories) != card.categories:
        raise ViewsError(f"{data} is not the data {checkpoint} was trained on ({training.get('data')}): pass that folder")
    labels = [s.label for s in dataset.samples]
    _, val_idx = split_indices(labels, float(training["val_fraction"]), int(training["seed"]))
    if not val_idx:
        raise ViewsError(f"{checkpoint} was trained without validation photos (--val-fraction 0): nothing to choose on")
    choice = choose_on_validation(model, card, dataset, val_idx, predictor.device)
    write_card(checkpoint, card)
    return choice


def choose_on_validation(
    model: ProductModel,
    card: ModelCard,
    dataset: FolderDataset,
    val_idx: Sequence[int],
    device: torch.device,
    batch_size: int = 128,
) -> ViewChoice:
    """:func:`choose_views` on a training run's validation samples, the choice recorded in ``card``."""
    samples = [dataset.samples[i] for i in val_idx]
    choice = choose_views(model, card, [s.path for s in samples], [s.label for s in samples], device, batch_size)
    card.mirror_average = choice.mirror_average
    card.metrics |= {"val_accuracy_once": round(choice.once, 4), "val_accuracy_mirror_averaged": round(choice.mirrored, 4)}
    return choice
