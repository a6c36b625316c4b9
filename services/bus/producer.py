"""A lazily created confluent-kafka producer with delivery accounting."""

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, Message
from confluent_kafka import Producer as _ConfluentProducer

from schemas.serde import EncodedMessage, Headers

log = logging.getLogger(__name__)

DeliveryCallback = Callable[[KafkaError | None, Message], None]


class Producer:
    """Sends :class:`EncodedMessage` s. The client is created on first use."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._config = config
        self._client: _ConfluentProducer | None = None

    @property
    def client(self) -> _ConfluentProducer:
        if self._client is None:
            self._client = _ConfluentProducer(self._config)
        return self._client

    def send(self, topic: str, message: EncodedMessage, on_delivery: DeliveryCallback | None = None) -> None:
        """Queue ``message``; waits for queue space instead of failing when the queue is full."""
        self._produce(topic, message.key, message.value, message.headers, on_delivery)

    def send_tombstone(self, topic: str, key: bytes, on_delivery: DeliveryCallback | None = None) -> None:
        """Queue a null value for ``key``: on a compacted topic it deletes the key."""
        self._produce(topic, key, None, None, on_delivery)

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None,
        on_delivery: DeliveryCallback | None,
    ) -> None:
        while True:
            try:
                self.client.produce(topic, key=key, value=value, headers=headers, on_delivery=on_delivery)
                break
            except BufferError:
                self.client.poll(0.1)
        self.client.poll(0)

    def deliver(self, messages: list[tuple[str, EncodedMessage]], timeout: float = 10.0) -> list[str]:
        """Send ``messages`` and wait for their own acknowledgements (not the whole queue's, as
        :meth:`flush` does); the delivery errors, empty when every message is stored."""
        done = threading.Event()
        errors: list[str] = []
        pending = [len(messages)]
        lock = threading.Lock()

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            with lock:
                if err is not None:
                    errors.append(str(err))
                pending[0] -= 1
                if pending[0] == 0:
                    done.set()

        if not messages:
            return []
        for topic, message in messages:
            self.send(topic, message, delivered)
        deadline = time.monotonic() + timeout
        while not done.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return [*errors, f"{pending[0]} of {len(messages)} not acknowledged within {timeout:.0f} s"]
            self.client.poll(min(0.01, left))
        return errors

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for every queued message; returns how many are still undelivered."""
        if self._client is None:
            return 0
        return self._client.flush(timeout)
