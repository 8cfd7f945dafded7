"""Replay of lacca 0.2.3's sessions against resin started the way 0.2.3 starts it.

lacca 0.2.3 runs `Port.open({:spawn, Application.app_dir(:lacca,
"priv/resin/resind")}, [:binary, {:packet, 2}])`: a `{:spawn, ...}` port goes
through `/bin/sh -c`. The README ("Replacing the Rust resin") tells users to
put resin's launcher there; these tests do exactly that and play 0.2.3's bytes,
taken from docs/protocol-vectors.txt (the vectors both suites load).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_vectors import BY_NAME

from resin_py.testing import ResinClient


def vector(direction: str, name: str) -> list[bytes]:
    """The packet payloads of a v0 vector."""
    return BY_NAME[("v0", direction, name)].payloads


def send(resin: ResinClient, payloads: list[bytes]) -> None:
    for payload in payloads:
        resin.send_packet(payload)


@pytest.fixture
def resind(tmp_path: Path) -> Path:
    """`priv/resin/resind` of a lacca 0.2.3 dependency, as the README says to make it."""
    priv = tmp_path / "deps" / "lacca" / "priv" / "resin"
    priv.mkdir(parents=True)
    path = priv / "resind"
    subprocess.run([sys.executable, "-m", "resin_py", "launcher", str(path)], check=True,
                   capture_output=True)
    return path


@pytest.fixture
def port(resind: Path) -> Iterator[ResinClient]:
    # What {:spawn, path} does: the command line goes through the shell.
    client = ResinClient(["/bin/sh", "-c", str(resind)])
    yield client
    client.kill()


def test_echo_session_replays_byte_for_byte(port: ResinClient) -> None:
    send(port, vector("c2r", "session_echo_start"))
    assert port.recv_packet() == vector("r2c", "session_echo_out")[0]
    assert port.recv_packet() == vector("r2c", "session_echo_exit")[0]


def test_data_in_then_kill(port: ResinClient) -> None:
    # lacca 0.2.3's Lacca.Process: start cat, write to it, read back, kill.
    send(port, vector("c2r", "session_cat_start"))
    send(port, vector("c2r", "data_in_ints"))  # bytes 104 105 10 128 255
    assert port.recv_packet() == vector("r2c", "data_out_cat_echo")[0]
    send(port, vector("c2r", "kill_process"))
    assert port.recv_packet() == vector("r2c", "exit_status_signal")[0]


def test_stdin_close_ends_the_session(port: ResinClient) -> None:
    # The port closing (the BEAM process exiting) kills the child and ends resin.
    send(port, vector("c2r", "session_cat_start"))
    port.close_resin_stdin()
    assert port.wait() == 0

