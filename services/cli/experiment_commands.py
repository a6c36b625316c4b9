"""`shelfsight experiments create|list|stop|report|delete`: live A/B tests between rankings."""

import argparse
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from services.cli import Commands
from services.errors import UserError
from services.settings import Settings
from state.experiments import COMPARED

if TYPE_CHECKING:
    import redis

    from schemas.experiments import ExperimentReport, VariantSpec
    from state.keys import Keys


def register(commands: Commands) -> None:
    experiments = commands.add_parser(
        "experiments",
        help="A/B tests and interleaving between rankings on live traffic: create, list, stop, report, delete",
        description="Every `serve` reads the experiments from Redis within SHELFSIGHT_EXPERIMENTS_POLL_S and assigns each "
        "shopper to a variant by a hash of their id; the profiles worker credits each variant with the clicks, carts "
        "and purchases on the lists it ranked. See docs/experiments.md.",
    )
    actions = experiments.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="start an experiment (at most one runs at a time)")
    create.add_argument("experiment_id", help="lower-case letters, digits, - and _")
    create.add_argument(
        "--variant",
        action="append",
        required=True,
        metavar="NAME=RANKING[,KEY=VALUE…][:SHARE]",
        help="a variant: its name, its ranking (learned, prior or popularity), optionally its own mmr_lambda, "
        "explore_slots, saved learners (learners=NAME, see `shelfsight learners`), candidate sources left out "
        "(without=looks+new) or a staged model version (model=VERSION, see `shelfsight reembed --stage`), and its share of shoppers "
        "(default: equal shares); the first is the control. Give two to four.",
    )
    create.add_argument(
        "--interleave",
        action="store_true",
        help="team-draft interleaving: every shopper sees both variants' rankings merged into one list (two variants; shares unused)",
    )
    create.add_argument("--days", type=float, default=None, help="end it after this many days (default: run until stopped)")
    create.add_argument("--description", default="", help="what it tests, for the report")
    for name, text in (("list", "every experiment, newest last"), ("stop", "stop assigning shoppers; the totals stay")):
        action = actions.add_parser(name, help=text)
        if name == "stop":
            action.add_argument("experiment_id")
    report = actions.add_parser("report", help="per variant: shoppers, rates with 95 %% intervals, the sequential test")
    report.add_argument("experiment_id")
    report.add_argument("--metric", default="clicks", choices=COMPARED, help="compared per shopper")
    report.add_argument("--json", action="store_true", help="the report as JSON (as GET /v1/experiments/{id} returns it)")
    delete = actions.add_parser("delete", help="remove a stopped experiment and its totals")
    delete.add_argument("experiment_id")
    experiments.set_defaults(run=_experiments)


_KNOBS = ("mmr_lambda", "explore_slots", "learners", "without", "model")


def parse_variants(texts: list[str]) -> "list[VariantSpec]":
    """``NAME=RANKING[,KEY=VALUE…][:SHARE]`` each; shares not given split what the given ones leave
    equally. KEY: mmr_lambda, explore_slots, learners (a saved name), without (candidate sources joined by +),
    or model (a model version of the catalogue).

    >>> [v.describe() for v in parse_variants(["a=prior", "b=prior,mmr_lambda=0.4,without=looks+new:0.5"])]
    ['prior', 'prior,mmr_lambda=0.4,without=looks+new']
    """
    from schemas.experiments import VariantSpec

    parsed: list[tuple[dict[str, object], float | None]] = []
    for text in texts:
        name, _, rest = text.partition("=")
        how, _, share = rest.partition(":")
        ranking, *knobs = how.split(",")
        if not name or not ranking:
            raise UserError(
                f"--variant {text!r}: write NAME=RANKING[,KEY=VALUE…][:SHARE], e.g. control=prior:0.5 or wide=prior,mmr_lambda=0.4"
            )
        fields: dict[str, object] = {"name": name, "ranking": ranking}
        for knob in knobs:
            key, _, value = knob.partition("=")
            if key not in _KNOBS or not value:
                raise UserError(f"--variant {text!r}: {knob!r} is not KEY=VALUE with KEY one of {', '.join(_KNOBS)}")
            if key in fields:
                raise UserError(f"--variant {text!r}: {key} is given twice")
            fields[key] = value.split("+") if key == "without" else value
        try:
            parsed.append((fields, float(share) if share else None))
        except ValueError:
            raise UserError(f"--variant {text!r}: the share {share!r} is not a number (e.g. 0.5)") from None
    given = sum(s for _, s in parsed if s is not None)
    missing = [p for p in parsed if p[1] is None]
    left = (1.0 - given) / len(missing) if missing else 0.0
    try:
        return [VariantSpec.model_validate({**f, "share": s if s is not None else left}) for f, s in parsed]
    except ValueError as exc:
        raise UserError(f"--variant: {_first_error(exc)}") from None


