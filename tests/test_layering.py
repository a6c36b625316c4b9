"""The layout tells the data flow, and these rules keep it honest:

- ``models/`` is pure ML: it never touches Kafka, Redis, Qdrant or the services;
- ``schemas/`` (the Kafka contracts) and ``state/`` (the Redis contract) sit below the services:
  they import no service;
- the recommender reads the Redis state through ``state/`` only: it imports nothing of the
  profiles worker, which writes it.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def _imports(folder: Path) -> list[tuple[str, str]]:
    found = []
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found += [(str(path.relative_to(ROOT)), a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                found.append((str(path.relative_to(ROOT)), node.module or ""))
    return found


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("models", ("confluent_kafka", "aiokafka", "faust", "redis", "qdrant_client", "qdrant_edge", "services", "state")),
        ("schemas", ("services", "state", "models")),
        ("state", ("services", "confluent_kafka", "faust", "qdrant_client", "qdrant_edge")),
        ("services/recommender", ("services.profiles",)),
    ],
)
def test_imports_follow_the_layers(folder, forbidden):
    offenders = [
        f"{where}: {name}" for where, name in _imports(ROOT / folder) if any(name == f or name.startswith(f + ".") for f in forbidden)
    ]
    assert offenders == []
