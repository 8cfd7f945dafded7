"""Fixtures: real resin processes driven through resin_py.client.ResinClient."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from resin_py.client import ResinClient

RESIN_COMMAND = [sys.executable, "-m", "resin_py"]


@pytest.fixture
def resin() -> Iterator[ResinClient]:
    """A resin that has not been told its protocol yet."""
    client = ResinClient(RESIN_COMMAND)
    yield client
    client.kill()


@pytest.fixture
def client(resin: ResinClient) -> ResinClient:
    """A resin after the v1 handshake."""
    assert resin.hello() == 1
    return resin


def wait_until(cond: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll `cond` until it holds. Only for facts the OS gives no event for (a pid
    vanishing, a process state); everything else waits on protocol events."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


def proc_state(pid: int) -> str | None:
    """The state letter from /proc/<pid>/stat (R, S, T, Z, ...), None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):  # ESRCH: it went away while we read
        return None
    return stat[stat.rfind(b")") + 2 :].split()[0].decode()


def exists(pid: int) -> bool:
    """The pid is present in /proc (a zombie counts: it was not reaped)."""
    return proc_state(pid) is not None


def wait_gone(pid: int, timeout: float = 5.0) -> None:
    wait_until(lambda: not exists(pid), timeout, f"pid {pid} to vanish")


def children_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))
