"""The README stays true about settings."""

from pathlib import Path

from services.settings import Settings

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_every_setting_is_documented_in_the_readme():
    table = README.split("<!-- settings-table:start -->")[1].split("<!-- settings-table:end -->")[0]
    documented = {line.split("`")[1] for line in table.splitlines() if line.startswith("| `SHELFSIGHT_")}
    assert documented == {f"SHELFSIGHT_{name.upper()}" for name in Settings.model_fields}
