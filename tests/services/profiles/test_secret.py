"""The state secret: held as a SecretStr, and one file however many processes start at once."""

import stat
from concurrent.futures import ProcessPoolExecutor

from services.settings import load_settings
from state.secret import state_secret


def _secret(cache_dir: str) -> bytes:
    return state_secret(load_settings(cache_dir=cache_dir))


def test_processes_starting_together_share_one_complete_secret(tmp_path):
    with ProcessPoolExecutor(6) as pool:
        secrets = list(pool.map(_secret, [str(tmp_path)] * 24))
    assert len(set(secrets)) == 1 and len(secrets[0]) == 64
    assert stat.S_IMODE((tmp_path / "state-secret").stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["state-secret"], "no drafts left behind"


def test_a_configured_secret_is_used_and_never_printed(tmp_path):
    settings = load_settings(cache_dir=tmp_path, state_secret="s3cret-value-of-the-state")
    assert state_secret(settings) == b"s3cret-value-of-the-state"
    assert "s3cret-value-of-the-state" not in repr(settings) and "s3cret-value-of-the-state" not in str(settings.model_dump())
    assert not (tmp_path / "state-secret").exists()
