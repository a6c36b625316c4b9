"""The demo: start the stack, publish sample events, show what arrived and what was refused."""

import tempfile
from pathlib import Path

from schemas.topics import CLICKS, PRODUCTS_LISTED, Topic
from services.bus.config import producer_config
from services.bus.producer import Producer
from services.bus.publish import Publisher
from services.bus.tail import end_offsets, shorten, tail
from services.bus.topics import create_topics
from services.demo.samples import sample_clicks, sample_products
from services.settings import Settings
from services.stack import Stack


def _interleave(valid: list[str], invalid: list[str]) -> list[str]:
    lines = list(valid)
    for i, bad in enumerate(invalid):
        lines.insert(min(len(lines), 2 + i * 3), bad)
    return lines


def run_demo(settings: Settings) -> int:
    print("== 1. local stack: Apache Kafka (KRaft) + redis-server")
    for s in Stack.from_settings(settings).up():
        print(f"   {s.name:<6} {s.address:<21} {s.state.value:<9} {s.version or ''}")

    print("== 2. topics")
    created = create_topics(settings)
    print(f"   {sum(1 for _, o in created if o == 'created')} created, {sum(1 for _, o in created if o == 'exists')} already there")

    producer = Producer(producer_config(settings))
    with tempfile.TemporaryDirectory(prefix="shelfsight-demo-") as folder:
        for topic, (valid, invalid) in ((PRODUCTS_LISTED, sample_products()), (CLICKS, sample_clicks())):
            path = Path(folder) / f"{topic.name}.jsonl"
            path.write_text("\n".join(_interleave(valid, invalid)) + "\n")
            print(f"== 3. publish {path.name}: {len(valid)} valid and {len(invalid)} invalid lines")
            marks = {n: end_offsets(settings, settings.topic(n)) for n in (topic.name, topic.dlq)}
            report = Publisher(producer, topic, settings.topic(topic.name), settings.topic(topic.dlq)).publish_file(path)
            for problem in report.invalid:
                print(f"   line {problem.line}: refused: {problem.reason}")
            print(f"   → {report.delivered} delivered, {report.dead_lettered} dead-lettered, {len(report.failed)} failed")
            _show(settings, topic, marks, report.delivered, report.dead_lettered)

    print("== done. The stack keeps running: `make down` (or `shelfsight stack down`) stops it.")
    print("   Look around: `shelfsight tail clicks`, `shelfsight tail clicks.dlq`, `shelfsight stack status`.")
    return 0


def _show(settings: Settings, topic: Topic, marks: dict[str, dict[int, int]], delivered: int, dead: int) -> None:
    """What this run added to the topic and its DLQ, read back from the broker."""
    for name, count in ((topic.name, delivered), (topic.dlq, dead)):
        real = settings.topic(name)
        messages = list(tail(settings, real, max_messages=count, idle_timeout=5.0, since=marks[name])) if count else []
        print(f"   {real}: showing the {len(messages)} messages this run sent")
        for m in messages[:6]:
            reason = m.headers.get("shelfsight-reason")
            text = f"reason={reason!r}" if reason else shorten(m.value, width=40)[:150]
            print(f"     [{m.partition}]@{m.offset} key={m.key} {text}")
        if len(messages) > 6:
            print(f"     … and {len(messages) - 6} more")
