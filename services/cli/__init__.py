"""The ``shelfsight`` command."""

import argparse
from typing import TypeAlias

Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""What each ``*_commands`` module's ``register`` adds its sub-commands to."""
