"""Moving and erasing cached activation maps (models/training/augmentation.py)."""

import torch
from torch.nn import functional as F

from models.training.augmentation import erase_maps, shift_maps


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


def _erased(original: torch.Tensor, erased: torch.Tensor) -> torch.Tensor:
    """Per sample, the cells that differ from the original in any channel."""
    return (original != erased).any(1)


def test_erasing_sets_one_rectangle_of_each_chosen_map_to_its_background():
    # Every cell differs from the top-left one in every channel, so each erased cell shows.
    maps = torch.rand(400, 3, 8, 8) + 1.0
    maps[:, :, 0, 0] = 0.0
    maps[:, 1, 0, 0] = -1.0
    erased = erase_maps(maps, 0.5, torch.Generator().manual_seed(0))
    cells = _erased(maps, erased)
    touched = cells.flatten(1).any(1)
    assert 150 < int(touched.sum()) < 250  # about half of the maps
    areas = []
    for n in touched.nonzero().flatten().tolist():
        rows, columns = cells[n].any(1).nonzero().flatten(), cells[n].any(0).nonzero().flatten()
        if rows.min() == 0 and columns.min() == 0:
            cells[n, 0, 0] = True  # erased to itself
        block = cells[n, rows.min() : rows.max() + 1, columns.min() : columns.max() + 1]
        assert bool(block.all()) and int(cells[n].sum()) == block.numel(), "the erased cells form one rectangle"
        assert torch.equal(erased[n, :, cells[n]], maps[n, :, :1, 0].expand(3, int(cells[n].sum())))
        areas.append(block.numel())
    # Between 2 % and 33 % of the 64 cells, rounded to whole rows and columns; not all the same size.
    assert min(areas) >= 1 and max(areas) <= 0.33 * 64 * 1.5 and len(set(areas)) > 5
    untouched = ~touched
    assert torch.equal(erased[untouched], maps[untouched])


def test_no_chance_of_erasing_leaves_the_maps_alone_and_a_seed_repeats_the_rectangles():
    maps = torch.randn(64, 2, 16, 16, dtype=torch.float16)
    assert erase_maps(maps, 0.0) is maps
    first = erase_maps(maps, 1.0, torch.Generator().manual_seed(3))
    assert first.dtype == torch.float16
    assert bool(_erased(maps, first).flatten(1).any(1).float().mean() > 0.9)  # the corner itself may be the rectangle
    assert torch.equal(first, erase_maps(maps, 1.0, torch.Generator().manual_seed(3)))
    assert not torch.equal(first, erase_maps(maps, 1.0, torch.Generator().manual_seed(4)))