def _first_error(exc: Exception) -> str:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        return f"{where}: {error['msg']}" if where else str(error["msg"])
    return str(exc)


def _experiments(settings: Settings, args: argparse.Namespace) -> int:
    from services.redis_clients import redis_client
    from state import experiments as stored
    from state.keys import Keys

    client, keys, now = redis_client(settings), Keys.of(settings), datetime.now(UTC)
    try:
        if args.action == "create":
            return _create(settings, client, keys, args, now)
        if args.action == "list":
            for experiment in stored.load_all(client, keys):
                variants = "; ".join(f"{v.name}={v.describe()}:{v.share:g}" for v in experiment.variants)
                state = "stopped" if experiment.stopped_at else ("running" if experiment.running(now) else "not running")
                print(f"{experiment.experiment_id}\t{state}\t{variants}\tcreated {experiment.created_at.isoformat(timespec='seconds')}")
            return 0
        if args.action == "stop":
            stored.stop(client, keys, args.experiment_id, now)
            print(f"stopped {args.experiment_id}; `shelfsight experiments report {args.experiment_id}` still reads it")
            return 0
        if args.action == "delete":
            stored.delete(client, keys, args.experiment_id)
            print(f"deleted {args.experiment_id}")
            return 0
        return _report(client, keys, args)
    except stored.ExperimentError as exc:
        raise UserError(str(exc)) from None


def _create(settings: Settings, client: "redis.Redis", keys: "Keys", args: argparse.Namespace, now: datetime) -> int:
    from schemas.experiments import ExperimentSpec
    from state.checkpoints import saved_learners
    from state.experiments import create

    variants = parse_variants(args.variant)
    saved = saved_learners(client, keys)
    for variant in variants:
        if variant.learners is not None and variant.learners not in saved:
            raise UserError(
                f"--variant {variant.name}: no learners are saved as {variant.learners!r}: `shelfsight learners save NAME` saves them"
            )
    if args.days is not None and not 0 < args.days <= 3650:
        raise UserError(f"--days {args.days:g}: give a number of days from more than 0 to 3650, or leave it out to run until stopped")
    ends = now + timedelta(days=args.days) if args.days is not None else None
    try:
        spec = ExperimentSpec(
            experiment_id=args.experiment_id,
            mode="interleave" if args.interleave else "ab",
            variants=variants,
            ends_at=ends,
            description=args.description,
        )
    except ValueError as exc:
        raise UserError(f"experiment {args.experiment_id!r}: {_first_error(exc)}") from None
    _check_models(settings, client, keys, variants)
    experiment = create(client, keys, spec, now)
    print(f"created {experiment.experiment_id}: every `serve` assigns shoppers to it within its experiments poll")
    return 0


