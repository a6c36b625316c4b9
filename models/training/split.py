"""The held-out validation photos of a training run, the same for the same seed."""

import random


def split_indices(labels: list[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A stratified train/validation split, the same for the same seed."""
    rng = random.Random(seed)
    train, val = [], []
    for label in sorted(set(labels)):
        members = [i for i, y in enumerate(labels) if y == label]
        rng.shuffle(members)
        cut = max(1, round(len(members) * val_fraction)) if val_fraction > 0 and len(members) > 1 else 0
        val += members[:cut]
        train += members[cut:]
    return sorted(train), sorted(val)
