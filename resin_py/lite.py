"""Cheap stand-ins for `typing.Protocol`, `signal`, `collections.deque` and
`contextlib.suppress` on resin's start-up path (for `dataclasses` and `enum`,
see resin_py/protocol/common.py).

A resin started by the BEAM must answer its first packet within a few
milliseconds (lacca 0.2.3 reads output 50 ms after a start), and on a slow
machine importing `typing` costs ~8 ms (docs/performance.md). mypy sees the
real things; at run time a Protocol is a plain base class, and `signal` is
the C module under it (the `signal` module imports `enum`
to wrap numbers in `Signals`; resin only needs the numbers), `deque` comes
from the C module under `collections` (whose package costs ~3 ms with what
it imports), and `suppress` is contextlib's without contextlib (~9 ms with
collections, functools and types).
mypy treats any name `TYPE_CHECKING` as true, so modules import it from here.
"""

from __future__ import annotations

TYPE_CHECKING = False

if TYPE_CHECKING:
    import signal as signal
    from collections import deque as deque
    from types import TracebackType
    from typing import Protocol as Protocol
else:
    import _signal as signal  # noqa: F401 (re-exported)
    from _collections import deque  # noqa: F401 (re-exported)

    Protocol = object


class suppress:
    """`with suppress(OSError): ...` ignores those exceptions, as contextlib's."""

    __slots__ = ("_exceptions",)

    def __init__(self, *exceptions: type[BaseException]) -> None:
        self._exceptions = exceptions

    def __enter__(self) -> None:
        pass

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        return exc_type is not None and issubclass(exc_type, self._exceptions)
