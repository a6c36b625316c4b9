"""The key that signs learner checkpoints (``state.checkpoints``), shared by every process that
writes or reads them."""

import os
import secrets
from pathlib import Path
from typing import Protocol

from pydantic import SecretStr


class _SecretSettings(Protocol):
    state_secret: SecretStr | None
    cache_dir: Path


def state_secret(settings: _SecretSettings) -> bytes:
    """The setting (``SHELFSIGHT_STATE_SECRET``), or a random one kept beside the cache.

    `serve` and `profiles` often start together: the file is written under a temporary name
    and linked into place, which fails for the second process, so both end up reading one
    complete secret (never a half-written or a different one).
    """
    if settings.state_secret is not None and settings.state_secret.get_secret_value():
        return settings.state_secret.get_secret_value().encode()
    path = settings.cache_dir / "state-secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(draft, path)
        except FileExistsError:
            pass  # another process got there first: use its secret
        finally:
            draft.unlink()
    return path.read_text().strip().encode()
