"""Every contract survives a trip through the real broker, keyed for its partition."""

import json

import pytest

from schemas import decode, encode
from schemas.topics import TOPICS
from services.bus.config import producer_config
from services.bus.consume import read_all
from services.bus.producer import Producer
from tests.schemas.test_contracts import CASES

pytestmark = pytest.mark.kafka


@pytest.mark.parametrize(("contract", "data", "key"), CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_contract_round_trips_through_kafka(kafka, contract, data, key):
    topic = next(t for t in TOPICS.values() if t.contract is contract)
    name = kafka.topic(topic.name)
    event = decode(contract, json.dumps(data).encode())
    producer = Producer(producer_config(kafka))
    errors = []
    producer.send(name, encode(event), lambda err, _msg: errors.append(err))
    assert producer.flush(30) == 0
    assert errors == [None]

    (received,) = read_all(kafka, name, expected=1)
    assert received.key == key
    assert received.headers["schema"] == contract.__name__
    assert decode(contract, received.value.encode()) == event


def test_same_key_lands_on_one_partition(kafka):
    from schemas import ClickEvent
    from tests.schemas.test_contracts import CLICK

    name = kafka.topic("clicks")
    producer = Producer(producer_config(kafka))
    for i in range(20):
        event = decode(ClickEvent, json.dumps({**CLICK, "event_id": f"order-{i}", "user_id": "same-shopper"}).encode())
        producer.send(name, encode(event))
    assert producer.flush(30) == 0
    mine = [m for m in read_all(kafka, name, expected=100, timeout=3) if m.key == "same-shopper"]
    assert len(mine) == 20
    assert len({m.partition for m in mine}) == 1
    assert [json.loads(m.value)["event_id"] for m in mine] == [f"order-{i}" for i in range(20)]
