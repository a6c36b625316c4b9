"""Fixtures for the model tests: a small Fashion-MNIST ImageFolder built from the Debian package."""

from pathlib import Path

import pytest

from models.data import fashion_mnist


@pytest.fixture(scope="session")
def fmnist_small(tmp_path_factory) -> Path:
    """30 training and 30 test photos per category (600 real product photos in all)."""
    if not (fashion_mnist.DEBIAN_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.fail("Fashion-MNIST is missing: apt-get install dataset-fashion-mnist (make test does)", pytrace=False)
    out = tmp_path_factory.mktemp("fmnist")
    fashion_mnist.export_image_folder(out, per_class=30)
    return out
