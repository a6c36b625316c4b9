"""A free loopback port, for the tests that start servers of their own."""

from services.stack.processes import free_port

__all__ = ["free_port"]
