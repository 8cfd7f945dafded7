"""The poller: one thread, one epoll, one handler per descriptor.

Interest in a descriptor is stated, not toggled: `set_interest(fd, events,
handler)` with the events wanted now (0: none, the descriptor is forgotten).
"""

from __future__ import annotations

import select

from resin_py.lite import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable

    Handler = Callable[[], None]

READ = select.EPOLLIN
WRITE = select.EPOLLOUT


class Poller(Protocol):
    def set_interest(self, fd: int, events: int, handler: Handler) -> None:
        """Watch `fd` for `events` (READ, WRITE or both), calling `handler` when
        ready; 0 stops watching it. Raises PermissionError for a descriptor
        that cannot be watched (a regular file)."""
    def interest(self, fd: int) -> int:
        """The events `fd` is watched for now (0: not watched)."""
    def poll(self, timeout: float | None) -> list[Handler]:
        """Wait up to `timeout` seconds (None: until something is ready); the
        handlers of the ready descriptors."""


class EpollPoller:
    """epoll with a handler per descriptor (lighter than `selectors`: no key
    objects, one dict operation per change)."""

    __slots__ = ("_ep", "_events", "_handlers")

    def __init__(self) -> None:
        self._ep = select.epoll()
        self._handlers: dict[int, Handler] = {}
        self._events: dict[int, int] = {}

    def set_interest(self, fd: int, events: int, handler: Handler) -> None:
        old = self._events.get(fd, 0)
        if events == old:
            if events:
                self._handlers[fd] = handler
            return
        if not events:
            self._ep.unregister(fd)
            del self._events[fd], self._handlers[fd]
            return
        if old:
            self._ep.modify(fd, events)
        else:
            self._ep.register(fd, events)
        self._events[fd] = events
        self._handlers[fd] = handler

    def interest(self, fd: int) -> int:
        return self._events.get(fd, 0)

    def forget(self, fd: int) -> None:
        """Stop watching a descriptor that is about to be closed, if watched."""
        if fd in self._events:
            self._ep.unregister(fd)
            del self._events[fd], self._handlers[fd]

    def poll(self, timeout: float | None) -> list[Handler]:
        # Handlers are looked up before any of them runs: a handler may close
        # a descriptor and a spawn reuse its number.
        handlers = self._handlers
        return [handlers[fd] for fd, _ in self._ep.poll(-1 if timeout is None else timeout)
                if fd in handlers]


class Loop:
    """One turn: settle (flush resin's stdout, which decides what is watched),
    then wait and run the handlers of what is ready.

    Settling comes last before the wait so that nothing a handler queued is
    left unwatched while the loop sleeps.
    """

    __slots__ = ("poller", "settle")

    def __init__(self, poller: Poller, settle: Callable[[], None]) -> None:
        self.poller = poller
        self.settle = settle

    def turn(self, timeout: float | None) -> None:
        """Wait at most `timeout` seconds (None: until something is ready)."""
        for handler in self.poller.poll(timeout):
            handler()


def wait_for(fd: int, events: int, timeout: float) -> None:
    """Block until `fd` is ready for `events` (READ or WRITE: poll(2) uses the
    same bits as epoll) or `timeout` seconds have passed. Only for shutdown,
    outside the loop."""
    poller = select.poll()
    poller.register(fd, events)
    poller.poll(max(0.0, timeout) * 1000)
