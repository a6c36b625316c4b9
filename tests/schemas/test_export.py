"""The checked-in JSON Schema files match the models."""

import json

from schemas.export import JSON_DIR, drift, export, json_schemas


def test_checked_in_schemas_match_the_models():
    assert drift() == [], "run `shelfsight schemas export` and commit schemas/json/"


def test_drift_is_detected(tmp_path):
    export(tmp_path)
    assert drift(tmp_path) == []
    path = tmp_path / "ClickEvent.json"
    schema = json.loads(path.read_text())
    schema["properties"].pop("session_id")
    path.write_text(json.dumps(schema))
    (tmp_path / "Retired.json").write_text("{}")
    assert drift(tmp_path) == ["ClickEvent.json", "Retired.json"]


def test_every_topic_contract_is_exported_with_its_topic_and_key():
    files = json_schemas()
    click = json.loads(files["ClickEvent.json"])
    assert click["x-shelfsight-topic"] == "clicks"
    assert click["x-shelfsight-key"] == "user_id"
    assert set(click["$defs"]["ClickKind"]["enum"]) == {"view", "click", "add_to_cart", "purchase", "dismiss", "impression"}
    assert {p.name for p in JSON_DIR.glob("*.json")} == set(files)
