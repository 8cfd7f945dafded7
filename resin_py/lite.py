"""Cheap stand-ins for `typing.Protocol`, `enum` and `signal` on resin's start-up path.

A resin started by the BEAM must answer its first packet within a few
milliseconds (lacca 0.2.3 reads output 50 ms after a start), and on a slow
machine importing `typing` costs ~8 ms and `enum` ~5 ms (docs/performance.md).
mypy sees the real classes; at run time a Protocol is a plain base class and
an enum's members are its plain values (so `.name`/`.value` are not used),
and `signal` is the C module under it (the `signal` module imports `enum`
to wrap numbers in `Signals`; resin only needs the numbers).
mypy treats any name `TYPE_CHECKING` as true, so modules import it from here.
"""

TYPE_CHECKING = False

if TYPE_CHECKING:
    import signal as signal
    from enum import Enum as Enum
    from enum import IntEnum as IntEnum
    from typing import Protocol as Protocol
else:
    import _signal as signal  # noqa: F401 (re-exported)

    Protocol = object
    Enum = object
    IntEnum = object
