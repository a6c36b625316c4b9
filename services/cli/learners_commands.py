"""`shelfsight learners save|list|delete`: keep the learners as they are now, under a name an
experiment's variant can rank with (`--variant before=learned,learners=NAME`)."""

import argparse
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from services.errors import UserError
from services.settings import Settings

if TYPE_CHECKING:
    from schemas.experiments import Experiment


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    learners = commands.add_parser(
        "learners",
        help="save the learners under a name, for an experiment to compare with: save, list, delete",
        description="Copies every profiles worker's current learners checkpoint (signed, as written) under a name, kept "
        "until deleted. An experiment's variant ranks with them by `--variant NAME=learned,learners=SAVED`. See docs/experiments.md.",
    )
    actions = learners.add_subparsers(dest="action", required=True, metavar="ACTION")
    save = actions.add_parser("save", help="copy the current learners under NAME")
    save.add_argument("name", help="lower-case letters, digits, ., - and _")
    actions.add_parser("list", help="the saved names, when each was saved and its workers")
    delete = actions.add_parser("delete", help="remove saved learners (a variant that names them ranks with the live ones)")
    delete.add_argument("name")
    learners.set_defaults(run=_learners)


def _learners(settings: Settings, args: argparse.Namespace) -> int:
    from pydantic import TypeAdapter, ValidationError

    from schemas.experiments import SavedName
    from services.redis_clients import redis_client
    from state.checkpoints import SavedLearnersError, delete_saved, save_learners, saved_learners
    from state.experiments import load_all
    from state.keys import Keys

    client, keys = redis_client(settings), Keys.of(settings)
    if args.action == "list":
        for name, about in saved_learners(client, keys).items():
            at = datetime.fromtimestamp(float(about["saved_at"]), UTC).isoformat(timespec="seconds")  # type: ignore[arg-type]
            print(f"{name}\tsaved {at}\tworkers {', '.join(about['workers'])}")  # type: ignore[arg-type]
        return 0
    if args.action == "delete":
        now = datetime.now(UTC)
        using = [e.experiment_id for e in load_all(client, keys) if not _over(e, now) and any(v.learners == args.name for v in e.variants)]
        if using:
            raise UserError(f"experiment {using[0]} ranks with the learners saved as {args.name!r}: stop it first")
        if not delete_saved(client, keys, args.name):
            raise UserError(f"no learners are saved as {args.name!r}: `shelfsight learners list` shows the names")
        print(f"deleted the learners saved as {args.name}")
        return 0
    try:
        TypeAdapter(SavedName).validate_python(args.name)
    except ValidationError:
        raise UserError(f"{args.name!r}: a saved name is lower-case letters, digits, ., - and _ (at most 48)") from None
    try:
        workers = save_learners(client, keys, args.name, time.time())
    except SavedLearnersError as exc:
        raise UserError(str(exc)) from None
    print(f"saved the learners of {len(workers)} worker(s) as {args.name}; rank with them by --variant NAME=learned,learners={args.name}")
    return 0


def _over(experiment: "Experiment", now: datetime) -> bool:
    """Stopped, or past its end: it will not rank again (a scheduled one will)."""
    return experiment.stopped_at is not None or (experiment.ends_at is not None and experiment.ends_at <= now)
