"""The local stack: a real Apache Kafka broker and redis-server, no Docker needed."""

from services.stack.components import ComponentStatus, State
from services.stack.stack import Stack

__all__ = ["ComponentStatus", "Stack", "State"]
