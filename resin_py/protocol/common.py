"""Types shared by both protocols and the loop (kept apart so that a v0 resin
never imports the v1/ETF machinery: startup time matters)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Literal, TypeAlias


class StreamKind(IntEnum):
    STDOUT = 1
    STDERR = 2


StdinMode: TypeAlias = Literal["pipe", "null"]
StderrMode: TypeAlias = Literal["capture", "stdout", "discard"]


@dataclass(frozen=True)
class SpawnOptions:
    cd: bytes | None = None
    env: tuple[tuple[bytes, bytes | None], ...] = ()
    clear_env: bool = False
    arg0: bytes | None = None
    stdin: StdinMode = "pipe"
    stderr: StderrMode = "capture"
    credit: int | None = None  # None: infinity
    # cgroup interface files to write in the child's cgroup before it starts,
    # as (file, content): ("memory.max", "1048576"), ("cpu.max", "50000 100000")
    cgroup: tuple[tuple[str, str], ...] = ()
