"""`evaluate-recs --live` drives the real `serve` and `profiles` processes over HTTP, and agrees with
the in-process replay at the same event rate on the same log."""

import json

import pytest

from services.cli.main import main
from tests.services.evaluation.shops import live_services_env, synthetic_shop

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]


def test_the_live_run_and_the_in_process_replay_answer_the_same_question(tmp_path, monkeypatch, small_checkpoint, kafka):
    synthetic_shop(tmp_path / "shop", 120, 30, 40, 8, 3)
    live_services_env(monkeypatch, small_checkpoint, kafka, ITEM_MODEL_REFIT_S="2")
    common = ["evaluate-recs", str(tmp_path / "shop"), "--eval-size", "80", "--warmup-size", "60", "--rate", "25"]
    assert main([*common, "--out", str(tmp_path / "in-process")]) == 0
    assert main([*common, "--live", "--out", str(tmp_path / "live")]) == 0
    replayed = json.loads((tmp_path / "in-process" / "metrics.json").read_text())
    live = json.loads((tmp_path / "live" / "metrics.json").read_text())

    assert live["mode"].startswith("live") and not replayed["mode"].startswith("live")
    assert live["served_lists"] == replayed["served_lists"] == 140 and live["events"] == replayed["events"]
    assert live["settings"]["achieved_rate"] > 20, "the run keeps the rate it was asked for"
    for name, baseline in replayed["recommenders"].items():
        assert live["recommenders"][name]["questions"] == 80, name
        if name != "Shelfsight":  # the same events, learned in the same order: the very same answers
            assert live["recommenders"][name]["hr"] == baseline["hr"], name
    ours, theirs = live["recommenders"]["Shelfsight"], replayed["recommenders"]["Shelfsight"]
    assert abs(ours["hr"] - theirs["hr"]) <= max(ours["hr_ci"], theirs["hr_ci"]), (ours, theirs)
    assert ours["hr"] > 0 and replayed["sources"], "the replay also says which sources found the choices"


def test_a_sigterm_unwinds_a_live_run_as_ctrl_c_does():
    """`running()` stops the services it started on the way out: a SIGTERM must take that way
    too (by default it ends the process at once, and `serve` and `profiles` were left running)."""
    import os
    import signal
    import time

    from services.evaluation.live import _terminated_as_interrupted

    before = signal.getsignal(signal.SIGTERM)
    unwound = []
    with pytest.raises(SystemExit) as stopped, _terminated_as_interrupted():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # the handler runs between two bytecodes of this loop
                time.sleep(0.01)
        finally:
            unwound.append(True)
    assert unwound and stopped.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before, "the previous handler is back"
