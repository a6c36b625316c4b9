"""Images/s of the Predictor against the bare backbone forward pass, in the same run.

The Predictor does everything a service needs per image — decode the PNG/JPEG bytes,
preprocess, backbone, fusion head, softmax, vectors to lists — while the baseline only
runs the backbone on a ready tensor of the same batch size and resolution. Products are
measured as listed (photo, title and description: the title goes through MiniLM) and, for
comparison, as bare photos. The machine is
shared and noisy, so both are measured alternately, several rounds each, and the ratio of
the medians is printed.

    .venv/bin/python bench/model_throughput.py --checkpoint CKPT [--sizes 64 224] [--device cuda] [--photos-only]
        [--mirror-average on|off]

The Predictor runs as the services would load it: on each picture and its mirror image when the
checkpoint asks for it (``ModelCard.mirror_average``); ``--mirror-average`` overrides that.

``--photos-only`` skips the products as listed and leaves the text model unloaded (where its
package is not installed, e.g. on a borrowed GPU machine: bench/gpu.sh).
"""

import argparse
import statistics
import time
from pathlib import Path

import torch

from models.checkpoint import load_checkpoint
from models.data.fashion_mnist import CATEGORIES, iter_split, product_texts
from models.encoders.device import autocast, pick_device
from models.predictor import Predictor, ProductInput
from services.errors import run_script


def _listed(count: int) -> list[ProductInput]:
    """Catalogue products as the embedder sees them: PNG bytes, title and description."""
    import io
    import random

    rng = random.Random(0)
    products = []
    for _, picture, label in iter_split("test"):
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        title, description, _ = product_texts(CATEGORIES[label], rng)
        products.append(ProductInput(image=buffer.getvalue(), title=f"{title} #{len(products)}", description=description))
        if len(products) == count:
            return products
    return products


def measure(
    checkpoint: Path,
    size: int | None,
    batch: int,
    rounds: int,
    device: str | None,
    photos_only: bool = False,
    mirror_average: bool | None = None,
) -> dict[str, float]:
    predictor = Predictor.load(checkpoint, device=device, input_size=size, text=not photos_only, mirror_average=mirror_average)
    resolution = predictor.model.encoder.input_size
    where = pick_device(device)
    listed = _listed(batch)
    photos = [ProductInput(image=p.image) for p in listed]
    encoder = predictor.model.encoder
    bare_input = torch.randn(batch, 3, resolution, resolution, device=where).contiguous(memory_format=torch.channels_last)

    def bare() -> None:
        with torch.inference_mode(), autocast(where):
            encoder(bare_input)
        if where.type == "cuda":
            torch.cuda.synchronize()

    def run(products: list[ProductInput]):  # type: ignore[no-untyped-def]
        def full() -> None:
            predictor.predict(products)
            if where.type == "cuda":
                torch.cuda.synchronize()

        return full

    contenders = {"bare": bare, "photos": run(photos)} | ({} if photos_only else {"listed": run(listed)})
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for fn in contenders.values():
        fn()  # warm up
    for _ in range(rounds):
        for name, fn in contenders.items():
            started = time.perf_counter()
            fn()
            rates[name].append(batch / (time.perf_counter() - started))
    b, photo = statistics.median(rates["bare"]), statistics.median(rates["photos"])
    listed_rate = statistics.median(rates["listed"]) if rates.get("listed") else float("nan")
    return {
        "resolution": resolution,
        "batch": batch,
        "mirror_average": predictor.mirror_average,
        "bare": b,
        "photos": photo,
        "listed": listed_rate,
        "ratio_photos": photo / b,
        "ratio_listed": listed_rate / b,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--sizes", type=int, nargs="*", default=[0, 224], help="0 = the checkpoint's own")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--device", default=None)
    parser.add_argument("--photos-only", action="store_true", help="measure the vision path alone (no text model)")
    parser.add_argument(
        "--mirror-average",
        choices=["on", "off"],
        default=None,
        help="see each picture with its mirror image (default: the checkpoint's choice)",
    )
    args = parser.parse_args()
    mirror = None if args.mirror_average is None else args.mirror_average == "on"
    _, card = load_checkpoint(args.checkpoint)
    print(f"checkpoint {card.model_version}; torch threads {torch.get_num_threads()}; device {pick_device(args.device)}")
    print(f"{'px':>5} {'batch':>5} {'mirror':>6} {'bare img/s':>11} {'photos only':>12} {'ratio':>6} {'as listed':>10} {'ratio':>6}")
    for size in args.sizes:
        r = measure(args.checkpoint, size or None, args.batch, args.rounds, args.device, args.photos_only, mirror)
        listed = "—" if args.photos_only else f"{r['listed']:.1f}"
        ratio = "—" if args.photos_only else f"{r['ratio_listed']:.2f}"
        mirrored = "on" if r["mirror_average"] else "off"
        print(
            f"{r['resolution']:>5} {r['batch']:>5} {mirrored:>6} {r['bare']:>11.1f} {r['photos']:>12.1f} {r['ratio_photos']:>6.2f} "
            f"{listed:>10} {ratio:>6}"
        )


if __name__ == "__main__":
    run_script(main, "bench/model_throughput.py")
