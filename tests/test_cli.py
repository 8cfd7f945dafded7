"""The command line and process-level behaviour of resin."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import exists, wait_until

import resin_py
from resin_py.protocol import v1
from resin_py.protocol.terms import Atom
from resin_py.testing import ResinClient

CONSOLE_SCRIPT = Path(sys.executable).with_name("resin")


@pytest.mark.parametrize(
    "command",
    [[sys.executable, "-m", "resin_py"], [str(CONSOLE_SCRIPT)]],
    ids=["module", "console-script"],
)
def test_version(command: list[str]) -> None:
    if not Path(command[0]).exists():
        pytest.skip("console script not installed")
    out = subprocess.run([*command, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout == f"resin {resin_py.__version__}\n"


def test_help_and_bad_arguments() -> None:
    out = subprocess.run([sys.executable, "-m", "resin_py", "--help"], capture_output=True,
                         text=True, check=True)
    assert "usage: resin" in out.stdout and "protocol" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "resin_py", "--bogus"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and bad.stdout == ""


def test_stdin_eof_with_nothing_running() -> None:
    client = ResinClient()
    assert client.close(timeout=5) == 0


@pytest.mark.serial
def test_sigterm_shuts_down_like_stdin_eof(client: ResinClient) -> None:
    spawned = client.spawn(1, "sleep", ["1000"])
    assert isinstance(spawned, v1.Spawned)
    os.kill(client.pid, signal.SIGTERM)
    assert client.recv() == v1.Exit(1, "signal", 9)
    assert client.wait(timeout=1) == 0
    assert not exists(spawned.os_pid)


def test_sigterm_works_when_started_with_it_blocked() -> None:
    """A parent that starts resin with SIGTERM (and SIGCHLD) blocked does not
    disable its shutdown: resin resets its signal mask."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGCHLD})
    try:
        client = ResinClient()  # inherits the mask
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    try:
        assert client.hello() == 1
        # Exits still arrive (SIGCHLD unblocked too).
        assert client.run(1, "echo", ["hi"]).stdout == b"hi\n"
        spawned = client.spawn(2, "sleep", ["1000"])
        assert isinstance(spawned, v1.Spawned)
        os.kill(client.pid, signal.SIGTERM)
        assert client.recv() == v1.Exit(2, "signal", 9)
        assert client.wait(timeout=5) == 0
    finally:
        client.kill()


def test_sigusr1_prints_the_loop_state(tmp_path: Path) -> None:
    log = tmp_path / "stderr"
    with log.open("wb") as err:
        client = ResinClient(stderr=err)
    try:
        assert client.hello() == 1
        assert isinstance(client.spawn(1, "sleep", ["1000"]), v1.Spawned)
        os.kill(client.pid, signal.SIGUSR1)
        wait_until(lambda: "Child(id=1" in log.read_text(), what="the state dump")
        assert "outbox=" in log.read_text()
        assert client.signal(1, 0) == Atom("ok")  # and resin serves on
    finally:
        client.kill()


@pytest.mark.serial
def test_client_gone_kills_children(client: ResinClient) -> None:
    spawned = client.spawn(1, "yes")
    assert isinstance(spawned, v1.Spawned)
    assert client.proc.stdout is not None
    client.proc.stdout.close()  # resin's next write fails with EPIPE
    assert client.wait(timeout=2) == 0
    assert not exists(spawned.os_pid)


def test_stdin_from_a_regular_file(tmp_path: Path) -> None:
    """epoll cannot watch regular files; resin still reads them to the end."""
    request = tmp_path / "request"
    from resin_py.protocol import v0
    from resin_py.protocol.framing import PacketReader, encode_packet

    request.write_bytes(b"".join(
        encode_packet(p) for p in v0.encode_client_message(v0.StartProcess("/bin/echo", ("x",)))))
    with request.open("rb") as stdin:
        out = subprocess.run([sys.executable, "-m", "resin_py"], stdin=stdin,
                             capture_output=True, timeout=10)
    assert out.returncode == 0
    reader = PacketReader()
    reader.feed(out.stdout)
    msgs = []
    while (payload := reader.next_packet()) is not None:
        msgs.append(v0.decode_resin_message(payload))
    # EOF follows the request at once, so the child may be killed before it prints.
    assert msgs[-1] in (v0.ExitStatus(0), v0.ExitStatus(None))
    assert all(isinstance(m, v0.DataOut) for m in msgs[:-1])


@pytest.mark.serial
def test_startup_is_fast() -> None:
    """Generous bound (CI machines are slow); see the report for real numbers."""
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "resin_py", "--version"], capture_output=True,
                   check=True)
    assert time.monotonic() - started < 2
