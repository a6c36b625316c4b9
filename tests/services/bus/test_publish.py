"""`shelfsight publish` delivers every valid line and accounts for every invalid one."""

import base64
import json

import pytest

from schemas import LIMITS, DeadLetter
from services.bus.consume import read_all
from services.cli.main import main
from tests.schemas.test_contracts import CLICK, PRODUCT

pytestmark = pytest.mark.kafka


def _write(path, lines):
    path.write_bytes(b"\n".join(line if isinstance(line, bytes) else line.encode() for line in lines) + b"\n")
    return path


def test_mixed_file_delivers_valid_lines_and_dead_letters_the_rest(kafka, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SHELFSIGHT_TOPIC_PREFIX", kafka.topic_prefix)
    valid = [json.dumps({**CLICK, "event_id": f"ok-{i}", "user_id": f"u-{i % 3}"}) for i in range(7)]
    lines = [
        valid[0],
        "{not json",  # line 2
        valid[1],
        json.dumps({**CLICK, "kind": "like"}),  # line 4
        valid[2],
        "",  # blank lines are skipped, not counted
        valid[3],
        json.dumps({**CLICK, "user_id": "x" * 500}),  # line 8
        valid[4],
        b"\xff\xfe not utf-8",  # line 10
        valid[5],
        "[1, 2, 3]",  # line 12
        valid[6],
    ]
    path = _write(tmp_path / "clicks.jsonl", lines)

    assert main(["publish", "clicks", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "12 lines: 7 delivered" in out
    assert "5 invalid, 5 sent to" in out
    reported = [line.split(":")[1] for line in err.splitlines() if ": invalid: " in line]
    assert reported == ["2", "4", "8", "10", "12"]
    assert "kind" in err and "user_id" in err

    delivered = read_all(kafka, kafka.topic("clicks"), expected=7)
    assert sorted(json.loads(m.value)["event_id"] for m in delivered) == sorted(f"ok-{i}" for i in range(7))
    assert all(m.key == json.loads(m.value)["user_id"] for m in delivered)

    letters = read_all(kafka, kafka.topic("clicks.dlq"), expected=5)
    assert [m.headers["shelfsight-reason"].split(":")[0] for m in letters] == ["line 2", "line 4", "line 8", "line 10", "line 12"]
    bodies = [DeadLetter.model_validate_json(m.value) for m in letters]
    assert bodies[1].original == lines[3]
    assert bodies[3].original_encoding == "base64"
    assert base64.b64decode(bodies[3].original) == lines[9]


def test_oversize_line_is_reported_not_loaded(kafka, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SHELFSIGHT_TOPIC_PREFIX", kafka.topic_prefix)
    product = json.dumps({**PRODUCT, "product_id": "small"})
    huge = '{"title": "' + "x" * (LIMITS.event_bytes + 10) + '"}'
    path = _write(tmp_path / "products.jsonl", [huge, product])
    assert main(["publish", "products", str(path), "--no-dlq"]) == 0
    out, err = capsys.readouterr()
    assert "2 lines: 1 delivered" in out
    assert f"products.jsonl:1: invalid: line is longer than {LIMITS.event_bytes} bytes" in err
    (message,) = read_all(kafka, kafka.topic("products.listed"), expected=1)
    assert message.key == "small"


def test_missing_file_is_one_clear_line(kafka, tmp_path, capsys):
    assert main(["publish", "clicks", str(tmp_path / "nope.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such file" in err
