"""Command line: `resin` speaks the protocol on stdin/stdout until stdin closes;
`resin launcher PATH` writes a fast launcher (resin_py/launcher.py)."""

from __future__ import annotations

import sys

from resin_py import __version__
from resin_py.lite import TYPE_CHECKING, signal

if TYPE_CHECKING:
    import argparse


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args:  # lacca starts resin without arguments: skip argparse's import time
        command = _parse(args)
        if command.command == "launcher":
            return _launcher(command.path)
    # A ^C in the terminal running the BEAM must not kill resin.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.stdin is None or sys.stdout is None:
        print("resin: stdin and stdout must be open", file=sys.stderr)
        return 2
    from resin_py.server import main as serve  # imported only when serving: fast --version

    return serve()


def _launcher(path: str) -> int:
    from resin_py.launcher import LauncherError, write_launcher

    try:
        write_launcher(path)
    except LauncherError as exc:
        print(f"resin launcher: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path}: start resin with it (lacca: config :lacca, :resin or LACCA_RESIN)")
    return 0


def _parse(argv: list[str]) -> argparse.Namespace:
    import argparse
    from importlib.resources import files

    protocol_doc = files("resin_py") / "docs" / "protocol.md"  # shipped with the package
    # Raw text: a wrapped help would break the path at a hyphen, which no one
    # can paste back.
    parser = argparse.ArgumentParser(
        prog="resin",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Port program for lacca: reads {packet,2} frames on stdin, spawns and\n"
            "supervises OS processes, multiplexes their stdio onto stdout. Speaks the\n"
            "legacy v0 protocol (lacca 0.2.3) or v1 (handshake 00 01). Exits when stdin\n"
            "closes, killing its children."
        ),
        epilog=(
            f"Both protocols are documented in\n  {protocol_doc}\n"
            "To drive resin from Python (and in pytest: fixtures resin_v0, resin_v1),\n"
            "see resin_py.testing.ResinClient."
        ),
    )
    parser.add_argument("--version", action="version", version=f"resin {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    launcher = commands.add_parser(
        "launcher", help="write a launcher that starts resin fast (python -IS)",
        description=(
            "Write an executable script at PATH that starts resin in Python's isolated "
            "mode without the site module, and byte-compile resin_py: faster to start "
            "than the resin console script. Use it as the resin of lacca, or "
            "as lacca 0.2.3's priv/resin/resind."
        ),
    )
    launcher.add_argument("path", metavar="PATH", help="where to write the launcher")
    return parser.parse_args(argv)
