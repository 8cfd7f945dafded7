"""Start-up: what a v0 resin imports, and the launcher that starts it fast.

A drop-in for the Rust resin must answer within lacca 0.2.3's 50 ms, and on a
slow machine each heavy stdlib module costs milliseconds (docs/performance.md).
Times are measured in bench/resin_v0_latency.py; here only *which modules*
load is checked, which is deterministic.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

from resin_py.launcher import LauncherError, launcher_text, search_path
from resin_py.testing import ResinClient

# Never on the path of a v0 session, from the first packet to the exit.
V0_FORBIDDEN = {
    # heavy stdlib modules (each 1-13 ms to import here)
    "typing", "dataclasses", "enum", "inspect", "ast", "re", "ctypes", "selectors",
    "socket", "argparse", "datetime", "signal", "collections", "contextlib", "functools",
    "importlib", "termios",
    # msgpack: v0 decodes and encodes the forms resin uses itself
    "msgpack",
    # the v1 machinery
    "erlang", "resin_py.protocol.etf", "resin_py.protocol.v1", "resin_py.protocol.v1_session",
    "resin_py.protocol.terms",
}

# Runs resin's serve() in a bare interpreter set up as the launcher does, then
# prints the modules that were loaded. serve() returns once stdin closes.
_SERVE_AND_LIST = """
import sys
sys.path += {path!r}
before = set(sys.modules)
from resin_py.runtime.server import serve
serve()
sys.stderr.write("MODULES " + " ".join(sorted(set(sys.modules) - before)) + "\\n")
"""


def _packet(payload: bytes) -> bytes:
    return struct.pack(">H", len(payload)) + payload


def _v0_start(exe: str, *args: str) -> bytes:
    return _packet(b"\x02" + msgpack.packb({"StartProcess": {"exec": exe, "args": list(args)}}))


def _modules_after(session: bytes) -> set[str]:
    """Run a bare resin (python -IS) over `session`, return what it imported."""
    code = _SERVE_AND_LIST.format(path=search_path())
    proc = subprocess.run([sys.executable, "-IS", "-c", code], input=session,
                          capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr.decode()
    line = [ln for ln in proc.stderr.decode().splitlines() if ln.startswith("MODULES ")]
    assert line, proc.stderr.decode()
    return set(line[-1].split()[1:])


def test_v0_session_imports_nothing_heavy() -> None:
    # A whole v0 session: start, output, stdin, exit, then stdin closes.
    session = (_v0_start("/bin/sh", "-c", "cat; echo done >&2")
               + _packet(b"\x02" + msgpack.packb({"DataIn": {"buf": list(b"hi\n")}}))
               + _packet(b"\x02" + msgpack.packb({"KillProcess": None})))
    loaded = _modules_after(session)
    assert "resin_py.protocol.v0_session" in loaded
    assert loaded & V0_FORBIDDEN == set()


def test_v0_error_paths_import_nothing_heavy() -> None:
    # Errors are answered too without the heavy modules: a program that does
    # not exist, then a bad message.
    session = (_v0_start("/no/such/program", "x")
               + _packet(b"\x02" + msgpack.packb({"Bogus": {}})))
    assert _modules_after(session) & V0_FORBIDDEN == set()


def test_v1_loads_its_machinery_only_after_the_handshake() -> None:
    loaded = _modules_after(_packet(b"\x00\x01"))
    assert "resin_py.protocol.v1_session" in loaded


# --- the launcher ------------------------------------------------------------------


@pytest.fixture
def launcher(tmp_path: Path) -> Path:
    path = tmp_path / "resind"
    subprocess.run([sys.executable, "-m", "resin_py", "launcher", str(path)], check=True,
                   capture_output=True)
    return path


def test_launcher_runs_isolated_without_site(launcher: Path) -> None:
    first = launcher.read_text().splitlines()[0]
    assert first == f"#!{sys.executable} -IS"
    assert os.access(launcher, os.X_OK)
    out = subprocess.run([str(launcher), "--version"], capture_output=True, text=True,
                         check=True)
    assert out.stdout.startswith("resin ")


def test_launcher_serves_v0_started_through_sh(launcher: Path) -> None:
    # lacca 0.2.3 opens {:spawn, path}: the BEAM runs it through /bin/sh -c.
    with ResinClient(["/bin/sh", "-c", str(launcher)]) as resin:
        resin.send_raw(_v0_start("/bin/echo", "hi"))
        msg = msgpack.unpackb(resin.recv_packet())
        assert msg == {"DataOut": {"ty": "Stdout", "buf": list(b"hi\n")}}


def test_launcher_refuses_an_interpreter_path_a_shebang_cannot_hold() -> None:
    with pytest.raises(LauncherError, match="no spaces"):
        launcher_text("/opt/my python/bin/python3", [])
    with pytest.raises(LauncherError, match="at most"):
        launcher_text("/" + "x" * 300, [])


def test_launcher_reports_an_unwritable_path(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "resin_py", "launcher", str(tmp_path / "no" / "resind")],
        capture_output=True, text=True)
    assert proc.returncode == 1
    assert "cannot write" in proc.stderr and "No such file or directory" in proc.stderr


def test_v1_session_imports_nothing_heavy() -> None:
    # A whole v1 session (handshake, spawns with output, stdin, stderr and
    # exits, a request, an error event) loads the v1 modules and nothing else
    # of V0_FORBIDDEN: no typing, dataclasses, enum, ... and never erlang-py.
    from resin_py.protocol import v1

    code = _SERVE_AND_LIST.format(path=search_path())
    with ResinClient([sys.executable, "-IS", "-c", code], stderr=subprocess.PIPE) as resin:
        resin.hello()
        assert resin.run(1, "/bin/echo", ["hi"]).stdout == b"hi\n"
        result = resin.run(2, "/bin/sh", ["-c", "cat; echo done >&2"], stdin=b"x\n")
        assert (result.stdout, result.stderr) == (b"x\n", b"done\n")
        assert isinstance(resin.signal(3, 15), tuple)  # {error, no_process}
        resin.send_packet(b"\x10\x83\x6a")  # CONTROL with [] : an error event
        assert isinstance(resin.recv(), v1.ErrorEvent)
        assert resin.close() == 0
        assert resin.proc.stderr is not None
        stderr = resin.proc.stderr.read().decode()
    line = [ln for ln in stderr.splitlines() if ln.startswith("MODULES ")]
    assert line, stderr
    loaded = set(line[-1].split()[1:])
    v1_modules = {"resin_py.protocol.v1_session", "resin_py.protocol.v1",
                  "resin_py.protocol.etf", "resin_py.protocol.terms"}
    assert v1_modules <= loaded
    assert loaded & (V0_FORBIDDEN - v1_modules) == set()
    assert "erlang" not in loaded
