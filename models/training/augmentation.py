"""Augmenting cached activations, so training on them still sees moved pictures.

A convolutional stage commutes with translation: moving an activation map by one cell is
what moving the picture by the stage's stride would have produced (up to the edges). So a
random shift of the cached maps gives the translation augmentation of pixel-level training
without recomputing the frozen stages below the cut.
"""

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
