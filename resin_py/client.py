"""Compatibility name for `resin_py.testing` (the test and benchmark client)."""

from resin_py.testing import ClientTimeout, ResinClient, ResinClosed, RunResult

__all__ = ["ClientTimeout", "ResinClient", "ResinClosed", "RunResult"]
