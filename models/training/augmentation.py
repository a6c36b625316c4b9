"""Augmenting cached activations, so training on them still sees moved pictures.

A convolutional stage commutes with translation: moving an activation map by one cell is
what moving the picture by the stage's stride would have produced (up to the edges). So a
random shift of the cached maps gives the translation augmentation of pixel-level training
without recomputing the frozen stages below the cut. Erasing a rectangle of the maps likewise
stands for erasing the part of the picture those cells see (random erasing, Zhong et al. 2017).
"""

import math

import torch
from torch.nn import functional as F


def shift_maps(maps: torch.Tensor, cells: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each ``[C, H, W]`` map of the batch moved by up to ``cells`` in each direction, its edge
    cells repeated into the space it leaves (a product photo's edges are its background).

    >>> maps = torch.arange(9.0).view(1, 1, 3, 3)
    >>> moved = shift_maps(maps.expand(64, 1, 3, 3), 1, torch.Generator().manual_seed(0))
    >>> moved.shape, bool((moved[:, 0, 1, 1] != 4).any()), sorted(set(moved[:, 0, 1, 1].tolist()))
    (torch.Size([64, 1, 3, 3]), True, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    """
    if cells <= 0:
        return maps
    n, _, height, width = maps.shape
    padded = F.pad(maps, (cells, cells, cells, cells), mode="replicate")
    span = 2 * cells + 1
    rows = torch.randint(0, span, (n,), generator=generator)
    columns = torch.randint(0, span, (n,), generator=generator)
    offsets = rows * span + columns
    out = torch.empty_like(maps)
    # One slice per offset (at most span² of them) rather than one per sample.
    for offset in offsets.unique().tolist():
        chosen = offsets == offset
        top, left = divmod(offset, span)
        out[chosen] = padded[chosen, :, top : top + height, left : left + width]
    return out


def erase_maps(
    maps: torch.Tensor,
    probability: float,
    generator: torch.Generator | None = None,
    area: tuple[float, float] = (0.02, 0.33),
    aspect: tuple[float, float] = (0.3, 3.3),
) -> torch.Tensor:
    """With ``probability``, a random rectangle of each ``[C, H, W]`` map (``area`` of it, of
    width/height ratio within ``aspect``) set to the map's top-left cell: the photo's background,
    so the product looks as if that part of it were missing rather than covered by a patch.

    >>> maps = torch.arange(16.0).view(1, 1, 4, 4).expand(256, 1, 4, 4)
    >>> erased = erase_maps(maps, 0.5, torch.Generator().manual_seed(0))
    >>> changed = (erased != maps).flatten(1).any(1)
    >>> 0.35 < changed.float().mean().item() < 0.65, set(erased[erased != maps].tolist())
    (True, {0.0})
    """
    if probability <= 0:
        return maps
    n, _, height, width = maps.shape
    chosen = torch.rand(n, generator=generator) < probability
    share = torch.empty(n).uniform_(*area, generator=generator)
    log_ratio = torch.empty(n).uniform_(math.log(aspect[0]), math.log(aspect[1]), generator=generator)
    ratio = log_ratio.exp()
    cells = share * height * width
    rows = (cells / ratio).sqrt().round().clamp(1, height).long()
    columns = (cells * ratio).sqrt().round().clamp(1, width).long()
    top = (torch.rand(n, generator=generator) * (height - rows + 1)).long()
    left = (torch.rand(n, generator=generator) * (width - columns + 1)).long()
    r = torch.arange(height).view(1, height, 1)
    c = torch.arange(width).view(1, 1, width)
    inside = (
        (r >= top.view(-1, 1, 1))
        & (r < (top + rows).view(-1, 1, 1))
        & (c >= left.view(-1, 1, 1))
        & (c < (left + columns).view(-1, 1, 1))
        & chosen.view(-1, 1, 1)
    )
    background = maps[:, :, :1, :1]
    return torch.where(inside.unsqueeze(1).to(maps.device), background, maps)
