"""`shelfsight stack up|down|restart|status|logs [kafka|redis …]` and `shelfsight topics create|list`."""

import argparse
import time
from collections import deque

from services.bus.broker import require_broker
from services.bus.topics import create_topics, topic_specs
from services.cli import Commands
from services.settings import Settings
from services.stack import ComponentStatus, Stack


def register(commands: Commands) -> None:
    stack = commands.add_parser("stack", help="run a local Kafka broker and redis-server")
    actions = stack.add_subparsers(dest="action", required=True)
    for name, run, text in (
        ("up", _up, "start Kafka and Redis (or reuse running ones)"),
        ("down", _down, "stop what `up` started"),
        ("restart", _restart, "stop, then start (drills: a broker or Redis going away mid-stream)"),
        ("status", _status, "show each component"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("component", nargs="*", choices=["kafka", "redis", []], help="default: all")
        action.set_defaults(run=run)
    logs = actions.add_parser("logs", help="print the components' logs")
    logs.add_argument("component", nargs="*", choices=["kafka", "redis", []], help="default: all")
    logs.add_argument("-n", "--lines", type=int, default=40, help="last N lines of each (default 40)")
    logs.set_defaults(run=_logs)

    topics = commands.add_parser("topics", help="Shelfsight's Kafka topics")
    topic_actions = topics.add_subparsers(dest="action", required=True)
    topic_actions.add_parser("create", help="create missing topics (idempotent)").set_defaults(run=_create_topics)
    topic_actions.add_parser("list", help="list the topics Shelfsight uses").set_defaults(run=_list_topics)


def _print_status(statuses: list[ComponentStatus]) -> None:
    for s in statuses:
        pid = f"pid {s.pid}" if s.pid else "-"
        print(f"{s.name:<6} {s.address:<21} {s.state.value:<10} {pid:<10} {s.version or '-':<22} {s.detail}")


def _up(settings: Settings, args: argparse.Namespace) -> int:
    started = time.monotonic()
    statuses = Stack.from_settings(settings).only(args.component).up()
    _print_status(statuses)
    print(f"stack ready in {time.monotonic() - started:.1f} s")
    return 0


def _down(settings: Settings, args: argparse.Namespace) -> int:
    for name, stopped in Stack.from_settings(settings).only(args.component).down():
        print(f"{name:<6} {'stopped' if stopped else 'was not started by shelfsight'}")
    return 0


def _restart(settings: Settings, args: argparse.Namespace) -> int:
    started = time.monotonic()
    _print_status(Stack.from_settings(settings).only(args.component).restart())
    print(f"restarted in {time.monotonic() - started:.1f} s")
    return 0


def _status(settings: Settings, args: argparse.Namespace) -> int:
    statuses = Stack.from_settings(settings).only(args.component).status()
    _print_status(statuses)
    return 0 if all(s.healthy for s in statuses) else 1


def _logs(settings: Settings, args: argparse.Namespace) -> int:
    for name, path in Stack.from_settings(settings).log_paths(args.component):
        print(f"==> {name}: {path} <==")
        if not path.exists():
            print("(no log yet)")
            continue
        with path.open(errors="replace") as handle:
            for line in deque(handle, maxlen=args.lines):
                print(line, end="")
    return 0


def _create_topics(settings: Settings, _args: argparse.Namespace) -> int:
    require_broker(settings)
    for name, outcome in create_topics(settings):
        print(f"{outcome:<8} {name}")
    return 0


def _list_topics(settings: Settings, _args: argparse.Namespace) -> int:
    for spec in topic_specs(settings):
        extras = " ".join(f"{k}={v}" for k, v in spec.config.items())
        print(f"{spec.name:<36} partitions={spec.partitions} {extras}")
    return 0
