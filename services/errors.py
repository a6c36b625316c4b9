"""One root exception for everything Shelfsight raises on purpose."""


class ShelfsightError(Exception):
    """Base of every error Shelfsight raises deliberately."""


class UserError(ShelfsightError):
    """A mistake the user can fix: bad config, a missing program, a wrong file.

    The CLI prints the message as one line, without a traceback, and exits 2.
    Say what is wrong and how to fix it.
    """
