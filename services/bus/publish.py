"""Publishing a JSON Lines file of events: validate every line, deliver the good ones.

A bad line never stops the run: it is reported with its line number and reason and
sent to the topic's dead-letter queue, so nothing the user gave us is lost.
"""

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from confluent_kafka import KafkaError, Message

from schemas.errors import ContractError
from schemas.limits import LIMITS
from schemas.serde import decode, encode
from schemas.topics import Topic
from services.bus.dead_letters import dead_letter
from services.bus.producer import DeliveryCallback, Producer
from services.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LineProblem:
    line: int
    reason: str


@dataclass
class PublishReport:
    """What happened to each line of the file."""

    lines: int = 0
    delivered: int = 0
    invalid: list[LineProblem] = field(default_factory=list)
    dead_lettered: int = 0
    failed: list[LineProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.invalid and not self.failed


def read_lines(stream: BinaryIO, max_bytes: int) -> Iterator[tuple[int, bytes | None, int]]:
    """Yield (line number, content, size); content is None when the line exceeds ``max_bytes``.

    An oversize line is skipped in chunks, so a hostile file cannot exhaust memory.
    """
    number = 0
    while True:
        chunk = stream.readline(max_bytes + 1)
        if not chunk:
            return
        number += 1
        size = len(chunk)
        if len(chunk) > max_bytes and not chunk.endswith(b"\n"):
            while chunk and not chunk.endswith(b"\n"):
                chunk = stream.readline(1024 * 1024)
                size += len(chunk)
            yield number, None, size
            continue
        yield number, chunk.rstrip(b"\r\n"), size


class Publisher:
    """Validates and delivers events from JSON Lines files to one topic."""

    def __init__(self, producer: Producer, topic: Topic, topic_name: str, dlq_name: str | None) -> None:
        self._producer = producer
        self._topic = topic
        self._topic_name = topic_name
        self._dlq_name = dlq_name

    def publish_file(self, path: Path, progress: bool = False) -> PublishReport:
        if not path.is_file():
            raise UserError(f"no such file: {path} (give a JSON Lines file, one event per line)")
        with path.open("rb") as stream:
            return self.publish_stream(stream, total_bytes=path.stat().st_size, progress=progress)

    def publish_stream(self, stream: BinaryIO, total_bytes: int | None = None, progress: bool = False) -> PublishReport:
        from tqdm import tqdm

        report = PublishReport()
        lock = threading.Lock()  # delivery callbacks run inside poll()/flush()
        bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc=self._topic_name, disable=not progress)

        def delivered(line: int, dead: bool) -> DeliveryCallback:
            def callback(error: KafkaError | None, _message: Message) -> None:
                with lock:
                    if error is not None:
                        report.failed.append(LineProblem(line, f"not delivered: {error.str()}"))
                    elif dead:
                        report.dead_lettered += 1
                    else:
                        report.delivered += 1

            return callback

        for number, content, size in read_lines(stream, LIMITS.event_bytes):
            bar.update(size)
            if content is not None and not content.strip():
                continue
            report.lines += 1
            if content is None:
                reason = f"line is longer than {LIMITS.event_bytes} bytes"
                self._refuse(report, number, reason, b"", delivered(number, True))
                continue
            try:
                event = decode(self._topic.reader, content)
            except ContractError as exc:
                self._refuse(report, number, exc.reason, content, delivered(number, True))
                continue
            self._producer.send(self._topic_name, encode(event), delivered(number, False))
        bar.close()
        remaining = self._producer.flush(60)
        if remaining:
            report.failed.append(LineProblem(0, f"{remaining} messages still undelivered after 60 s"))
        report.failed.sort(key=lambda p: p.line)
        return report

    def _refuse(self, report: PublishReport, line: int, reason: str, content: bytes, callback: DeliveryCallback) -> None:
        report.invalid.append(LineProblem(line, reason))
        if self._dlq_name is None:
            return
        letter = dead_letter(
            value=content,
            key=None,
            reason=f"line {line}: {reason}",
            source_topic=self._topic_name,
            service="publish",
        )
        self._producer.send(self._dlq_name, letter, callback)
