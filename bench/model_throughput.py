"""Images/s of the Predictor against the bare backbone forward pass, in the same run.

The Predictor does everything a service needs per image — decode the PNG/JPEG bytes,
preprocess, backbone, fusion head, softmax, vectors to lists — while the baseline only
runs the backbone on a ready tensor of the same batch size and resolution. The machine is
shared and noisy, so both are measured alternately, several rounds each, and the ratio of
the medians is printed.

    .venv/bin/python bench/model_throughput.py --checkpoint CKPT [--sizes 64 224] [--device cuda]
"""

import argparse
import statistics
import time
from pathlib import Path

import torch

from models.checkpoint import load_checkpoint
from models.data.fashion_mnist import iter_split
from models.encoders.device import autocast, pick_device
from models.predictor import Predictor, ProductInput
from services.errors import run_script


def _png_bytes(count: int) -> list[bytes]:
    import io

    pictures = []
    for _, picture, _ in iter_split("test"):
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        pictures.append(buffer.getvalue())
        if len(pictures) == count:
            return pictures
    return pictures


def measure(checkpoint: Path, size: int | None, batch: int, rounds: int, device: str | None) -> dict[str, float]:
    predictor = Predictor.load(checkpoint, device=device, input_size=size)
    resolution = predictor.model.encoder.input_size
    where = pick_device(device)
    products = [ProductInput(image=b) for b in _png_bytes(batch)]
    encoder = predictor.model.encoder
    bare_input = torch.randn(batch, 3, resolution, resolution, device=where).contiguous(memory_format=torch.channels_last)

    def bare() -> None:
        with torch.inference_mode(), autocast(where):
            encoder(bare_input)
        if where.type == "cuda":
            torch.cuda.synchronize()

    def full() -> None:
        predictor.predict(products)
        if where.type == "cuda":
            torch.cuda.synchronize()

    bare(), full()  # warm up
    bare_rates, full_rates = [], []
    for _ in range(rounds):
        for fn, rates in ((bare, bare_rates), (full, full_rates)):
            started = time.perf_counter()
            fn()
            rates.append(batch / (time.perf_counter() - started))
    b, f = statistics.median(bare_rates), statistics.median(full_rates)
    return {"resolution": resolution, "batch": batch, "bare": b, "predictor": f, "ratio": f / b}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--sizes", type=int, nargs="*", default=[0, 224], help="0 = the checkpoint's own")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    _, card = load_checkpoint(args.checkpoint)
    print(f"checkpoint {card.model_version}; torch threads {torch.get_num_threads()}; device {pick_device(args.device)}")
    print(f"{'px':>5} {'batch':>5} {'bare img/s':>11} {'Predictor img/s':>16} {'ratio':>6}")
    for size in args.sizes:
        r = measure(args.checkpoint, size or None, args.batch, args.rounds, args.device)
        print(f"{r['resolution']:>5} {r['batch']:>5} {r['bare']:>11.1f} {r['predictor']:>16.1f} {r['ratio']:>6.2f}")


if __name__ == "__main__":
    run_script(main, "bench/model_throughput.py")
