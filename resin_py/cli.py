"""Command line: `resin` speaks the protocol on stdin/stdout until stdin closes."""

from __future__ import annotations

import signal
import sys

from resin_py import __version__


def main(argv: list[str] | None = None) -> int:
    # First thing: a ^C in the terminal running the BEAM must not kill resin.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    args = sys.argv[1:] if argv is None else argv
    if args:  # lacca starts resin without arguments: skip argparse's import time
        _parse(args)
    if sys.stdin is None or sys.stdout is None:
        print("resin: stdin and stdout must be open", file=sys.stderr)
        return 2
    from resin_py.server import main as serve  # imported only when serving: fast --version

    return serve()


def _parse(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="resin",
        description=(
            "Port program for lacca: reads {packet,2} frames on stdin, spawns and "
            "supervises OS processes, multiplexes their stdio onto stdout. Speaks the "
            "legacy v0 protocol (lacca 0.2.3) or v1 (handshake 00 01); see "
            "docs/protocol.md. Exits when stdin closes, killing its children."
        ),
    )
    parser.add_argument("--version", action="version", version=f"resin {__version__}")
    parser.parse_args(argv)
