"""Moving cached activation maps (models/training/augmentation.py)."""

import torch
from torch.nn import functional as F

from models.training.augmentation import shift_maps


def _offsets(original: torch.Tensor, moved: torch.Tensor, cells: int) -> list[tuple[int, int] | None]:
    """For each sample, the window of the edge-padded original that it equals (None: none does)."""
    padded = F.pad(original, (cells, cells, cells, cells), mode="replicate")
    height, width = original.shape[-2:]
    found: list[tuple[int, int] | None] = []
    for n in range(len(original)):
        windows = [
            (top, left)
            for top in range(2 * cells + 1)
            for left in range(2 * cells + 1)
            if torch.equal(padded[n, :, top : top + height, left : left + width], moved[n])
        ]
        found.append(windows[0] if windows else None)
    return found


def test_every_map_is_its_original_moved_by_at_most_the_given_cells():
    maps = torch.randn(200, 3, 6, 5)
    moved = shift_maps(maps, 2, torch.Generator().manual_seed(0))
    offsets = _offsets(maps, moved, 2)
    assert None not in offsets
    # Every one of the 25 moves happens, the still one included, and no sample is left as it was
    # more often than chance allows (1 in 25).
    assert len(set(offsets)) == 25
    assert sum(torch.equal(a, b) for a, b in zip(maps, moved, strict=True)) < 200 * 0.1


def test_the_edges_are_repeated_into_the_space_a_map_leaves():
    maps = torch.arange(16.0).view(1, 1, 4, 4).repeat(50, 1, 1, 1)
    moved = shift_maps(maps, 1, torch.Generator().manual_seed(1))
    down_right = [n for n, at in enumerate(_offsets(maps, moved, 1)) if at == (0, 0)]
    assert down_right, "50 samples, 9 moves: one of them moved down and right"
    expected = torch.tensor([[0, 0, 1, 2], [0, 0, 1, 2], [4, 4, 5, 6], [8, 8, 9, 10]], dtype=torch.float)
    assert torch.equal(moved[down_right[0], 0], expected)


def test_no_cells_leaves_the_maps_alone_and_a_seed_repeats_the_moves():
    maps = torch.randn(32, 4, 8, 8, dtype=torch.float16)
    assert shift_maps(maps, 0) is maps
    first = shift_maps(maps, 1, torch.Generator().manual_seed(7))
    assert first.dtype == torch.float16
    assert torch.equal(first, shift_maps(maps, 1, torch.Generator().manual_seed(7)))
    assert not torch.equal(first, shift_maps(maps, 1, torch.Generator().manual_seed(8)))
