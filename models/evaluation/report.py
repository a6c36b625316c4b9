"""`shelfsight evaluate`: run a checkpoint over an ImageFolder and write a markdown report."""

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from models.data.folder import DatasetError, load_folder
from models.evaluation.charts import load_font
from models.evaluation.metrics import Metrics, classification_metrics
from models.predictor import Predictor, ProductInput


@dataclass(frozen=True)
class Evaluation:
    metrics: Metrics
    report: Path
    images_per_second: float


def evaluate(
    checkpoint: Path,
    data: Path,
    out: Path,
    texts: Path | None = None,
    per_class: int | None = None,
    batch_size: int = 128,
    device: str | None = None,
    progress: bool = True,
    mirror_average: bool | None = None,
) -> Evaluation:
    predictor = Predictor.load(checkpoint, device=device, mirror_average=mirror_average)
    dataset = load_folder(data, texts, per_class)
    unknown = sorted(set(dataset.categories) - set(predictor.categories))
    if unknown:
        raise DatasetError(f"{data} has categories the model does not know: {', '.join(unknown)}")
    index = {name: i for i, name in enumerate(predictor.categories)}
    labels = np.array([index[dataset.categories[s.label]] for s in dataset.samples])
    probabilities = np.zeros((len(dataset.samples), len(predictor.categories)), dtype=np.float64)
    started = time.perf_counter()
    bar = tqdm(total=len(dataset.samples), desc="evaluate", unit="img", disable=not progress)
    for start in range(0, len(dataset.samples), batch_size):
        chunk = dataset.samples[start : start + batch_size]
        inputs = [ProductInput(image=s.path.read_bytes(), title=s.title, description=s.description) for s in chunk]
        for row, prediction in enumerate(predictor.predict(inputs), start=start):
            probabilities[row] = prediction.probabilities
        bar.update(len(chunk))
    bar.close()
    rate = len(dataset.samples) / (time.perf_counter() - started)
    metrics = classification_metrics(probabilities, labels, predictor.categories)
    out.mkdir(parents=True, exist_ok=True)
    confusion_matrix_png(metrics.confusion, predictor.categories).save(out / "confusion_matrix.png")
    reliability_png(metrics.reliability).save(out / "reliability.png")
    report = out / "report.md"
    report.write_text(_markdown(metrics, predictor, checkpoint, data, rate))
    return Evaluation(metrics, report, rate)


def _markdown(m: Metrics, predictor: Predictor, checkpoint: Path, data: Path, rate: float) -> str:
    card = predictor.card
    lines = [
        f"# Evaluation of `{card.model_version}`",
        "",
        f"- checkpoint: `{checkpoint}`",
        f"- data: `{data}` ({m.samples} images)",
        f"- backbone: {card.backbone} ({card.backbone_weights}"
        + (", random initialisation" if card.random_init else f", pretrained on {card.backbone_pretrained_on}")
        + (", fine-tuned" if card.backbone_fine_tuned else ", frozen")
        + f"), input {card.preprocessing['input_size']} px",
        f"- text model: {card.text_model or 'none (trained on images only)'}",
        "- each picture seen " + ("with its mirror image, features averaged" if predictor.mirror_average else "once"),
        f"- throughput during evaluation: {rate:.0f} images/s on {predictor.device}",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| accuracy | {m.accuracy:.4f} |",
        f"| macro-F1 | {m.macro_f1:.4f} |",
        *[f"| top-{k} accuracy | {v:.4f} |" for k, v in m.top_k_accuracy.items()],
        f"| expected calibration error (15 bins) | {m.expected_calibration_error:.4f} |",
        "",
        "## Per category",
        "",
        "| category | precision | recall | F1 | support |",
        "| --- | --- | --- | --- | --- |",
        *[f"| {r.category} | {r.precision:.4f} | {r.recall:.4f} | {r.f1:.4f} | {r.support} |" for r in m.per_class],
        "",
        "## Confusion matrix",
        "",
        "Rows are the true category, columns the predicted one.",
        "",
        "![confusion matrix](confusion_matrix.png)",
        "",
        "## Reliability",
        "",
        "Mean confidence against accuracy per confidence bin; a calibrated model lies on the diagonal.",
        "",
        "![reliability diagram](reliability.png)",
        "",
    ]
    return "\n".join(lines)


def confusion_matrix_png(confusion: np.ndarray, categories: list[str], cell: int = 56) -> Image.Image:
    """A heat map with counts in each cell and category names on both axes."""
    n = len(categories)
    margin = 130
    image = Image.new("RGB", (margin + n * cell + 20, margin + n * cell + 20), "white")
    draw = ImageDraw.Draw(image)
    font = load_font(12)
    row_totals = confusion.sum(axis=1, keepdims=True).clip(min=1)
    share = confusion / row_totals
    for i in range(n):
        for j in range(n):
            shade = int(255 * (1 - share[i, j]))
            colour = (shade, shade, 255) if i == j else (255, shade, shade)
            x0, y0 = margin + j * cell, margin + i * cell
            draw.rectangle((x0, y0, x0 + cell - 1, y0 + cell - 1), fill=colour, outline=(200, 200, 200))
            text_colour = "white" if share[i, j] > 0.6 else "black"
            draw.text((x0 + cell / 2, y0 + cell / 2), str(confusion[i, j]), fill=text_colour, font=font, anchor="mm")
    for k, name in enumerate(categories):
        draw.text((margin - 6, margin + k * cell + cell / 2), name, fill="black", font=font, anchor="rm")
        label = Image.new("RGBA", (margin - 10, 16), (255, 255, 255, 0))
        ImageDraw.Draw(label).text((margin - 12, 8), name, fill="black", font=font, anchor="rm")
        rotated = label.rotate(90, expand=True)
        image.paste(rotated, (margin + k * cell + cell // 2 - 8, 4), rotated)
    draw.text((margin, margin + n * cell + 4), "columns: predicted category, rows: true category", fill="gray", font=font)
    return image


def reliability_png(bins: list[tuple[float, float, int]], size: int = 320) -> Image.Image:
    pad = 40
    image = Image.new("RGB", (size + 2 * pad, size + 2 * pad), "white")
    draw = ImageDraw.Draw(image)
    font = load_font(12)
    draw.rectangle((pad, pad, pad + size, pad + size), outline="black")
    draw.line((pad, pad + size, pad + size, pad), fill=(180, 180, 180), width=1)
    for confidence, accuracy, _count in bins:
        x = pad + confidence * size
        y = pad + size - accuracy * size
        draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=(30, 90, 200))
    draw.text((pad + size / 2, pad + size + 20), "confidence", fill="black", font=font, anchor="mm")
    draw.text((8, pad - 20), "accuracy", fill="black", font=font)
    return image
