"""The descriptor operations the runtime's parts make, behind one interface.

`OsFds` makes the real system calls; tests hand the parts a fake that can
refuse a write (EAGAIN), accept part of it, or end a pipe at any point.
"""

from __future__ import annotations

import fcntl
import os
import select
import stat
import sys

from resin_py.lite import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence

F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, which Python 3.11 does not export
# termios.FIONREAD on Linux: named here so that neither the hot path (one
# ioctl per spliced batch) nor a child's exit imports termios (a v1 session
# must not: tests/test_startup.py).
FIONREAD = 0x541B
# Output by splice(2) (runtime/outbox.py) unless RESIN_SPLICE=0: a switch for
# tests and for comparing against the read path.
SPLICE_ENABLED = os.environ.get("RESIN_SPLICE", "1") != "0"

Buffer = bytes | memoryview


class Fds(Protocol):
    """The calls, with the errors of their os counterparts (BlockingIOError
    for EAGAIN, BrokenPipeError, other OSErrors)."""

    def read(self, fd: int, n: int) -> bytes: ...
    def readinto(self, fd: int, buf: bytearray) -> int: ...
    def write(self, fd: int, data: Buffer) -> int: ...
    def writev(self, fd: int, bufs: Sequence[Buffer]) -> int: ...
    def close(self, fd: int) -> None: ...
    def set_pipe_size(self, fd: int, size: int) -> int:
        """Ask for a pipe capacity; return the capacity granted (OSError: refused)."""
    def available(self, fd: int) -> int:
        """Bytes waiting in the pipe now (FIONREAD), without reading them."""
    def is_pipe(self, fd: int) -> bool:
        """The descriptor is a pipe (a FIFO): splice(2) can move bytes from or to it."""
    def inode(self, fd: int) -> int:
        """The inode number of what the descriptor refers to (fstat)."""
    def hung_up(self, fd: int) -> bool:
        """A pipe's read end whose writers are all gone (POLLHUP), now."""
    def splice(self, src: int, dst: int, n: int) -> int:
        """Move up to `n` bytes from pipe `src` to pipe `dst` in the kernel,
        without blocking; the count moved (BlockingIOError: none fit)."""


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
    def set_pipe_size(fd: int, size: int) -> int:
        return fcntl.fcntl(fd, F_SETPIPE_SZ, size)

    @staticmethod
    def available(fd: int) -> int:
        buf = bytearray(4)
        fcntl.ioctl(fd, FIONREAD, buf)
        return int.from_bytes(buf, sys.byteorder)

    @staticmethod
    def is_pipe(fd: int) -> bool:
        try:
            return stat.S_ISFIFO(os.fstat(fd).st_mode)
        except OSError:
            return False

    @staticmethod
    def inode(fd: int) -> int:
        return os.fstat(fd).st_ino

    @staticmethod
    def hung_up(fd: int) -> bool:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return any(events & (select.POLLHUP | select.POLLERR) for _, events in poller.poll(0))

    @staticmethod
    def splice(src: int, dst: int, n: int) -> int:
        return os.splice(src, dst, n, flags=os.SPLICE_F_NONBLOCK)
