"""pytest fixtures that start a real resin: installed with resin_py as a pytest plugin.

Any project whose environment has resin_py installed gets these fixtures
(registered through the `pytest11` entry point, nothing to configure):

- `resin_v0`: a `ResinClient` for a resin that will speak the legacy v0
  protocol (nothing sent yet; its first `v0_send` decides).
- `resin_v1`: a `ResinClient` after the v1 handshake, ready for `run`,
  `spawn`, `write`, `signal`, ...
- `resin_command`: the argv that starts resin (default: this package under
  the running Python). Override it in your conftest.py to test another resin,
  e.g. `return ["/usr/local/bin/resin"]`.

Each test gets its own resin, SIGKILLed at teardown, which kills every child
it still has.

    def test_echo(resin_v1):
        result = resin_v1.run(1, "echo", ["hi"])
        assert result.stdout == b"hi\\n"
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # imported by the fixtures: a broken resin_py does not break pytest
    from resin_py.testing import ResinClient


@pytest.fixture
def resin_command() -> list[str]:
    """The argv that starts resin for `resin_v0` and `resin_v1`; override to
    test another resin (for example the installed `["resin"]` script)."""
    from resin_py.testing import DEFAULT_COMMAND

    return list(DEFAULT_COMMAND)


@pytest.fixture
def resin_v0(resin_command: list[str]) -> Iterator[ResinClient]:
    """A fresh resin for the legacy v0 protocol (nothing sent yet), killed at teardown."""
    from resin_py.testing import ResinClient

    with ResinClient(resin_command) as client:
        yield client


@pytest.fixture
def resin_v1(resin_command: list[str]) -> Iterator[ResinClient]:
    """A fresh resin after the v1 handshake, killed at teardown."""
    from resin_py.testing import ResinClient

    with ResinClient(resin_command) as client:
        client.hello()
        yield client
