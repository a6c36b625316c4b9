"""`shelfsight reembed`: change the model behind the catalogue without downtime, or roll back."""

import argparse
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from services.cli import Commands
from services.errors import UserError
from services.settings import Settings

if TYPE_CHECKING:
    import redis

    from state.catalogue import CatalogueVersion
    from state.keys import Keys


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
    reembed.add_argument(
        "--stage",
        action="store_true",
        help="with --model: fill and check the version's collection, but do not switch to it; an experiment's "
        "variant may then be served from it (model=VERSION, see `shelfsight experiments`)",
    )
    reembed.add_argument("--unstage", metavar="VERSION", help="forget a staged version (its collection stays on disk)")
    reembed.set_defaults(run=_reembed)


def _reembed(settings: Settings, args: argparse.Namespace) -> int:
    from services.bus.broker import require_broker
    from services.redis_clients import redis_client
    from state.catalogue import AliasChanged, read_alias
    from state.keys import Keys

    if sum([args.model is not None, args.rollback, args.status, args.unstage is not None]) != 1:
        raise UserError("say one of --model CHECKPOINT, --rollback, --status or --unstage VERSION")
    if args.stage and args.model is None:
        raise UserError("--stage prepares a new version: give it with --model CHECKPOINT")
    require_broker(settings)
    client = redis_client(settings)
    alias = read_alias(client, Keys.of(settings))
    if args.unstage is not None:
        return _unstage(client, Keys.of(settings), args.unstage)
    if not (args.status or args.stage):
        _refuse_while_compared(client, Keys.of(settings), "switch the catalogue")
    if args.rollback and (alias is None or alias.previous is None):
        raise UserError("there is nothing to roll back to: `shelfsight reembed --model …` has not switched the catalogue yet")
    # The model's modules load torch (seconds): only once the arguments have been checked.
    from services.embedder.reembed import bring_live, bring_staged
    from services.embedder.service import load_predictor
    from services.embedder.versions import base_version, new_version

    base = base_version(settings)
    if args.status:
        return _status(settings, client, alias.live if alias else base, alias.previous if alias else None)
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
    if args.stage:
        print(f"staging {target.name} in collection {target.collection} (live stays: {live.name})", file=sys.stderr)
        bring_staged(settings, client, target, predictor, _progress_printer(), lambda line: print(line, file=sys.stderr))
        print(
            f"{target.name} is staged: an experiment's variant may be served from it "
            f"(`shelfsight experiments create … --variant new=learned,model={target.name}`); `--model` again switches to it"
        )
        return 0
    print(f"bringing {target.name} live in collection {target.collection} (live now: {live.name})", file=sys.stderr)
    try:
        switched = bring_live(settings, client, target, predictor, base, _progress_printer(), lambda line: print(line, file=sys.stderr))
    except AliasChanged as exc:
        raise UserError(str(exc)) from None
    print(f"{switched.live.name} is live (revision {switched.revision}); {live.name} is kept for `shelfsight reembed --rollback`")
    return 0


def _refuse_while_compared(client: "redis.Redis", keys: "Keys", doing: str, name: str | None = None) -> None:
    """UserError while an experiment not over serves a variant from ``name`` (any model version when
    None): a switch would serve its control from the version it compares with, and `serve` holds
    that version's embedded shard open."""
    from state.experiments import load_all

    now = datetime.now(UTC)
    for experiment in load_all(client, keys):
        models = {v.model for v in experiment.variants if v.model is not None}
        if not experiment.over(now) and (name in models if name is not None else models):
            raise UserError(
                f"experiment {experiment.experiment_id} serves a variant from {', '.join(sorted(models))}: "
                f"stop it (`shelfsight experiments stop {experiment.experiment_id}`) before you {doing}"
            )


def _unstage(client: "redis.Redis", keys: "Keys", name: str) -> int:
    from state.catalogue import unstage

    _refuse_while_compared(client, keys, f"unstage {name}", name)
    if not unstage(client, keys, name):
        raise UserError(f"{name} is not staged: `shelfsight reembed --status` lists the staged versions")
    print(f"{name} is no longer staged; its collection stays on disk")
    return 0


def _status(settings: Settings, client: "redis.Redis", live: "CatalogueVersion", previous: "CatalogueVersion | None") -> int:
    from schemas.topics import PRODUCTS_LISTED
    from services.bus.consume import group_lag
    from state.catalogue import staged
    from state.keys import Keys

    waiting = [("staged", v) for v in staged(client, Keys.of(settings)).values() if v.name not in {live.name, previous and previous.name}]
    for role, version in (("live", live), ("previous", previous), *waiting):
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
