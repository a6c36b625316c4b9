"""Dead letters always fit on their topic, whatever was refused, and say what it was."""

import base64
import hashlib

import pytest

from schemas import LIMITS, DeadLetter
from schemas.topics import CLICKS
from services.bus.config import DLQ_MESSAGE_BYTES, producer_config
from services.bus.consume import read_all
from services.bus.dead_letters import dead_letter
from services.bus.producer import Producer

# The largest message a topic takes (services/bus/topics.py): what a consumer may have to refuse.
TOPIC_MAX = LIMITS.event_bytes + 64 * 1024

HOSTILE = {
    "control bytes": b'{"request_id":"' + b"\x01" * 1_500_000 + b'"}',
    "quotes at the topic's limit": b'"' * TOPIC_MAX,
    "backslashes at the topic's limit": b"\\" * TOPIC_MAX,
    "not UTF-8 at the topic's limit": b"\xff" * TOPIC_MAX,
    "newlines at the topic's limit, and a reason with control characters": b"\n" * TOPIC_MAX,
}


@pytest.mark.parametrize("value", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_dead_letter_is_bounded_printable_and_complete_enough_to_find_the_original(value):
    letter = dead_letter(
        value=value, key=b"k" * 5000, reason="bad \x00\x1b[31m input\n", source_topic="t", service="s", partition=1, offset=7
    )
    assert len(letter.value) <= DLQ_MESSAGE_BYTES - 64 * 1024
    assert len(letter.key) <= 1024
    body = DeadLetter.model_validate_json(letter.value)
    assert "\x00" not in body.reason and "\x1b" not in body.reason and "\n" not in body.reason
    assert body.original_bytes == len(value) and body.original_sha256 == hashlib.sha256(value).hexdigest()
    copy = body.original.encode() if body.original_encoding == "utf-8" else base64.b64decode(body.original)
    assert value.startswith(copy) and body.truncated == (len(copy) < len(value))
    assert body.source_partition == 1 and body.source_offset == 7


def test_a_copy_is_cut_at_the_limit_and_says_so():
    value = b"x" * (LIMITS.dead_letter_copy_bytes + 10)
    body = DeadLetter.model_validate_json(dead_letter(value=value, key=None, reason="r", source_topic="t", service="s").value)
    assert body.truncated and len(body.original) == LIMITS.dead_letter_copy_bytes and body.original_bytes == len(value)


@pytest.mark.kafka
def test_the_broker_takes_the_dead_letter_of_any_message_a_topic_takes(kafka):
    producer = Producer(producer_config(kafka))
    letters = [
        (kafka.topic(CLICKS.dlq), dead_letter(value=v, key=b"k", reason="refused", source_topic="clicks", service="test"))
        for v in HOSTILE.values()
    ]
    assert producer.deliver(letters, timeout=60) == []
    stored = read_all(kafka, kafka.topic(CLICKS.dlq), expected=len(letters))
    assert sorted(DeadLetter.model_validate_json(m.value).original_bytes for m in stored) == sorted(len(v) for v in HOSTILE.values())
