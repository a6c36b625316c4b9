"""The one error a caller sees when bytes do not make a valid event."""


class ContractError(ValueError):
    """Raised when a message cannot be decoded into its contract.

    ``reason`` is a single line fit for a dead-letter header or a CLI report.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
