"""One root exception for everything Shelfsight raises on purpose."""

from collections.abc import Callable
from typing import NoReturn


class ShelfsightError(Exception):
    """Base of every error Shelfsight raises deliberately."""


class UserError(ShelfsightError):
    """A mistake the user can fix: bad config, a missing program, a wrong file.

    The CLI prints the message as one line, without a traceback, and exits 2.
    Say what is wrong and how to fix it.
    """


def run_script(main: Callable[[], int | None], prog: str) -> NoReturn:
    """Run a script's ``main``: a :class:`UserError` ends it with one line and exit status 2."""
    import sys

    try:
        code = main()
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    raise SystemExit(code or 0)
