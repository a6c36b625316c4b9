"""Entry point of the ``shelfsight`` command.

User mistakes surface as one line on stderr (exit 2), never as a traceback.
"""

import argparse
import logging
import sys
from collections.abc import Sequence

from services.cli import (
    catalogue_commands,
    evaluation_commands,
    event_commands,
    experiment_commands,
    learners_commands,
    model_commands,
    service_commands,
    stack_commands,
)
from services.errors import UserError
from services.logs import configure_logging
from services.settings import Settings, load_settings

log = logging.getLogger("shelfsight")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shelfsight",
        description="Real-time product recommendations from what products look like and what shoppers do.",
        epilog="Settings come from SHELFSIGHT_* environment variables; see the README.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    stack_commands.register(commands)
    event_commands.register(commands)
    model_commands.register(commands)
    service_commands.register(commands)
    catalogue_commands.register(commands)
    experiment_commands.register(commands)
    learners_commands.register(commands)
    evaluation_commands.register(commands)
    demo = commands.add_parser(
        "demo", help="the main job: the whole system with simulated shoppers and a live storefront (Ctrl-C stops it)"
    )
    demo.add_argument("--seconds", type=float, default=None, help="stop after this long (default: until Ctrl-C)")
    demo.add_argument("--products", type=int, default=1000, help="catalogue size (real Fashion-MNIST photos)")
    demo.add_argument("--shoppers", type=int, default=12, help="simulated shoppers")
    demo.add_argument("--rate", type=float, default=8.0, help="shopper visits per second")
    demo.add_argument("--pipeline-only", action="store_true", help="only publish sample events and show where they went")
    demo.set_defaults(run=_demo)
    return parser


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    if args.pipeline_only:
        from services.demo.walkthrough import run_demo

        return run_demo(settings)
    from services.demo.storefront import run_storefront_demo

    if args.products < 10 or args.shoppers < 1 or args.rate <= 0:
        raise UserError("demo needs --products ≥ 10, --shoppers ≥ 1 and --rate > 0")
    return run_storefront_demo(settings, args.seconds, args.products, args.shoppers, args.rate)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        configure_logging(settings.log_level, settings.log_format)
        return int(args.run(settings, args))
    except UserError as exc:
        print(f"shelfsight: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("shelfsight: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
