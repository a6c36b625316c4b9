"""What `stack status` reports about each component."""

from dataclasses import dataclass
from enum import Enum


class State(str, Enum):
    RUNNING = "running"  # started by Shelfsight and healthy
    EXTERNAL = "external"  # something else answers at the address: reused, never stopped
    STOPPED = "stopped"
    UNHEALTHY = "unhealthy"  # our process is alive but does not answer


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    address: str
    state: State
    pid: int | None = None
    version: str | None = None
    detail: str = ""

    @property
    def healthy(self) -> bool:
        return self.state in (State.RUNNING, State.EXTERNAL)
