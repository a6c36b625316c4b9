"""Small synthetic shops written through the real `shelfsight datasets synthetic-shop` command."""

from pathlib import Path


def synthetic_shop(folder: Path, products: int, new: int, shoppers: int, before: int, after: int, *extra: str) -> Path:
    """Write a shop into ``folder`` with the CLI (asserting it succeeded) and return the folder."""
    from services.cli.main import main

    sizes = {"--products": products, "--new-products": new, "--shoppers": shoppers, "--clicks-before": before, "--clicks-after": after}
    argv = ["datasets", "synthetic-shop", str(folder), *(str(x) for pair in sizes.items() for x in pair), *extra]
    assert main(argv) == 0
    return folder


def live_services_env(monkeypatch, checkpoint: Path, kafka, **extra: str) -> None:  # type: ignore[no-untyped-def]
    """Settings for a run that starts `serve` and `profiles` as processes: this test's topics, the
    small checkpoint, and learners checkpointed and reloaded within seconds (the run waits for them)."""
    values = {
        "MODEL_DIR": str(checkpoint),
        "DEVICE": "cpu",
        "TOPIC_PREFIX": kafka.topic_prefix,
        "REDIS_URL": kafka.redis_url,
        "LEARNERS_CHECKPOINT_S": "2",
        "LEARNERS_REFRESH_S": "1",
        "LOG_LEVEL": "WARNING",
        **extra,
    }
    for name, value in values.items():
        monkeypatch.setenv(f"SHELFSIGHT_{name}", value)
