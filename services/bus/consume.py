"""Reading back what a test produced, straight from the broker."""

from services.bus.tail import TailedMessage, tail
from services.settings import Settings


def read_all(settings: Settings, topic: str, expected: int, timeout: float = 20.0) -> list[TailedMessage]:
    """The first ``expected`` messages of ``topic`` (fewer if the topic goes quiet for ``timeout`` s)."""
    return list(tail(settings, topic, from_beginning=True, max_messages=expected, idle_timeout=timeout))
