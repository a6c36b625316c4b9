"""`evaluate-experiments` through the real `serve` and `profiles` processes: every run ends with a
decision or at its cap, its readings are in order, and the JSON says what the table says."""

import json

import pytest

from services.cli.main import main
from tests.services.evaluation.shops import live_services_env, synthetic_shop

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]


def test_experiments_run_through_the_services_and_report_the_traffic_each_needed(tmp_path, monkeypatch, small_checkpoint, kafka):
    synthetic_shop(tmp_path / "shop", 60, 10, 20, 4, 1)
    live_services_env(monkeypatch, small_checkpoint, kafka, EXPERIMENTS_POLL_S="0.2")
    out = tmp_path / "report"
    args = [
        "evaluate-experiments",
        str(tmp_path / "shop"),
        "--lists",
        "40",
        "--aa-lists",
        "30",
        "--every",
        "10",
        "--aa-runs",
        "1",
        "--runs",
        "1",
    ]
    assert main([*args, "--out", str(out)]) == 0
    runs = json.loads((out / "experiments.json").read_text())
    assert [r["scenario"].split(":")[0] for r in runs] == ["A/A", "A/A", "A/B", "interleaving", "A/B", "interleaving"]
    for run in runs:
        readings = [r["lists"] for r in run["readings"]]
        assert readings == list(range(10, run["lists"] + 1, 10)), run
        assert (run["decided_at"] is None) == (run["decision"] == "no decision yet") and run["lists"] <= (
            30 if run["scenario"].startswith("A/A") else 40
        )
        assert run["decided_at"] in (None, run["lists"])
    table = (out / "experiments.md").read_text()
    assert "| A/A: prior against prior | 1 |" in table
    assert table.count("runs declared a winner") == 2, "the A/A rate, of A/B and of interleaving"
    assert table.count("interleaving needed") == 2, "interleaving's traffic against A/B's, for each loss"
