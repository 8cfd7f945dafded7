"""ResinClient as a library: protocol misuse caught early, the README's examples,
the docs and type information that ship with the package."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import pytest

from resin_py.protocol import v0, v1
from resin_py.protocol.terms import OK
from resin_py.testing import ProtocolMisuse, ResinClient

README = Path(__file__).resolve().parent.parent / "README.md"


def test_v1_call_before_hello(resin: ResinClient) -> None:
    for call in (lambda: resin.spawn(1, "true"), lambda: resin.run(1, "true"),
                 lambda: resin.recv(0.1), lambda: resin.close_child_stdin(1),
                 lambda: resin.send(v1.Stdin(1, b"x"))):
        with pytest.raises(ProtocolMisuse, match=r"call hello\(\) first: resin is in v0 mode"):
            call()
    assert resin.protocol is None  # nothing was sent: the handshake still works
    assert resin.hello() == 1
    assert resin.run(1, "true").exit == v1.Exit(1, "exit", 0)


def test_v0_call_after_hello(client: ResinClient) -> None:
    with pytest.raises(ProtocolMisuse, match=r"v0_send\(\) is a v0 call, but hello\(\)"):
        client.v0_send(v0.StartProcess("true"))
    with pytest.raises(ProtocolMisuse, match="already called"):
        client.hello()
    assert client.run(1, "true").exit == v1.Exit(1, "exit", 0)


def test_v1_call_in_a_v0_session(resin: ResinClient) -> None:
    resin.v0_send(v0.StartProcess("cat"))
    assert resin.protocol == "v0"
    with pytest.raises(ProtocolMisuse, match=r"hello\(\) after a v0 message"):
        resin.hello()
    with pytest.raises(ProtocolMisuse, match=r"spawn\(\) is a v1 call"):
        resin.spawn(1, "true")
    resin.v0_send(v0.DataIn(b"x"))
    assert resin.v0_recv() == v0.DataOut("Stdout", b"x")


def test_raw_packets_decide_like_resin(resin: ResinClient) -> None:
    resin.send_packet(bytes((v1.HELLO, 1)))
    assert resin.protocol == "v1"
    assert resin.recv() == v1.HelloReply(1)


def test_close_child_stdin_and_close_resin_stdin(client: ResinClient) -> None:
    assert not hasattr(client, "close_stdin")  # the ambiguous name is gone
    assert isinstance(client.spawn(1, "cat"), v1.Spawned)
    assert client.close_child_stdin(1) == OK  # EOF for cat alone
    assert client.collect(1).exit == v1.Exit(1, "exit", 0)
    assert client.run(2, "true").exit == v1.Exit(2, "exit", 0)  # resin goes on
    client.close_resin_stdin()  # resin itself shuts down
    assert client.wait() == 0


@pytest.mark.parametrize("index", [0, 1])
def test_readme_examples_run(index: int) -> None:
    """The README's "Driving resin from Python" examples run as written."""
    section = README.read_text().split("## Driving resin from Python", 1)[1].split("\n## ", 1)[0]
    blocks = [b for b in re.findall(r"```python\n(.*?)```", section, re.S) if "def test_" not in b]
    assert len(blocks) == 2
    exec(compile(blocks[index], f"README example {index}", "exec"), {})


def test_help_points_to_the_shipped_protocol_doc() -> None:
    # A narrow terminal: the path stays whole on its own line (a wrapped
    # help broke it at a hyphen in the checkout's path).
    out = subprocess.run([sys.executable, "-m", "resin_py", "--help"], capture_output=True,
                         text=True, check=True, env={**os.environ, "COLUMNS": "20"}).stdout
    doc = files("resin_py") / "docs" / "protocol.md"
    assert str(doc) in [line.strip() for line in out.splitlines()]
    assert doc.read_text().startswith("# The resin wire protocols")


def test_type_information_ships() -> None:
    assert (files("resin_py") / "py.typed").is_file()
