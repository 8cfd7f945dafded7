"""The relocatable bundle lacca's `mix compile` writes into priv/resin
(resin_py.launcher.write_bundle), which a `mix release` carries.

The release itself is tested in elixir/lacca/test/release_test.exs.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from resin_py.launcher import write_bundle
from resin_py.testing import ResinClient


def _echo(launcher: str) -> bytes:
    """Run `echo hi` through a resin started by `launcher` (v1, as lacca does)."""
    with ResinClient([launcher], env={"PATH": "/usr/bin:/bin"}, cwd="/") as client:
        client.hello()
        result = client.run(1, "/bin/echo", ["hi"])
        assert result.exit is not None
        return result.stdout


def test_bundle_runs_after_a_move_and_compiles_nothing(tmp_path: Path) -> None:
    launcher = write_bundle(str(tmp_path / "resin"))
    text = Path(launcher).read_text()
    assert text.startswith("#!/bin/sh\n")
    assert "-IS" in text and "$d/lib-" in text
    (lib,) = [p.name for p in (tmp_path / "resin").iterdir() if p.name.startswith("lib-")]
    assert str(tmp_path) not in text and "/.venv/" not in text
    assert (tmp_path / "resin" / lib / "resin_py" / "__pycache__").is_dir()
    assert not (tmp_path / "resin" / lib / "erlang.py").exists()  # a test oracle only

    # A copy elsewhere, with new mtimes and read-only: unchecked-hash .pyc files
    # are still used (nothing is written, no source is compiled at start).
    moved = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "resin", moved)
    for root, _dirs, files in os.walk(moved):
        for name in files:
            path = os.path.join(root, name)
            os.utime(path)
            os.chmod(path, os.stat(path).st_mode & 0o555)
    shutil.rmtree(tmp_path / "resin")
    def listing() -> list[tuple[str, int]]:
        return sorted((str(p), p.stat().st_mtime_ns) for p in moved.rglob("*"))

    before = listing()
    assert _echo(str(moved / "resind")) == b"hi\n"
    assert listing() == before


def test_bundle_again_keeps_one_lib(tmp_path: Path) -> None:
    dest = str(tmp_path / "resin")
    write_bundle(dest)
    first = sorted(os.listdir(dest))
    write_bundle(dest)  # same content: the same lib directory, the launcher rewritten
    assert sorted(os.listdir(dest)) == first
    assert [n for n in first if n.startswith("lib-")] and "resind" in first
