"""Choosing where models run, and the precision they run in."""

import contextlib
from collections.abc import Iterator

import torch


def pick_device(requested: str | None = None) -> torch.device:
    """``requested`` if given, else CUDA when present, else the CPU."""
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def autocast(device: torch.device) -> Iterator[None]:
    """bf16 (or fp16 where bf16 is missing) autocast on CUDA; nothing on the CPU."""
    if device.type != "cuda":
        yield
        return
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    with torch.autocast("cuda", dtype=dtype):
        yield
