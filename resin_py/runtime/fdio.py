"""The descriptor operations the runtime's parts make, behind one interface.

`OsFds` makes the real system calls; tests hand the parts a fake that can
refuse a write (EAGAIN), accept part of it, or end a pipe at any point.
"""

from __future__ import annotations

import fcntl
import os
import sys

from resin_py.lite import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence

F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, which Python 3.11 does not export

Buffer = bytes | memoryview


class Fds(Protocol):
    """The calls, with the errors of their os counterparts (BlockingIOError
    for EAGAIN, BrokenPipeError, other OSErrors)."""

    def read(self, fd: int, n: int) -> bytes: ...
    def readinto(self, fd: int, buf: bytearray) -> int: ...
    def write(self, fd: int, data: Buffer) -> int: ...
    def writev(self, fd: int, bufs: Sequence[Buffer]) -> int: ...
    def close(self, fd: int) -> None: ...
    def pipe_empty(self, fd: int) -> bool:
        """No bytes wait in the pipe (without reading any)."""
    def set_pipe_size(self, fd: int, size: int) -> int:
        """Ask for a pipe capacity; return the capacity granted (OSError: refused)."""


class OsFds:
    """The real calls."""

    read = staticmethod(os.read)
    write = staticmethod(os.write)
    writev = staticmethod(os.writev)
    close = staticmethod(os.close)

    @staticmethod
    def readinto(fd: int, buf: bytearray) -> int:
        return os.readv(fd, [buf])

    @staticmethod
    def pipe_empty(fd: int) -> bool:
        import termios  # when a child exits: not on the start-up path

        buf = bytearray(4)
        try:
            fcntl.ioctl(fd, termios.FIONREAD, buf)
        except OSError:
            return True
        return int.from_bytes(buf, sys.byteorder) == 0

    @staticmethod
    def set_pipe_size(fd: int, size: int) -> int:
        return fcntl.fcntl(fd, F_SETPIPE_SZ, size)
