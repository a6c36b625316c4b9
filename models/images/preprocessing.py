"""Preprocessing as data: each backbone's weights carry the transforms they were trained with."""

from dataclasses import asdict, dataclass

import torch
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
        return T.Compose(
            [
                T.ToImage(),
                T.Resize(self.resize_size, interpolation=T.InterpolationMode.BICUBIC, antialias=True),
                T.CenterCrop(self.input_size),
                T.ToDtype(torch.float32, scale=True),
                T.Normalize(self.mean, self.std),
            ]
        )

    def train_transform(self) -> T.Compose:
        """Random resized crop, horizontal flip and colour jitter, then normalise."""
        return T.Compose(
            [
                T.ToImage(),
                T.RandomResizedCrop(
                    self.input_size, scale=(0.6, 1.0), interpolation=T.InterpolationMode.BICUBIC, antialias=True
                ),
                T.RandomHorizontalFlip(),
                T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
                T.ToDtype(torch.float32, scale=True),
                T.Normalize(self.mean, self.std),
            ]
        )

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> "Preprocessing":
        return cls(
            input_size=int(data["input_size"]),  # type: ignore[arg-type]
            resize_size=int(data["resize_size"]),  # type: ignore[arg-type]
            mean=tuple(data["mean"]),  # type: ignore[arg-type]
            std=tuple(data["std"]),  # type: ignore[arg-type]
        )

    def at_size(self, input_size: int) -> "Preprocessing":
        """The same normalisation at another resolution (resize keeps the crop ratio)."""
        ratio = self.resize_size / self.input_size
        return Preprocessing(input_size, round(input_size * ratio), self.mean, self.std)
