"""`shelfsight reembed`: change the model behind the catalogue without downtime, or roll back."""

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from services.cli import Commands
from services.errors import UserError
from services.settings import Settings

if TYPE_CHECKING:
    from state.catalogue import CatalogueVersion


def register(commands: Commands) -> None:
    reembed = commands.add_parser(
        "reembed",
        help="embed the catalogue with another model into a collection of its own, check it, and switch to it",
        description="Runs while the shop runs: `serve` and `shelfsight embedder` follow the switch without a restart. "
        "Killed mid-way, run it again: it resumes where it stopped.",
    )
    reembed.add_argument("--model", type=Path, help="the checkpoint folder to embed with")
    mirror = reembed.add_mutually_exclusive_group()
    mirror.add_argument("--mirror-average", dest="mirror", action="store_true", default=None, help="see pictures with their mirror images")
    mirror.add_argument("--no-mirror-average", dest="mirror", action="store_false", help="see pictures as they are")
    reembed.add_argument("--rollback", action="store_true", help="bring the version before the live one up to date and switch back to it")
    reembed.add_argument("--status", action="store_true", help="say which version is live, which came before, and how far each has read")
    reembed.set_defaults(run=_reembed)


def _reembed(settings: Settings, args: argparse.Namespace) -> int:
    from services.bus.broker import require_broker
    from services.redis_clients import redis_client
    from state.catalogue import AliasChanged, read_alias
    from state.keys import Keys

    if sum([args.model is not None, args.rollback, args.status]) != 1:
        raise UserError("say one of --model CHECKPOINT, --rollback or --status")
    require_broker(settings)
    client = redis_client(settings)
    alias = read_alias(client, Keys.of(settings))
    if args.rollback and (alias is None or alias.previous is None):
        raise UserError("there is nothing to roll back to: `shelfsight reembed --model …` has not switched the catalogue yet")
    # The model's modules load torch (seconds): only once the arguments have been checked.
    from services.embedder.reembed import bring_live
    from services.embedder.service import load_predictor
    from services.embedder.versions import base_version, new_version

    base = base_version(settings)
    if args.status:
        return _status(settings, alias.live if alias else base, alias.previous if alias else None)
    if args.rollback:
        assert alias is not None and alias.previous is not None  # refused above
        target = alias.previous
        predictor = load_predictor(
            settings.model_copy(update={"model_dir": Path(target.checkpoint), "mirror_average": target.mirror_average})
        )
    else:
        predictor = load_predictor(settings.model_copy(update={"model_dir": args.model, "mirror_average": args.mirror}))
        target = new_version(settings, predictor, args.model)
        if target.name == base.name and target.checkpoint == str(Path(base.checkpoint).resolve()):
            target = base  # back to the settings' own: its collection and group are the original ones
    live = alias.live if alias else base
    if target.name == live.name:
        raise UserError(f"{target.name} is already live")
    print(f"bringing {target.name} live in collection {target.collection} (live now: {live.name})", file=sys.stderr)
    try:
        switched = bring_live(settings, client, target, predictor, base, _progress_printer(), lambda line: print(line, file=sys.stderr))
    except AliasChanged as exc:
        raise UserError(str(exc)) from None
    print(f"{switched.live.name} is live (revision {switched.revision}); {live.name} is kept for `shelfsight reembed --rollback`")
    return 0


def _status(settings: Settings, live: "CatalogueVersion", previous: "CatalogueVersion | None") -> int:
    from schemas.topics import PRODUCTS_LISTED
    from services.bus.consume import group_lag

    for role, version in (("live", live), ("previous", previous)):
        if version is not None:
            lag = group_lag(settings, settings.topic(PRODUCTS_LISTED.name), settings.group(version.group))
            print(f"{role}: {version.name}  collection {version.collection}  checkpoint {version.checkpoint}  behind by {lag} events")
    return 0


def _progress_printer() -> Callable[[int, int], None]:
    state = {"at": 0.0}

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        if now - state["at"] < 2 and done < total:
            return
        state["at"] = now
        share = done / total if total else 1.0
        bar = "#" * int(share * 30)
        print(f"\r[{bar:<30}] {done}/{total} events of products.listed", end="" if done < total else "\n", file=sys.stderr, flush=True)

    return show
