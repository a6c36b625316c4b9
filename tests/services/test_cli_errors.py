"""User mistakes get one line on stderr and exit code 2, never a traceback."""

import re
import subprocess
import sys

import pytest


def _run(*args, env=None):
    import os

    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "mentions"),
    [
        ({"SHELFSIGHT_KAFKA_BOOTSTRAP": "no-port"}, "SHELFSIGHT_KAFKA_BOOTSTRAP"),
        ({"SHELFSIGHT_TOPIC_PARTITIONS": "zero"}, "SHELFSIGHT_TOPIC_PARTITIONS"),
        ({"SHELFSIGHT_REDIS_URL": "http://x"}, "SHELFSIGHT_REDIS_URL"),
    ],
)
def test_bad_settings(env, mentions):
    result = _run("topics", "list", env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("shelfsight: error: invalid settings")
    assert mentions in result.stderr and result.stderr.count("\n") == 1


def test_no_broker_says_how_to_start_one():
    result = _run("topics", "create", env={"SHELFSIGHT_KAFKA_BOOTSTRAP": "127.0.0.1:1"})
    assert result.returncode == 2
    assert "no Kafka broker answers at 127.0.0.1:1" in result.stderr
    assert "shelfsight stack up" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_topic_for_tail(kafka):
    result = _run("tail", "no-such-topic", "--idle", "1")
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_shopper_tokens_need_the_secret_and_a_sane_ttl():
    import os

    env = {k: v for k, v in os.environ.items() if k != "SHELFSIGHT_SHOPPER_TOKEN_SECRET"}
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "shopper-token", "u-1"], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 2 and "SHELFSIGHT_SHOPPER_TOKEN_SECRET is not set" in result.stderr
    too_long = _run("shopper-token", "u-1", "--ttl", "999999", env={"SHELFSIGHT_SHOPPER_TOKEN_SECRET": "shopper-token-secret-cli"})
    assert too_long.returncode == 2 and "--ttl" in too_long.stderr and too_long.stderr.count("\n") == 1
    minted = _run("shopper-token", "u-1", env={"SHELFSIGHT_SHOPPER_TOKEN_SECRET": "shopper-token-secret-cli"})
    assert minted.returncode == 0

    from services.recommender.http.tokens import verify

    assert verify(b"shopper-token-secret-cli", "u-1", minted.stdout.strip(), __import__("time").time(), 7200) is None


def test_bad_text_settings_for_training_say_which(tmp_path):
    result = _run("train", str(tmp_path), "--out", str(tmp_path / "out"), "--modality-dropout", "1.5")
    assert result.returncode == 2
    assert "--modality-dropout must be between 0 and 1" in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--shift-cells", "-1", "--shift-cells must be 0 or more"),
        ("--erase", "1.5", "--erase must be between 0 and 1"),
    ],
)
def test_bad_augmentation_for_training_is_a_clear_error(tmp_path, flag, value, message):
    result = _run("train", str(tmp_path), "--out", str(tmp_path / "out"), "--mode", "finetune", flag, value)
    assert result.returncode == 2
    assert message in result.stderr and result.stderr.count("\n") == 1


def test_choosing_views_for_a_folder_that_is_no_checkpoint_is_a_clear_error(tmp_path):
    result = _run("choose-views", str(tmp_path), str(tmp_path))
    assert result.returncode == 2
    assert "is not a Shelfsight checkpoint" in result.stderr and result.stderr.count("\n") == 1


def test_reembed_says_what_it_needs(kafka, small_checkpoint):
    env = {"SHELFSIGHT_TOPIC_PREFIX": kafka.topic_prefix, "SHELFSIGHT_REDIS_PREFIX": f"cli-{kafka.topic_prefix}"}
    neither = _run("reembed", env=env)
    assert neither.returncode == 2 and "--model CHECKPOINT, --rollback, --status or --unstage VERSION" in neither.stderr
    stage_what = _run("reembed", "--status", "--stage", env=env)
    assert stage_what.returncode == 2 and "--stage prepares a new version: give it with --model" in stage_what.stderr
    not_staged = _run("reembed", "--unstage", "m-9", env=env)
    assert not_staged.returncode == 2 and "m-9 is not staged" in not_staged.stderr and not_staged.stderr.count("\n") == 1
    nothing_before = _run("reembed", "--rollback", env=env)
    assert nothing_before.returncode == 2 and "nothing to roll back to" in nothing_before.stderr
    no_model = _run("reembed", "--model", str(small_checkpoint / "missing"), env={**env, "SHELFSIGHT_MODEL_DIR": str(small_checkpoint)})
    assert no_model.returncode == 2 and "no model checkpoint at" in no_model.stderr
    for result in (neither, nothing_before, no_model):
        assert result.stderr.count("\n") == 1, result.stderr


