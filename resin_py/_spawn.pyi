from collections.abc import Sequence

STAGE_OK: int
STAGE_SETUP: int
STAGE_CWD: int
STAGE_EXEC: int
STAGE_USER: int
STAGE_RLIMIT: int
STAGE_PTY: int
CLONE3_SHARES_MEMORY: int

def prctl(option: int, value: int, /) -> None: ...
def clone3_state() -> int: ...
def spawn(
    path: bytes,
    argv: Sequence[bytes],
    envp: Sequence[bytes] | None,
    cwd: bytes | None,
    stdin: int,
    stdout: int,
    stderr: int,
    parent: int,
    nofile_soft: int,
    nofile_hard: int,
    cgroup_dir: int = -1,
    cgroup_clone: bool = False,
    ctty: bool = False,
    uid: int = -1,
    gid: int = -1,
    groups: Sequence[int] | None = None,
    rlimits: Sequence[tuple[int, int, int]] = (),
    /,
) -> tuple[int, int, int]: ...
