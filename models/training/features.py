"""Computing frozen-backbone inputs once: pooled features or activations at a cut."""

import hashlib
import logging
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from models.data.folder import FolderDataset
from models.encoders.device import autocast
from models.encoders.vision import VisionEncoder

log = logging.getLogger(__name__)


def load_picture(path: Path) -> Image.Image:
    from models.images.decoding import decode_image

    return decode_image(path.read_bytes())


# no_grad, not inference_mode: moving the encoder inside inference_mode would turn its
# parameters into inference tensors, which fine-tuning cannot train afterwards.
@torch.no_grad()
def frozen_inputs(
    encoder: VisionEncoder,
    dataset: FolderDataset,
    cut: int | None,
    device: torch.device,
    batch_size: int = 128,
    cache_dir: Path | None = None,
    progress: bool = True,
    mirrored: bool = False,
) -> torch.Tensor:
    """Activations after ``cut`` stages for every sample (``cut=None``: pooled features).

    ``mirrored`` computes them for the horizontally flipped pictures: a second view that
    training on cached inputs can use as augmentation. Stored as float16 to halve memory;
    with ``cache_dir`` they are saved and reused by later runs over the same data,
    backbone, weights, resolution and view.
    """
    key = _cache_key(encoder, dataset, cut) + ("-mirrored" if mirrored else "")
    # Random weights differ from run to run: never reuse their features.
    cached = cache_dir / f"features-{key}.pt" if cache_dir and not encoder.weights.random else None
    if cached and cached.exists():
        log.info("reusing cached features", extra={"file": str(cached)})
        return torch.load(cached, weights_only=True)
    transform = encoder.preprocessing.eval_transform()
    encoder = encoder.prepare_for_inference(device)
    chunks = []
    samples = dataset.samples
    bar = tqdm(total=len(samples), desc="mirrored features" if mirrored else "features", unit="img", disable=not progress)
    for start in range(0, len(samples), batch_size):
        batch = torch.stack([transform(load_picture(s.path)) for s in samples[start : start + batch_size]])
        if mirrored:
            batch = batch.flip(dims=[3])
        x = batch.to(device).contiguous(memory_format=torch.channels_last)
        with autocast(device):
            out = encoder(x) if cut is None else encoder.bottom(x, cut)
        chunks.append(out.to(torch.float16).cpu().contiguous())
        bar.update(len(batch))
    bar.close()
    result = torch.cat(chunks)
    if cached:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.save(result, cached)
    return result


def _cache_key(encoder: VisionEncoder, dataset: FolderDataset, cut: int | None) -> str:
    digest = hashlib.sha256()
    weights = encoder.weights
    digest.update(f"{encoder.name}|{weights.source}|{weights.sha256}|{weights.preprocessing}|{cut}".encode())
    digest.update(dataset.fingerprint().encode())
    return digest.hexdigest()[:20]
