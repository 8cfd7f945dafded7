"""Both spawners directly (in this process): same containment, same errors."""

from __future__ import annotations

import errno
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SPAWNERS, c_spawner_built

from resin_py import spawn
from resin_py.protocol.errors import SpawnFailed
from resin_py.spawn import ChildSetup, CloneSpawner, ForkSpawner, Spawner, make_spawner


@pytest.fixture(params=SPAWNERS)
def kind(request: pytest.FixtureRequest) -> str:
    assert isinstance(request.param, str)
    return request.param


@pytest.fixture
def spawner(kind: str) -> Spawner:
    return make_spawner(resource.getrlimit(resource.RLIMIT_NOFILE), kind)


@pytest.fixture
def devnull() -> Iterator[int]:
    fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    yield fd
    os.close(fd)


def my_children() -> list[int]:
    me = os.getpid()
    with open(f"/proc/{me}/task/{me}/children") as f:
        return [int(p) for p in f.read().split()]


def run(spawner: Spawner, script: str, devnull: int, env: dict[bytes, bytes] | None = None,
        cwd: bytes | None = None, stdin: int | None = None) -> tuple[int, bytes]:
    """Run `sh -c script` through the spawner; (wait status, stdout + stderr)."""
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        setup = ChildSetup(b"/bin/sh", [b"sh", b"-c", script.encode()], env, cwd,
                           devnull if stdin is None else stdin, w, w)
        pid = spawner.spawn(setup)
        os.close(w)
        w = -1
        out = b""
        while chunk := os.read(r, 65536):
            out += chunk
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    return status, out


def test_make_spawner_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(make_spawner((256, 256), "python"), ForkSpawner)
    monkeypatch.setenv(spawn.SPAWNER_ENV, "python")
    assert isinstance(make_spawner((256, 256)), ForkSpawner)
    monkeypatch.delenv(spawn.SPAWNER_ENV)
    expected = CloneSpawner if c_spawner_built() else ForkSpawner
    assert isinstance(make_spawner((256, 256)), expected)
    if not c_spawner_built():
        with pytest.raises(ImportError):
            make_spawner((256, 256), "c")


def test_c_extension_is_built_where_a_compiler_is() -> None:
    """The optional extension must not silently go missing on a machine that
    can build it (pip install -e . builds it in place)."""
    if shutil.which("cc") is None:
        pytest.skip("no C compiler: the pure-Python spawner is the only one")
    assert c_spawner_built(), (
        "resin_py._spawn is not built: reinstall (pip install -e . --config-settings "
        "editable_mode=compat, or python setup.py build_ext --inplace)")


def test_containment_in_the_child(kind: str, devnull: int) -> None:
    script = ("echo $$; ps -o pid=,pgid=,sid= -p $$; grep -E '^Sig(Ign|Blk)' /proc/self/status;"
              " echo $(ulimit -Sn) $(ulimit -Hn); ls /proc/self/fd")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 300:
        pytest.skip("needs an RLIMIT_NOFILE hard limit of 300 or more")
    # Ignored and blocked here (as resin ignores SIGINT and SIGPIPE): the child
    # must get the defaults back.
    old = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
    try:
        status, out = run(make_spawner((200, 300), kind), script, devnull)
    finally:
        signal.signal(signal.SIGUSR1, old)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    assert status == 0
    lines = out.decode().split("\n")
    assert lines[1].split() == [lines[0]] * 3  # own session and process group
    masks = dict(line.split(":\t") for line in lines[2:4])
    glibc_reserved = (1 << 31) | (1 << 32)  # see test_containment
    assert int(masks["SigBlk"], 16) == 0
    assert int(masks["SigIgn"], 16) & ~glibc_reserved == 0
    assert lines[4] == "200 300"  # the limits the spawner was given
    # ls's own directory fd (3) is the only one above 2.
    assert sorted(lines[5:-1]) == ["0", "1", "2", "3"]


def test_no_leak_of_inheritable_fds(spawner: Spawner, devnull: int) -> None:
    leaked = os.open(os.devnull, os.O_RDONLY)
    os.set_inheritable(leaked, True)
    try:
        status, out = run(spawner, f"test -e /proc/self/fd/{leaked} && echo leaked; true",
                          devnull)
    finally:
        os.close(leaked)
    assert (status, out) == (0, b"")


