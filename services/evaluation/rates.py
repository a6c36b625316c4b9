"""Quality against event rate: HR@k of Shelfsight and the baselines from several `evaluate-recs`
reports of one window at different `--rate`s, as a chart (log scale of events per second) and
a markdown table.

    python -m services.evaluation.rates reports/recs/ml-test-r1 reports/recs/ml-test-r20 … --out docs/img/x.png
"""

import argparse
import json
import math
from pathlib import Path

from models.evaluation.charts import line_chart


def read(reports: list[Path]) -> list[dict]:
    runs = [json.loads((folder / "metrics.json").read_text()) for folder in reports]
    return sorted(runs, key=lambda run: float(run["rate"]))


def table(runs: list[dict]) -> str:
    names = list(runs[0]["recommenders"])
    k = runs[0]["config"]["k"]
    lines = [f"| events/s | mode | {' | '.join(f'{name}: HR@{k}' for name in names)} |", "| --- | --- |" + " --- |" * len(names)]
    for run in runs:
        cells = [f"{run['recommenders'][n]['hr']:.4f} ± {run['recommenders'][n]['hr_ci']:.4f}" for n in names]
        lines.append(f"| {run['rate']:g} | {'live' if run['mode'].startswith('live') else 'in-process'} | {' | '.join(cells)} |")
    return "\n".join(lines)


def chart(runs: list[dict], out: Path) -> None:
    k = runs[0]["config"]["k"]
    in_process = [run for run in runs if not run["mode"].startswith("live")]
    series: dict[str, list[tuple[float, float]]] = {
        name: [(math.log10(float(run["rate"])) + 1, float(run["recommenders"][name]["hr"])) for run in in_process]
        for name in runs[0]["recommenders"]
    }
    ticks = {math.log10(float(run["rate"])) + 1: f"{float(run['rate']):g}" for run in in_process}
    title = f"HR@{k} against the shop's event rate ({runs[0]['dataset']}, {runs[0]['window']} window)"
    out.parent.mkdir(parents=True, exist_ok=True)
    line_chart(series, title, "events per second (log scale)", f"HR@{k}", x_ticks=ticks).save(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", type=Path, nargs="+", help="evaluate-recs report folders (with metrics.json)")
    parser.add_argument("--out", type=Path, required=True, help="the chart (PNG)")
    args = parser.parse_args()
    runs = read(args.reports)
    chart(runs, args.out)
    print(table(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
