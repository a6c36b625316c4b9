"""The evaluation's report: a markdown page, a plot of the metrics over the stream, metrics.json."""

import json
from pathlib import Path

import numpy as np

from models.evaluation.charts import line_chart
from services.evaluation.replay import SHELFSIGHT, ReplayResult


def summary(result: ReplayResult) -> dict[str, object]:
    """Everything the report says, as data (metrics.json)."""
    tallies = {name: t.summary(result.catalogue) for name, t in result.tallies.items()}
    if result.mode.startswith("live"):  # the API answers k items: its candidates, and so recall@100, are not seen
        tallies[SHELFSIGHT]["recall"] = float("nan")
    latency = np.array(result.latency_ms) if result.latency_ms else np.zeros(1)
    return {
        "dataset": result.dataset,
        "window": result.config.window,
        "mode": result.mode,
        "rate": result.config.rate,
        "scored_span": list(result.scored_span),
        "config": result.config.__dict__,
        "settings": result.settings,
        "catalogue": result.catalogue,
        "events": result.events,
        "served_lists": result.served,
        "seconds": round(result.seconds, 1),
        "latency_ms": {"p50": round(float(np.percentile(latency, 50)), 2), "p99": round(float(np.percentile(latency, 99)), 2)},
        "dead_letters": result.dead_letters,
        "dropped_already_seen": result.dropped,
        "recommenders": tallies,
        "cold_start": {name: t.summary() for name, t in result.cold_start.items()},
        "ranker": result.ranker,
        "sources": result.sources.summary(),
    }


def write_report(result: ReplayResult, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    data = summary(result)
    (out / "metrics.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    window = max(50, min(1000, result.config.eval_size // 20))
    series = {name: [(n, hr) for n, hr, _ in t.rolling(window)] for name, t in result.tallies.items()}
    line_chart(
        series, f"HR@{result.config.k} over the scored window (each point: {window} questions)", "questions", f"HR@{result.config.k}"
    ).save(out / "hr_over_stream.png")
    (out / "report.md").write_text(markdown(data, window))
    return out / "report.md"


def markdown(data: dict, window: int) -> str:
    k = data["config"]["k"]
    lines = _overview(data) + _cold_start(data, k) + _sources(data, k) + _ranking(data)
    lines += ["", "## Over the stream", "", "![HR over the scored window](hr_over_stream.png)", ""]
    return "\n".join(lines)


def _overview(data: dict) -> list[str]:
    config, k, recall_at = data["config"], data["config"]["k"], data["config"]["recall_at"]
    rows = data["recommenders"]
    lines = [
        f"# Recommendation quality: {data['dataset']}, {data['window']} window",
        "",
        f"- events replayed: {data['events']:,}; catalogue: {data['catalogue']:,} products",
        f"- scored: the {'last' if data['window'] == 'test' else 'validation'} {int(rows[SHELFSIGHT]['questions']):,} choices "
        f"({data['scored_span'][0][:10]} to {data['scored_span'][1][:10]}), each asked before it was learned; "
        f"{config['warmup_size']:,} choices before them were served too, so the ranking could learn",
        f"- mode: {data['mode']}, at {data['rate']:g} events/s in the served part; settings "
        f"{', '.join(f'{key}={value}' for key, value in data['settings'].items())}",
        f"- served lists: {data['served_lists']:,}; recommendation latency p50 {data['latency_ms']['p50']} ms, "
        f"p99 {data['latency_ms']['p99']} ms; replay took {data['seconds']:.0f} s",
        f"- items the shopper had already interacted with are dropped from every list before scoring "
        f"(Shelfsight returned {data['dropped_already_seen']} such items); dead letters: {data['dead_letters']}",
        "",
        f"| recommender | HR@{k} (95 % interval) | NDCG@{k} | MRR@{k} | recall@{recall_at} | coverage | diversity |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, m in rows.items():
        bold = "**" if name == SHELFSIGHT else ""
        lines.append(
            f"| {bold}{name}{bold} | {bold}{m['hr']:.3f}{bold} ± {m['hr_ci']:.3f} | {bold}{m['ndcg']:.3f}{bold} ± "
            f"{m['ndcg_ci']:.3f} | {m['mrr']:.3f} | {m['recall']:.3f} | {m['coverage']:.3f} | {m['diversity']:.3f} |"
        )
    return [
        *lines,
        "",
        f"HR@{k}: share of choices found in the top {k}; NDCG@{k}: discounted by rank; MRR@{k}: mean reciprocal rank; "
        f"recall@{recall_at}: share found among the first {recall_at} candidates (for Shelfsight, its whole ranked "
        "candidate pool: whether candidates or ranking limit the result); coverage: share of the catalogue that "
        f"appeared in any top {k}; diversity: mean pairwise cosine distance of the fused vectors inside a list.",
        "",
    ]


def _cold_start(data: dict, k: int) -> list[str]:
    if not data["cold_start"]:
        return []
    lines = [
        "## New products and the shoppers' hidden tastes",
        "",
        f"| recommender | new products per top {k} | new, matching the shopper's taste | on the shopper's taste | "
        f"HR@{k} on choices of new products | new products ever shown | hours to first shown (median) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, m in data["cold_start"].items():
        lines.append(
            f"| {name} | {m['new_per_list']:.2f} | {m['new_matching_per_list']:.2f} | {m['on_taste']:.1%} | "
            f"{m['new_hr']:.3f} | {m['new_shown']:.1%} | {m['hours_to_first_shown']:.1f} |"
        )
    return [
        *lines,
        "",
        "New (first two columns): listed after the stream began and not yet clicked or viewed by anyone when "
        "the list was asked for. The last three count every product listed after the stream began; hours to first "
        "shown: from its listing to the first scored list that held it. When shoppers first click a new product "
        "cannot be measured on a fixed log: they click what the log says, whatever they were shown.",
        "",
    ]


def _sources(data: dict, k: int) -> list[str]:
    if not data.get("sources"):
        return []
    lines = [
        "## Candidate sources",
        "",
        f"| source | finds the choice | top-{k} places it proposed | places whose reason names it | hits whose reason names it |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, m in data["sources"].items():
        lines.append(f"| `{name}` | {m['finds_choice']:.1%} | {m['places']:.1%} | {m['named']:.1%} | {m['named_hits']:.1%} |")
    return [
        *lines,
        "",
        "Finds the choice: share of questions where the source proposed the product chosen next (its recall). "
        "A product proposed by several sources counts for each; a reason names one source: of those that "
        "proposed the product, the one whose features added most to its score.",
        "",
    ]


def _ranking(data: dict) -> list[str]:
    ranker = data["ranker"]
    lines = [
        "## The learned ranking",
        "",
        f"Choices joined with the served list they were made from: {ranker.get('choices', 0):,} "
        f"({ranker.get('pairs', 0):,} chosen/skipped pairs); learned: {ranker.get('learned')}.",
    ]
    if ranker.get("weights"):
        lines += [
            "",
            "Weights on standardised features, largest first:",
            "",
            ", ".join(f"`{n}` {w:+.3f}" for n, w in list(ranker["weights"].items())[:12]),
        ]
    return lines
