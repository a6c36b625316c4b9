"""Everything a training run can be told, in one frozen object."""

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run (stored in the model card).

    ``mode="frozen"``: the whole backbone is frozen; pooled features are computed once
    (and cached on disk when ``cache_dir`` is set) and only the fusion head learns — fast.
    ``mode="finetune"``: the last ``trainable_stages`` stages of the backbone learn too.
    Below them the activations are computed once and cached, unless every stage is trained,
    in which case training runs end to end on augmented pictures (slow on a CPU).
    With cached inputs, ``mirror_views`` caches the flipped pictures too and each epoch
    shows every sample in a random one of its two views: augmentation at twice the
    caching cost, none per epoch; ``shift_cells`` moves the cached maps by up to that many
    cells each time a sample is shown, and ``erase_probability`` is the chance that a rectangle
    of them is erased to the background (``models/training/augmentation.py``).
    """

    backbone: str = "efficientnet-lite0"
    weights: str = "default"
    input_size: int | None = None
    mode: Literal["frozen", "finetune"] = "frozen"
    trainable_stages: int = 6
    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-3
    backbone_lr: float = 5e-4
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    val_fraction: float = 0.1
    patience: int = 3
    seed: int = 0
    fused_dim: int = 256
    hidden_dim: int = 512
    mirror_views: bool = True  # cached training: also learn from horizontally flipped pictures
    shift_cells: int = 0  # cached training: move the cached maps by up to this many cells
    erase_probability: float = 0.0  # cached training: chance of erasing a rectangle of the maps
    use_text: bool = True  # learn from the dataset's texts when it has any
    modality_dropout: float = 0.2  # of the samples with both a picture and a text, the share shown one alone
    # The text's meaning in the fused vector (models/fusion.py): against the mixed vector when
    # the product has a picture, and when it has none.
    text_weight: float = 0.5
    text_only_weight: float = 2.0
    device: str | None = None
    cache_dir: Path | None = None

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["cache_dir"] = str(self.cache_dir) if self.cache_dir else None
        return data
