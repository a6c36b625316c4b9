"""The product model the services load: `make model`'s checkpoint, or a quick one trained once."""

from pathlib import Path

from services.errors import UserError
from services.settings import Settings

DEMO_TRAIN_PER_CLASS = 600


def ensure_model(settings: Settings) -> Path:
    """The checkpoint `make model` trains; else a quick demo model, trained once and cached.
    Checkpoints from before text was part of every product are passed over (retrained)."""
    if _carries_text(settings.checkpoint):
        return settings.checkpoint
    if (settings.checkpoint / "model_card.json").exists():
        print(f"   {settings.checkpoint} predates text in every product vector: `make model` retrains it")
    quick = settings.cache_dir / "checkpoints" / "fashion-mnist-demo"
    if _carries_text(quick):
        return quick
    from models.data import fashion_mnist
    from models.training import TrainConfig, train

    if not (fashion_mnist.DEBIAN_DIR / "train-images-idx3-ubyte.gz").exists():
        raise UserError("Fashion-MNIST is missing: run `make demo` (it installs dataset-fashion-mnist) or apt-get install it")
    data = settings.cache_dir / "datasets" / f"fashion-mnist-{DEMO_TRAIN_PER_CLASS}"
    if not (data / "train" / "texts.csv").exists():
        print(f"   exporting {DEMO_TRAIN_PER_CLASS} photos per category …")
        fashion_mnist.export_image_folder(data, per_class=DEMO_TRAIN_PER_CLASS)
    print("   training a quick demo model (frozen EfficientNet-Lite0, 64 px); `make model` trains the full one")
    result = train(data / "train", TrainConfig(input_size=64, epochs=8, batch_size=128), out=quick, progress=True)
    print(f"   validation accuracy {result.best_val_accuracy:.1%} in {result.seconds:.0f} s")
    return quick


def _carries_text(checkpoint: Path) -> bool:
    from models.checkpoint import CheckpointError, read_card

    try:
        return read_card(checkpoint).text_model is not None
    except CheckpointError:
        return False
