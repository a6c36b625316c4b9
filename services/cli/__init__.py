"""The ``shelfsight`` command."""
