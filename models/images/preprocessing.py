"""Preprocessing as data: each backbone's weights carry the transforms they were trained with."""

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2 as T


@dataclass(frozen=True)
class Preprocessing:
    """How pictures become tensors for one backbone.

    >>> from PIL import Image
    >>> p = Preprocessing(input_size=64, resize_size=72, mean=(0.5,) * 3, std=(0.5,) * 3)
    >>> p.eval_transform()(Image.new("RGB", (28, 28))).shape
    torch.Size([3, 64, 64])
    """

    input_size: int
    resize_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def eval_transform(self) -> T.Compose:
        """Resize (bicubic, antialiased: small pictures are upscaled smoothly), centre crop, normalise."""
        return T.Compose([T.Lambda(self.resize_picture), T.ToDtype(torch.float32, scale=True), T.Normalize(self.mean, self.std)])

    def resize_picture(self, picture: Image.Image) -> torch.Tensor:
        """The per-picture half of :meth:`eval_transform`: shorter side to ``resize_size``,
        centre crop to ``input_size``, as a uint8 ``[3, H, W]`` tensor.

        Done with Pillow directly: it is the hot path of the Predictor, and torchvision's
        transform machinery costs more than the resize itself for small photos.
        """
        picture = picture.convert("RGB")
        width, height = picture.size
        scale = self.resize_size / min(width, height)
        resized = picture.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BICUBIC)
        left, top = (resized.width - self.input_size) // 2, (resized.height - self.input_size) // 2
        cropped = resized.crop((left, top, left + self.input_size, top + self.input_size))
        return torch.from_numpy(np.array(cropped)).permute(2, 0, 1)

    def normalize_batch(self, batch: torch.Tensor) -> torch.Tensor:
        """The per-batch half: uint8 ``[B, 3, H, W]`` → normalised float32, in one pass.

        >>> p = Preprocessing(input_size=2, resize_size=2, mean=(0.5,) * 3, std=(0.5,) * 3)
        >>> p.normalize_batch(torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)).unique().tolist()
        [1.0]
        """
        mean = torch.tensor(self.mean, device=batch.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=batch.device).view(1, 3, 1, 1)
        return (batch.float().div_(255.0) - mean).div_(std)

    def train_transform(self) -> T.Compose:
        """Random resized crop, horizontal flip and colour jitter, then normalise."""
        return T.Compose(
            [
                T.ToImage(),
                T.RandomResizedCrop(self.input_size, scale=(0.6, 1.0), interpolation=T.InterpolationMode.BICUBIC, antialias=True),
                T.RandomHorizontalFlip(),
                T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
                T.ToDtype(torch.float32, scale=True),
                T.Normalize(self.mean, self.std),
            ]
        )

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Preprocessing":
        """From :meth:`to_dict`'s fields, as a checkpoint's card (JSON) holds them."""
        return cls(
            input_size=int(data["input_size"]),
            resize_size=int(data["resize_size"]),
            mean=tuple(data["mean"]),
            std=tuple(data["std"]),
        )

    def at_size(self, input_size: int) -> "Preprocessing":
        """The same normalisation at another resolution (resize keeps the crop ratio)."""
        ratio = self.resize_size / self.input_size
        return Preprocessing(input_size, round(input_size * ratio), self.mean, self.std)
