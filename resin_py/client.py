"""Another name for `resin_py.testing`: `ResinClient`, the Python client for resin."""

from resin_py.testing import (
    DEFAULT_COMMAND,
    DEFAULT_TIMEOUT,
    ClientTimeout,
    Protocol,
    ProtocolMisuse,
    ResinClient,
    ResinClosed,
    RunOpts,
    RunResult,
    SpawnOpts,
)

__all__ = [
    "DEFAULT_COMMAND",
    "DEFAULT_TIMEOUT",
    "ClientTimeout",
    "Protocol",
    "ProtocolMisuse",
    "ResinClient",
    "ResinClosed",
    "RunOpts",
    "RunResult",
    "SpawnOpts",
]