@pytest.mark.redis
def test_experiments_say_what_is_wrong_in_one_line_and_report_what_they_hold(monkeypatch, capsys):
    """In-process (main() is what the console script calls): a dozen subprocesses would cost 20 s."""
    import uuid

    from services.cli.main import main

    monkeypatch.setenv("SHELFSIGHT_REDIS_PREFIX", f"cli-exp-{uuid.uuid4().hex[:8]}:")

    def run(*args: str) -> tuple[int, str, str]:
        code = main(["experiments", *args])
        out, err = capsys.readouterr()
        return code, out, err

    mistakes = {
        ("--variant", "a=prior"): "at least 2 items",
        ("--variant", "a=prior:0.7", "--variant", "b=learned:0.7"): "add up to 1.4",
        ("--variant", "a=best", "--variant", "b=prior"): "ranking",
        ("--variant", "a=prior:half", "--variant", "b=prior"): "is not a number",
        ("--variant", "a", "--variant", "b=prior"): "NAME=RANKING",
        ("--interleave", "--variant", "a=prior", "--variant", "b=learned", "--variant", "c=popularity"): "give two variants",
        ("--days", "nan", "--variant", "a=prior", "--variant", "b=learned"): "--days nan",
        ("--days", "0", "--variant", "a=prior", "--variant", "b=learned"): "more than 0",
        ("--variant", "a=prior", "--variant", "b=prior,mmr=1"): "is not KEY=VALUE",
        ("--variant", "a=prior", "--variant", "b=prior,mmr_lambda=2"): "mmr_lambda: Input should be less than or equal to 1",
        ("--variant", "a=prior", "--variant", "b=prior,without=nope"): "without.0: Input should be",
        ("--interleave", "--variant", "a=prior", "--variant", "b=prior,without=looks"): "same without=",
        ("--interleave", "--variant", "a=prior", "--variant", "b=prior,model=m-2"): "compare model versions with an A/B experiment",
        ("--variant", "a=prior", "--variant", "b=prior,model=../x"): "model: String should match pattern",
        ("--variant", "a=prior", "--variant", "b=prior,model=m-never-staged"): "no collection holds model version 'm-never-staged'",
        ("--variant", "a=prior", "--variant", "b=prior,mmr_lambda=0.5,mmr_lambda=0.6"): "mmr_lambda is given twice",
        (
            "--variant",
            "a=prior",
            "--variant",
            "b=prior,without=covisit+history+items+trending+trending_in+affinity+taste+recent+context+new+looks",
        ): "leaves out every candidate source",
    }
    for args, says in mistakes.items():
        code, _, err = run("create", "cli-1", *args)
        assert code == 2 and says in err and err.count("\n") == 1, (args, err)
    assert run("create", "cli-1", "--variant", "control=learned", "--variant", "weak=popularity,explore_slots=0")[0] == 0
    code, _, err = run("create", "cli-1", "--variant", "a=prior", "--variant", "b=prior,model=m-never-staged")
    assert code == 2 and "stage it with `shelfsight reembed --model CHECKPOINT --stage`" in err, err
    code, _, err = run("create", "cli-2", "--variant", "a=prior", "--variant", "b=learned")
    assert code == 2 and "stop it first" in err and err.count("\n") == 1
    code, out, _ = run("report", "cli-1")
    assert code == 0 and "weak − control" in out and "no decision yet" in out, out
    assert run("stop", "cli-1")[0] == 0
    assert run("list")[1].startswith("cli-1\tstopped\tcontrol=learned:0.5; weak=popularity,explore_slots=0:0.5")
    assert run("delete", "cli-1")[0] == 0
    code, _, err = run("report", "cli-1")
    assert code == 2 and "no experiment 'cli-1'" in err


@pytest.mark.redis
def test_learners_are_saved_listed_and_deleted_by_name_and_mistakes_say_so(monkeypatch, capsys):
    import uuid

    from services.cli.main import main

    prefix = f"cli-saved-{uuid.uuid4().hex[:8]}:"
    monkeypatch.setenv("SHELFSIGHT_REDIS_PREFIX", prefix)

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    code, _, err = run("learners", "save", "nov")
    assert code == 2 and "no profiles worker has checkpointed learners yet" in err and err.count("\n") == 1
    import redis as redis_lib

    from models.ranking.learners import Learners
    from services.settings import load_settings
    from state.checkpoints import dump
    from state.keys import Keys
    from state.secret import state_secret

    settings = load_settings()
    client = redis_lib.Redis.from_url(settings.redis_url)
    client.set(Keys.of(settings).learners("main"), dump(Learners(), state_secret(settings)))
    assert run("learners", "save", "Bad Name")[0] == 2
    assert run("learners", "save", "nov")[0] == 0
    code, _, err = run("learners", "save", "nov")
    assert code == 2 and "already saved as 'nov'" in err
    assert run("learners", "list")[1].startswith("nov\tsaved ")
    code, _, err = run("experiments", "create", "cli-saved", "--variant", "a=learned", "--variant", "b=learned,learners=dec")
    assert code == 2 and "no learners are saved as 'dec'" in err and err.count("\n") == 1
    assert run("experiments", "create", "cli-saved", "--variant", "a=learned", "--variant", "b=learned,learners=nov")[0] == 0
    code, _, err = run("learners", "delete", "nov")
    assert code == 2 and "experiment cli-saved ranks with the learners saved as 'nov': stop it first" in err
    assert run("experiments", "stop", "cli-saved")[0] == 0
    assert run("learners", "delete", "nov")[0] == 0
    code, _, err = run("learners", "delete", "nov")
    assert code == 2 and "no learners are saved as 'nov'" in err
    for key in client.scan_iter(f"{Keys.of(settings).prefix}*"):
        client.delete(key)


def test_evaluate_experiments_names_its_scenarios_when_one_is_unknown(tmp_path, capsys):
    from services.cli.main import main
    from services.evaluation.experiments import SCENARIOS

    assert main(["evaluate-experiments", str(tmp_path), "--only", "aa", "--only", "nope"]) == 2
    err = capsys.readouterr().err
    assert "--only nope: no such scenario" in err and err.count("\n") == 1
    assert all(s.key in err for s in SCENARIOS), "the error lists every scenario"
    with pytest.raises(SystemExit):
        main(["evaluate-experiments", "--help"])
    shown = re.sub(r"-\s+", "-", " ".join(capsys.readouterr().out.split()))  # argparse wraps lines at hyphens
    assert all(s.key in shown for s in SCENARIOS), "and so does the help"