def _check_models(settings: Settings, client: "redis.Redis", keys: "Keys", variants: "list[VariantSpec]") -> None:
    """Each model a variant names must be one `serve` can open: live, previous or staged."""
    named = [v for v in variants if v.model is not None]
    if not named:
        return
    from services.embedder.versions import base_version  # reads the model card (and loads torch): only when needed
    from state.catalogue import servable

    try:
        base = base_version(settings)
    except UserError:  # no checkpoint where the settings say: the staged and switched versions are still known
        base = None
    known = servable(client, keys, base)
    for variant in named:
        if variant.model not in known:
            raise UserError(
                f"--variant {variant.name}: no collection holds model version {variant.model!r}: "
                f"stage it with `shelfsight reembed --model CHECKPOINT --stage` (known: {', '.join(sorted(known)) or 'none'})"
            )


def _report(client: "redis.Redis", keys: "Keys", args: argparse.Namespace) -> int:
    from services.experiments.report import read_report

    report = read_report(client, keys, args.experiment_id, args.metric)
    print(report.model_dump_json(indent=2) if args.json else render(report))
    return 0


def render(report: "ExperimentReport") -> str:
    """The report as a few lines of text."""
    e = report.experiment
    lines = [f"{e.experiment_id} ({report.status}), read {report.read_at.isoformat(timespec='seconds')}; {e.description}".rstrip("; ")]
    if report.interleaving is not None:
        return "\n".join(lines + _render_interleaving(report))
    lines.append(f"{'variant':<14}{'made by':<12}{'shoppers':>9}  {'lists/shopper':>14}  {'CTR':>22}  {report.metric + '/shopper':>26}")
    for v in report.variants:
        m, ctr = v.per_shopper[report.metric], v.ctr
        lines.append(
            f"{v.name:<14}{v.settings:<12}{v.shoppers:>9}  {v.per_shopper['lists'].mean:>14.2f}  "
            f"{ctr.mean:>7.4f} [{ctr.low:.4f}, {ctr.high:.4f}]  {m.mean:>9.4f} [{m.low:.4f}, {m.high:.4f}]"
        )
    for v in report.variants:
        g = v.guardrails
        lines.append(
            f"  {v.name}: {g.requests} requests, errors {g.error_rate.mean:.2%}, mean {g.latency_ms_mean:.1f} ms, "
            f"slower than 100 ms {g.slow_share.mean:.2%}"
        )
    for c in report.comparisons:
        relative = f" ({c.relative:+.1%})" if c.relative is not None else ""
        lines.append(
            f"{c.variant} − {report.variants[0].name}: {c.difference.mean:+.4f} [{c.difference.low:+.4f}, {c.difference.high:+.4f}]{relative} "
            f"{c.metric}/shopper; always-valid p {c.p_value_running:.4g} (now {c.p_value:.4g}): {c.decision}"
        )
    srm = report.sample_ratio
    lines.append(
        f"sample ratio: p {srm.p_value:.4g}" + (" — MISMATCH: the split is off; do not trust these figures" if srm.mismatch else " (fine)")
    )
    return "\n".join(lines)


def _render_interleaving(report: "ExperimentReport") -> list[str]:
    found = report.interleaving
    assert found is not None
    control, challenger = (v.name for v in report.experiment.variants)
    share, pref = found.second_wins_share, found.preference_per_shopper
    g = found.guardrails
    guard = [f"merged lists: {g.requests} requests, errors {g.error_rate.mean:.2%}, mean {g.latency_ms_mean:.1f} ms"] if g else []
    return [
        *guard,
        f"interleaved lists {found.lists} for {found.shoppers} shoppers; won by {control} {found.wins[control]}, "
        f"by {challenger} {found.wins[challenger]}, tied {found.ties}",
        f"{challenger}'s share of the lists won: {share.mean:.3f} [{share.low:.3f}, {share.high:.3f}]",
        f"{challenger} − {control} choices per shopper: {pref.mean:+.4f} [{pref.low:+.4f}, {pref.high:+.4f}]; "
        f"always-valid p {found.p_value_running:.4g} (now {found.p_value:.4g}): {found.decision}",
    ]
