"""The local stack as one thing: `up`, `down`, `status` and `logs` over its components."""

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from services.settings import Settings
from services.stack.components import ComponentStatus
from services.stack.kafka_node import KafkaNode
from services.stack.redis_node import RedisNode


class Component(Protocol):
    name: str
    log_path: Path

    def up(self) -> ComponentStatus: ...
    def down(self) -> bool: ...
    def status(self) -> ComponentStatus: ...


class Stack:
    """Kafka and Redis for development and CI, started from the project's own scripts."""

    def __init__(self, components: list[Component]) -> None:
        self.components = components

    @classmethod
    def from_settings(cls, settings: Settings) -> "Stack":
        return cls([KafkaNode(settings), RedisNode(settings)])

    def only(self, names: list[str] | None) -> "Stack":
        """The same stack limited to ``names`` (all when empty), in the stack's order."""
        return Stack([c for c in self.components if not names or c.name in names])

    def up(self) -> list[ComponentStatus]:
        return [c.up() for c in self.components]

    def down(self) -> list[tuple[str, bool]]:
        """Stop what we started, in reverse order. Reused external services are left alone."""
        return [(c.name, c.down()) for c in reversed(self.components)]

    def restart(self) -> list[ComponentStatus]:
        self.down()
        return self.up()

    def status(self) -> list[ComponentStatus]:
        return [c.status() for c in self.components]

    def log_paths(self, names: list[str] | None = None) -> Iterator[tuple[str, Path]]:
        for c in self.components:
            if not names or c.name in names:
                yield c.name, c.log_path
