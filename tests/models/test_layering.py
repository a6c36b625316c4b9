"""models/ is pure ML: it never touches Kafka, Redis or Qdrant."""

import ast
from pathlib import Path

FORBIDDEN = {"confluent_kafka", "aiokafka", "faust", "redis", "qdrant_client", "qdrant_edge", "services"}


def test_models_import_no_io_edges():
    root = Path(__file__).parents[2] / "models"
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.relative_to(root)}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []
