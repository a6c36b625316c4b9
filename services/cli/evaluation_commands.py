"""`shelfsight datasets movielens-100k | synthetic-shop` and `shelfsight evaluate-recs`.

Heavy imports happen inside the handlers, so the rest of the CLI stays quick.
"""

import argparse
import sys
from pathlib import Path

from services.cli import Commands
from services.errors import UserError
from services.evaluation.logs import NEW_LISTINGS
from services.settings import Settings


def register_datasets(kinds: Commands) -> None:
    movielens = kinds.add_parser("movielens-100k", help="MovieLens-100k (from the recbole wheel) as a catalogue and click log")
    movielens.add_argument("out", type=Path, help="folder to write catalogue.jsonl and clicks.jsonl into")
    movielens.set_defaults(run=_movielens)
    shop = kinds.add_parser("synthetic-shop", help="a shop on the Fashion-MNIST photos whose shoppers have hidden tastes")
    shop.add_argument("out", type=Path, help="folder to write catalogue.jsonl, clicks.jsonl and truth.json into")
    shop.add_argument("--products", type=int, default=800, help="listed at the start")
    shop.add_argument("--new-products", type=int, default=200, help="listed mid-stream, half without title or category")
    shop.add_argument("--shoppers", type=int, default=200)
    shop.add_argument("--clicks-before", type=int, default=8, help="clicks per shopper before the new products are listed")
    shop.add_argument("--clicks-after", type=int, default=3, help="clicks per shopper after (the scored ones)")
    shop.add_argument(
        "--new-listings",
        choices=NEW_LISTINGS,
        default="mixed",
        help="how the new products are listed: mixed (half with a neutral title and no category), neutral (all), "
        "foreign (titles in another language, no category), no-category, informative",
    )
    shop.add_argument("--new-after-days", type=int, default=7, help="days between the catalogue's listing and the new products'")
    shop.add_argument("--seed", type=int, default=0)
    shop.set_defaults(run=_synthetic)


def register(commands: Commands) -> None:
    evaluate = commands.add_parser(
        "evaluate-recs",
        help="replay a catalogue and click log through the real services' code and score every recommendation",
        description="Test-then-learn: before each choice (click, cart, purchase) the shopper's top k is asked for and "
        "scored against what they chose; baselines answer the same questions. Needs Redis (`shelfsight stack up`); "
        "ranking settings come from SHELFSIGHT_* as for `serve`.",
    )
    evaluate.add_argument("dataset", type=Path, help="folder with catalogue.jsonl and clicks.jsonl (see `shelfsight datasets`)")
    evaluate.add_argument(
        "--window",
        choices=["test", "validation"],
        default="test",
        help="test: the last --eval-size choices (report it); validation: the ones before (tune on it)",
    )
    evaluate.add_argument("--eval-size", type=int, default=None, help="choices scored (default: the dataset's, else 10,000)")
    evaluate.add_argument(
        "--warmup-size", type=int, default=None, help="choices before the window served for learning (default: the dataset's, else 10,000)"
    )
    evaluate.add_argument("-k", type=int, default=10)
    evaluate.add_argument(
        "--rate",
        type=float,
        default=15.0,
        help="events per second the shop publishes in the served part (default 15): the services' "
        "checkpoint, reload and refit cadence spans rate × seconds events, as it would live",
    )
    evaluate.add_argument(
        "--live",
        action="store_true",
        help="through the running services: start `serve` and `profiles` on topics and keys of this run's own, "
        "post the events over HTTP at --rate and ask for every recommendation over HTTP (docs/evaluation.md)",
    )
    evaluate.add_argument("--limit-events", type=int, default=None, help="replay only the first N events (a quick slice)")
    evaluate.add_argument("--out", type=Path, default=None, help="report folder (default: reports/recs/<dataset>-<window>)")
    evaluate.set_defaults(run=_evaluate)

    explore = commands.add_parser(
        "evaluate-exploration",
        help="simulated shoppers react to what a synthetic shop shows them: how new products get their chance, per exploration policy",
        description="On a synthetic shop (`shelfsight datasets synthetic-shop`): the log's history, then simulated shoppers "
        "with hidden tastes who click what they are shown; each exploration policy (fixed places, Thompson sampling) meets "
        "the same shoppers. Needs Redis (`shelfsight stack up`).",
    )
    explore.add_argument("dataset", type=Path, help="a synthetic shop folder (with truth.json)")
    explore.add_argument("--steps", type=int, default=2_000, help="lists asked for by simulated shoppers, per policy")
    explore.add_argument("--policies", nargs="+", choices=["fixed", "bandit"], default=["fixed", "bandit"])
    explore.add_argument("--seed", type=int, default=0)
    explore.add_argument("--out", type=Path, default=None, help="write the table and figures here (markdown)")
    explore.set_defaults(run=_explore)
    experiments = commands.add_parser(
        "evaluate-experiments",
        help="live A/A, A/B and interleaving runs through `serve` and `profiles` on a synthetic shop: right decisions, traffic needed",
        description="Starts `serve` and `profiles` on topics and keys of their own, loads the shop, then simulated shoppers "
        "with known tastes shop while an experiment runs; the report is read over HTTP until it decides. "
        "Needs Kafka and Redis (`shelfsight stack up`).",
    )
    experiments.add_argument("dataset", type=Path, help="a synthetic shop folder (with truth.json)")
    experiments.add_argument("--lists", type=int, default=6000, help="lists per A/B or interleaving run, at most")
    experiments.add_argument("--aa-lists", type=int, default=400, help="lists per A/A run (it should never decide, so it runs this long)")
    experiments.add_argument("--every", type=int, default=5, help="lists between two readings of the report")
    experiments.add_argument("--aa-runs", type=int, default=5, help="A/A runs (no winner expected)")
    experiments.add_argument(
        "--runs", type=int, default=3, help="runs of each A/B and interleaving scenario (popularity alone, and a wider mix, should lose)"
    )
    experiments.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="SCENARIO",
        help="run only this scenario (repeat for several): aa, aa-interleaved, ab-popularity, interleaved-popularity, "
        "ab-variety, interleaved-variety",
    )
    experiments.add_argument("--seed", type=int, default=0)
    experiments.add_argument("--alike", action="store_true", help="shoppers all click as readily (default: their eagerness varies)")
    experiments.add_argument("--out", type=Path, default=None, help="write the table (markdown) and every reading (JSON) here")
    experiments.set_defaults(run=_experiments)


def _movielens(_settings: Settings, args: argparse.Namespace) -> int:
    from services.evaluation.movielens import convert

    products, events = convert(args.out)
    print(f"wrote {products} products and {events} events to {args.out} (MovieLens-100k; not for redistribution)")
    return 0


def _synthetic(_settings: Settings, args: argparse.Namespace) -> int:
    from models.data.fashion_mnist import DatasetMissing
    from services.evaluation.synthetic import ShopPlan, generate

    if min(args.products, args.shoppers, args.clicks_before, args.clicks_after) < 1 or min(args.new_products, args.new_after_days) < 0:
        raise UserError(
            "synthetic-shop needs at least one product, shopper and click before and after, "
            "and no negative --new-products or --new-after-days"
        )
    plan = ShopPlan(
        args.products,
        args.new_products,
        args.shoppers,
        args.clicks_before,
        args.clicks_after,
        seed=args.seed,
        new_listings=args.new_listings,
        new_after_days=args.new_after_days,
    )
    try:
        products, events = generate(args.out, plan)
    except DatasetMissing as exc:
        raise UserError(str(exc)) from None
    print(f"wrote {products} products, {events} events and the shoppers' hidden tastes to {args.out}")
    return 0


def _evaluate(settings: Settings, args: argparse.Namespace) -> int:
    from services.embedder.service import load_predictor
    from services.evaluation.logs import read_dataset
    from services.evaluation.replay import Replay, ReplayConfig
    from services.evaluation.report import summary, write_report
    from services.redis_clients import redis_client
    from services.stack.model import ensure_model

    redis_client(settings).close()  # a one-line error when Redis is not there
    dataset = read_dataset(args.dataset, args.limit_events)
    eval_size = int(args.eval_size or _meta_int(dataset.meta, "eval_size"))
    warmup_size = int(args.warmup_size if args.warmup_size is not None else _meta_int(dataset.meta, "warmup_size"))
    if min(eval_size, args.k) < 1 or warmup_size < 0:
        raise UserError("--eval-size and -k must be at least 1, --warmup-size at least 0")
    if not args.rate > 0:
        raise UserError("--rate must be a positive number of events per second")
    checkpoint = ensure_model(settings)
    config = ReplayConfig(window=args.window, eval_size=eval_size, warmup_size=warmup_size, k=args.k, rate=args.rate)
    if args.live:
        from services.bus.broker import require_broker
        from services.evaluation.live import run_live

        require_broker(settings)
        result = run_live(settings, checkpoint, dataset, config, progress=sys.stderr.isatty())
    else:
        predictor = load_predictor(settings.model_copy(update={"model_dir": checkpoint}))
        result = Replay(settings, predictor, dataset, config).run(progress=sys.stderr.isatty())
    out = args.out or Path("reports") / "recs" / f"{dataset.name}-{args.window}{'-live' if args.live else ''}"
    report = write_report(result, out)
    data = summary(result)
    recommenders, cold_start = data["recommenders"], data["cold_start"]
    assert isinstance(recommenders, dict) and isinstance(cold_start, dict)
    width = max(len(n) for n in recommenders)
    mode = "live, through the services" if args.live else "in-process replay"
    print(
        f"{dataset.name}, {args.window} window: {int(recommenders['Shelfsight']['questions']):,} choices scored "
        f"({mode} at {args.rate:g} events/s)"
    )
    for name, m in recommenders.items():
        print(
            f"  {name:<{width}}  HR@{args.k} {m['hr']:.3f} ± {m['hr_ci']:.3f}  NDCG@{args.k} {m['ndcg']:.3f} ± {m['ndcg_ci']:.3f}  "
            f"MRR {m['mrr']:.3f}  "
            f"recall@{config.recall_at} {m['recall']:.3f}  coverage {m['coverage']:.3f}  diversity {m['diversity']:.3f}"
        )
    for name, m in cold_start.items():
        print(
            f"  {name:<{width}}  new per list {m['new_per_list']:.2f}  new matching {m['new_matching_per_list']:.2f}  "
            f"on taste {m['on_taste']:.1%}  HR@{args.k} on new {m['new_hr']:.3f}  new shown {m['new_shown']:.1%}  "
            f"hours to first shown {m['hours_to_first_shown']:.1f}"
        )
    print(f"report: {report}")
    return 0


def _explore(settings: Settings, args: argparse.Namespace) -> int:
    from services.embedder.service import load_predictor
    from services.evaluation.logs import read_dataset
    from services.evaluation.replay import Replay, ReplayConfig
    from services.evaluation.simulation import ShopSimulation, SimulationPlan, report
    from services.redis_clients import redis_client
    from services.stack.model import ensure_model

    redis_client(settings).close()  # a one-line error when Redis is not there
    dataset = read_dataset(args.dataset)
    if dataset.truth is None:
        raise UserError(f"{args.dataset} has no truth.json: make a synthetic shop with `shelfsight datasets synthetic-shop DIR`")
    if args.steps < 2:
        raise UserError("--steps must be at least 2")
    checkpoint = ensure_model(settings)
    predictor = load_predictor(settings.model_copy(update={"model_dir": checkpoint}))
    plan = SimulationPlan(steps=args.steps, seed=args.seed)
    outcomes = {}
    for policy in args.policies:
        policy_settings = settings.model_copy(update={"exploration": policy})
        replay = Replay(policy_settings, predictor, dataset, ReplayConfig(seed=args.seed))
        outcomes[policy] = replay.with_services(lambda run: ShopSimulation(run, dataset, plan).go())
        print(f"  {policy}: done", file=sys.stderr)
    text = report(outcomes)
    print(text.split("\n\n")[0])
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


def _meta_int(meta: dict[str, object], name: str, default: int = 10_000) -> int:
    """A whole number from the dataset's meta.json; ``default`` where it gives none."""
    value = meta.get(name, default)
    if not isinstance(value, int | float | str):
        raise UserError(f"the dataset's meta.json gives {name} as {value!r}, not a number")
    return int(value)


def _experiments(settings: Settings, args: argparse.Namespace) -> int:
    from services.bus.broker import require_broker
    from services.evaluation.experiments import SCENARIOS, Outcome, Plan, as_json, run_experiments, summary
    from services.evaluation.logs import read_dataset
    from services.redis_clients import redis_client
    from services.stack.model import ensure_model

    unknown = sorted(set(args.only) - {s.key for s in SCENARIOS})
    if unknown:
        raise UserError(f"--only {unknown[0]}: no such scenario; choose from {', '.join(s.key for s in SCENARIOS)}")
    if min(args.lists, args.aa_lists, args.every) < 1 or min(args.aa_runs, args.runs) < 0:
        raise UserError("--lists, --aa-lists and --every must be at least 1, --aa-runs and --runs at least 0")
    require_broker(settings)
    redis_client(settings).close()  # a one-line error when Redis is not there
    dataset = read_dataset(args.dataset)
    if dataset.truth is None:
        raise UserError(f"{args.dataset} has no truth.json: make a synthetic shop with `shelfsight datasets synthetic-shop DIR`")
    plan = Plan(
        lists=args.lists,
        aa_lists=args.aa_lists,
        every=args.every,
        aa_runs=args.aa_runs,
        runs=args.runs,
        seed=args.seed,
        eager=not args.alike,
        only=tuple(args.only),
    )

    def write(outcomes: "list[Outcome]") -> None:
        if args.out is not None:  # after every run: a long evaluation keeps what it has if stopped
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "experiments.md").write_text(summary(outcomes, plan) + "\n")
            (args.out / "experiments.json").write_text(as_json(outcomes) + "\n")

    outcomes = run_experiments(settings, ensure_model(settings), dataset, plan, progress=sys.stderr.isatty(), each=write)
    write(outcomes)
    print(summary(outcomes, plan))
    return 0