def test_environment(spawner: Spawner, devnull: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESIN_SPAWN_TEST", "inherited")
    _, out = run(spawner, 'echo "${RESIN_SPAWN_TEST-unset}"', devnull)
    assert out == b"inherited\n"  # env None: resin's own environment
    _, out = run(spawner, 'echo "${RESIN_SPAWN_TEST-unset}|$ONLY"', devnull, env={b"ONLY": b"x"})
    assert out == b"unset|x\n"


def test_envp_is_used_instead_of_env(spawner: Spawner, devnull: int) -> None:
    """ChildSetup.envp (KEY=VALUE, as resin keeps its own environment ready)
    is the child's whole environment, whatever `env` says."""
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        setup = ChildSetup(b"/bin/sh", [b"sh", b"-c", b'echo "$A|$B|${C-unset}"'],
                           {b"C": b"ignored"}, None, devnull, w, w)
        setup.envp = [b"A=1", b"B=x=y"]
        pid = spawner.spawn(setup)
        os.close(w)
        w = -1
        out = b""
        while chunk := os.read(r, 65536):
            out += chunk
        os.waitpid(pid, 0)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    assert out == b"1|x=y|unset\n"


def test_cwd(spawner: Spawner, devnull: int, tmp_path: Path) -> None:
    _, out = run(spawner, "pwd", devnull, cwd=os.fsencode(tmp_path))
    assert out == os.fsencode(tmp_path) + b"\n"


def test_errors_leave_no_child(spawner: Spawner, devnull: int, tmp_path: Path) -> None:
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x7fELF garbage")
    garbage.chmod(0o755)
    cases = [
        (ChildSetup(b"/no/such", [b"x"], None, None, devnull, devnull, devnull),
         ("exec", errno.ENOENT)),
        (ChildSetup(os.fsencode(script), [b"x"], None, None, devnull, devnull, devnull),
         ("exec", errno.EACCES)),
        (ChildSetup(os.fsencode(garbage), [b"x"], None, None, devnull, devnull, devnull),
         ("exec", errno.ENOEXEC)),
        (ChildSetup(b"/bin/true", [b"x"], None, b"/no/such/dir", devnull, devnull, devnull),
         ("cwd", errno.ENOENT)),
    ]
    for setup, reason in cases:
        with pytest.raises(SpawnFailed) as info:
            spawner.spawn(setup)
        assert (info.value.stage, info.value.errno) == reason
    assert my_children() == []  # each failed child was reaped by the spawner


def test_resolve_executable_caches_and_revalidates(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    path = os.fsencode(f"{first}:{second}")
    with pytest.raises(SpawnFailed):
        spawn.resolve_executable(b"tool", path)
    tool = second / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert spawn.resolve_executable(b"tool", path) == os.fsencode(tool)  # misses are not cached
    assert spawn.resolve_executable(b"tool", path) == os.fsencode(tool)  # a cached hit
    earlier = first / "tool"  # an executable that shadows it appears earlier on PATH
    earlier.write_text("#!/bin/sh\n")
    earlier.chmod(0o755)
    os.utime(first, ns=(0, 0))  # the mtime change, even within one timestamp tick
    assert spawn.resolve_executable(b"tool", path) == os.fsencode(earlier)
    earlier.unlink()
    tool.chmod(0o644)  # no longer executable: no longer found
    os.utime(first, ns=(1, 1))
    with pytest.raises(SpawnFailed):
        spawn.resolve_executable(b"tool", path)
    # Same rules as shutil.which for what it finds.
    assert spawn.resolve_executable(b"sh", b"/usr/bin:/bin") == os.fsencode(
        os.path.abspath(shutil.which("sh", path="/usr/bin:/bin") or ""))


@pytest.mark.parametrize("copy_fds", ["0", "1"])
def test_stdio_sources_below_3_are_not_clobbered(kind: str, copy_fds: str) -> None:
    """The child's 0/1/2 come from resin's 2/0/1: dup2 order must not matter;
    and the child gets nothing else, whether it starts on resin's descriptor
    table (C spawner, by default) or on a copy (RESIN_SPAWN_COPY_FDS=1)."""
    program = textwrap.dedent("""
        import os, sys
        from resin_py.spawn import ChildSetup, make_spawner
        extra = [os.open(os.devnull, os.O_RDONLY) for _ in range(50)]  # not inherited
        for fd in extra[::2]:
            os.set_inheritable(fd, True)
        spawner = make_spawner((1024, 1024), sys.argv[1])
        script = b"read x; echo out:$x; echo err:$x >&2; ls /proc/self/fd | tr '\\n' ' '"
        setup = ChildSetup(b"/bin/sh", [b"sh", b"-c", script], None, None, 2, 0, 1)
        for _ in range(2):  # the second time through the same slots
            pid = spawner.spawn(setup)
            _, status = os.waitpid(pid, 0)
            if status:
                os._exit(1)
        os._exit(0)
    """)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    in_r, in_w = os.pipe()
    proc = subprocess.Popen([sys.executable, "-c", program, kind],
                            stdin=out_w, stdout=err_w, stderr=in_r,
                            env={**os.environ, "RESIN_SPAWN_COPY_FDS": copy_fds})
    for fd in (out_w, err_w, in_r):
        os.close(fd)
    os.write(in_w, b"hi\nho\n")
    os.close(in_w)
    assert proc.wait(timeout=10) == 0
    with os.fdopen(out_r, "rb") as out, os.fdopen(err_r, "rb") as err:
        # ls's own directory fd is 3: nothing else leaked.
        assert (out.read(), err.read()) == (b"out:hi\n0 1 2 3 out:ho\n0 1 2 3 ",
                                            b"err:hi\nerr:ho\n")


def _cgroup2_dir() -> str | None:
    from resin_py.runtime.cgroups import Cgroups

    cgroups = Cgroups.detect()
    return cgroups.base if cgroups is not None and cgroups.usable() else None


_CLONE3_REFUSED = ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "inject=clone3:error=EPERM"]


@pytest.mark.parametrize("clone", [True, False, "refused"])
def test_child_starts_in_its_cgroup(kind: str, clone: bool | str) -> None:
    """A child with a cgroup is in it before it runs anything: created there
    (cgroup_clone: clone3 CLONE_INTO_CGROUP, C spawner), or moved there first
    (the Python spawner always). Nothing but its stdio is inherited, and
    failures report the same."""
    program = textwrap.dedent("""
        import os, sys
        from resin_py.runtime.cgroups import Cgroups
        from resin_py.spawn import ChildSetup, make_spawner
        from resin_py.protocol.errors import SpawnFailed
        cgroups = Cgroups.detect()
        if cgroups is None or not cgroups.usable():
            print("no cgroups"); sys.exit(0)
        spawner = make_spawner((1024, 1024), sys.argv[1])
        r, w = os.pipe2(os.O_CLOEXEC)
        for serial, exe in ((1, b"/bin/sh"), (2, b"/no/such/program"), (3, b"/bin/sh")):
            path, fd = cgroups.create(serial)
            script = b"echo $(grep ^0:: /proc/self/cgroup) $(ls /proc/self/fd)"
            try:
                pid = spawner.spawn(ChildSetup(exe, [b"sh", b"-c", script], None, None,
                                               0, w, w, fd, sys.argv[2] == "clone"))
            except SpawnFailed as exc:
                print(f"failed {exc.stage} {exc.errno}", flush=True)
                continue
            finally:
                os.close(fd)
            os.waitpid(pid, 0)
            print(os.read(r, 4096).decode().strip(), "|", path, flush=True)
            os.rmdir(path)
        cgroups.remove()
        if sys.argv[1] == "c":
            from resin_py import _spawn
            print("clone3", _spawn.clone3_state(), flush=True)
    """)
    # "refused": clone3 fails as under an older container runtime's seccomp
    # filter (EPERM); the C spawner falls back to joining, for good.
    wrapper = _CLONE3_REFUSED if clone == "refused" else []
    if wrapper and shutil.which("strace") is None:
        pytest.skip("needs strace to refuse clone3")
    out = subprocess.run([*wrapper, sys.executable, "-c", program, kind,
                          "join" if clone is False else "clone"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    if out.strip() == "no cgroups":
        pytest.skip("no usable cgroup2 hierarchy")
    lines = out.strip().splitlines()
    if kind == "c":
        state = int(lines.pop().split()[1])
        # Created in the cgroup where asked and allowed, else it joined;
        # where the clone3 child shares resin's memory, always created there.
        from resin_py import _spawn

        joined = 1 if _spawn.CLONE3_SHARES_MEMORY else 0
        assert state == {True: 1, False: joined, "refused": -1}[clone]
    first, failed, third = lines
    assert failed == f"failed exec {errno.ENOENT}"
    for line in (first, third):
        shown, path = line.split(" | ")
        cgroup, *fds = shown.split()
        assert cgroup.startswith("0::/") and path.endswith(cgroup[3:]), line
        assert fds == ["0", "1", "2", "3"], line
