"""Small synthetic shops written through the real `shelfsight datasets synthetic-shop` command."""

from pathlib import Path


def synthetic_shop(folder: Path, products: int, new: int, shoppers: int, before: int, after: int, *extra: str) -> Path:
    """Write a shop into ``folder`` with the CLI (asserting it succeeded) and return the folder."""
    from services.cli.main import main

    sizes = {"--products": products, "--new-products": new, "--shoppers": shoppers, "--clicks-before": before, "--clicks-after": after}
    argv = ["datasets", "synthetic-shop", str(folder), *(str(x) for pair in sizes.items() for x in pair), *extra]
    assert main(argv) == 0
    return folder
