"""How an embedded shard's vectors are configured, and reading that back from the shard's own
``edge_config.json``.

Qdrant Edge takes a whole :class:`EdgeConfig` when a shard is loaded and writes it over the
stored one, so whatever was chosen at creation (scalar quantisation) has to be read back from the
shard and handed in again at every load, or it is lost (``ShardKeeper._load``, ``index_build``).

>>> params = vector_params({"fused": {"size": 4, "distance": "Cosine", "quantization_config": {"scalar": {"type": "int8", "quantile": 0.99, "always_ram": True}}}})
>>> params["fused"].size, quantised({"fused": {"size": 4, "distance": "Cosine", "quantization_config": {"scalar": {"type": "int8"}}}})
(4, True)
>>> quantised({"fused": {"size": 4, "distance": "Cosine"}})
False
"""

import json
from pathlib import Path
from typing import Any, Literal

import qdrant_edge as q

Quantization = Literal["none", "int8"]
CONFIG_FILE = "edge_config.json"
QUANTILE = 0.99  # Qdrant's advice: the extreme 1 % of values do not widen every value's step


def quantization_config(kind: Quantization) -> q.ScalarQuantizationConfig | None:
    """int8: a scalar-quantised copy of each vector kept in memory for search; the originals rescore."""
    return q.ScalarQuantizationConfig(q.ScalarType.Int8, quantile=QUANTILE, always_ram=True) if kind == "int8" else None


def new_vector_params(dims: dict[str, int], kind: Quantization) -> dict[str, q.EdgeVectorParams]:
    return {n: q.EdgeVectorParams(size, q.Distance.Cosine, quantization_config=quantization_config(kind)) for n, size in dims.items()}


def vector_params(stored: dict[str, Any]) -> dict[str, q.EdgeVectorParams]:
    """The vectors as ``edge_config.json`` records them, quantisation included."""
    params = {}
    for name, v in stored.items():
        scalar = (v.get("quantization_config") or {}).get("scalar")
        quantized = (
            q.ScalarQuantizationConfig(q.ScalarType.Int8, quantile=scalar.get("quantile"), always_ram=scalar.get("always_ram"))
            if scalar and scalar.get("type") == "int8"
            else None
        )
        params[name] = q.EdgeVectorParams(v["size"], getattr(q.Distance, v["distance"]), quantization_config=quantized)
    return params


def quantised(stored: dict[str, Any]) -> bool:
    """Whether the vectors a load hands back (:func:`vector_params`) are quantised."""
    return any(p.quantization_config is not None for p in vector_params(stored).values())


def stored_vectors(shard_dir: Path) -> dict[str, Any]:
    return dict(json.loads((shard_dir / CONFIG_FILE).read_text())["vectors"])
