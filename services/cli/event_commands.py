"""`shelfsight publish`, `shelfsight tail` and `shelfsight schemas export`."""

import argparse
import sys
from pathlib import Path

from schemas import export as schema_export
from schemas.topics import CLICKS, PRODUCTS_LISTED, Topic
from services.bus.broker import require_broker
from services.bus.config import producer_config
from services.bus.producer import Producer
from services.bus.publish import Publisher
from services.bus.tail import shorten, tail
from services.cli import Commands
from services.settings import Settings

_PUBLISHABLE: dict[str, Topic] = {"products": PRODUCTS_LISTED, "clicks": CLICKS}


def register(commands: Commands) -> None:
    publish = commands.add_parser("publish", help="validate and publish a JSON Lines file of events")
    publish.add_argument("kind", choices=sorted(_PUBLISHABLE), help="what the file holds")
    publish.add_argument("file", type=Path, help="one JSON event per line")
    publish.add_argument("--no-dlq", action="store_true", help="report invalid lines without dead-lettering them")
    publish.set_defaults(run=_publish)

    tail_parser = commands.add_parser("tail", help="print the messages of a topic")
    tail_parser.add_argument("topic", help="topic name, e.g. clicks or clicks.dlq (the prefix is added)")
    tail_parser.add_argument("--new", action="store_true", help="only messages that arrive from now on")
    tail_parser.add_argument("-n", "--max", type=int, default=None, help="stop after N messages")
    tail_parser.add_argument("--idle", type=float, default=None, help="stop after S seconds without a message")
    tail_parser.add_argument("--full", action="store_true", help="do not shorten long values")
    tail_parser.set_defaults(run=_tail)

    schemas = commands.add_parser("schemas", help="the event contracts")
    actions = schemas.add_subparsers(dest="action", required=True)
    export = actions.add_parser("export", help="write JSON Schema of every contract")
    export.add_argument("--out", type=Path, default=schema_export.JSON_DIR, help="default: schemas/json")
    export.add_argument("--check", action="store_true", help="exit 1 if the files differ, write nothing")
    export.set_defaults(run=_export)


def _publish(settings: Settings, args: argparse.Namespace) -> int:
    require_broker(settings)
    topic = _PUBLISHABLE[args.kind]
    publisher = Publisher(
        Producer(producer_config(settings)),
        topic,
        settings.topic(topic.name),
        None if args.no_dlq else settings.topic(topic.dlq),
    )
    report = publisher.publish_file(args.file, progress=sys.stderr.isatty())
    for problem in report.invalid:
        print(f"{args.file}:{problem.line}: invalid: {problem.reason}", file=sys.stderr)
    for problem in report.failed:
        print(f"{args.file}:{problem.line}: {problem.reason}", file=sys.stderr)
    where = "" if args.no_dlq else f", {report.dead_lettered} sent to {settings.topic(topic.dlq)}"
    print(
        f"{report.lines} lines: {report.delivered} delivered to {settings.topic(topic.name)}, "
        f"{len(report.invalid)} invalid{where}, {len(report.failed)} failed"
    )
    return 0 if not report.failed else 1


def _tail(settings: Settings, args: argparse.Namespace) -> int:
    require_broker(settings)
    name = settings.topic(args.topic)
    for m in tail(settings, name, from_beginning=not args.new, max_messages=args.max, idle_timeout=args.idle):
        reason = m.headers.get("shelfsight-reason")
        head = f"{m.topic}[{m.partition}]@{m.offset} key={m.key}"
        value = m.value if args.full else shorten(m.value)
        print(f"{head} reason={reason!r} {value}" if reason else f"{head} {value}", flush=True)
    return 0


def _export(_settings: Settings, args: argparse.Namespace) -> int:
    if args.check:
        stale = schema_export.drift(args.out)
        for name in stale:
            print(f"out of date: {args.out / name}")
        return 1 if stale else 0
    for path in schema_export.export(args.out):
        print(f"wrote {path}")
    return 0
