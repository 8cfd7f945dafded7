"""Stress run (not a timed test): resin and lacca under CPU load, looking for hangs.

    make stress                                  # full run (see the defaults below)
    .venv/bin/python bench/stress.py --quick     # a short run to check the harness
    .venv/bin/python bench/stress.py --rounds 100 --streams 200 --no-lacca ...

Starts CPU hogs (`yes >/dev/null`, two by default) and a *producers* process
(this script with --producers: one v1 resin streaming `yes` and
`head -c 256M /dev/urandom` as fast as they go, checking every byte), then:

1. **Rounds** (--rounds, 500): each round runs six 1 MiB transfers at once,
   three over v0 (a fresh resin each, as lacca 0.2.3 uses it; a few are
   started ahead) and three over v1 (one long-lived resin):
   `head -c N /dev/zero`, `head -c N /dev/urandom`, and `cat` fed a random
   payload that is read back (v0: then KillProcess, as v0 cannot close stdin).
   Alongside, a **64 MiB lane** runs the same transfers at 64 MiB one after the
   other, rotating over the six kinds (v0/v1 x zero/urandom/cat), until the
   rounds are over (each kind at least once; v1 in a long-lived resin of its
   own). Byte counts are checked, and SHA-256 where the bytes are known
   (zero, cat; `yes` in the producers).
2. **lacca** (--streams, 1,000): `bench/stress_lacca.exs` under `mix run` runs
   that many concurrent `cat` echo streams (Lacca.start + write_stdin +
   close_stdin, output as messages) with random payloads of 0 B .. 4 MiB,
   compared by SHA-256; the hogs and producers keep running.

A transfer with no progress for --stall seconds (10) is a **hang**: resin's
state is written to the log directory (/proc status, wchan, stack, fds with the
bytes waiting in each pipe, its children and their states, `py-spy dump` when
installed; for lacca also the BEAM's threads, its resin ports and the stalled
stream's processes), resin gets SIGUSR1 (resin's stderr goes to a file in the
log directory, and what it writes then is copied into the dump), then
SIGKILL, and the run moves on. In lacca, the other streams of a killed resin
end with :resin_down and count as collateral, not as failures.

Also counted: **mismatches** (bytes lost, duplicated or reordered: wrong count
or SHA-256), **errors** (wrong exit status, spawn errors, resin died, ...),
**zombies** (children of resin in state Z once a round has settled),
**leftovers** (children still running after their exit was reported, or
still there at the end), and **fd growth** (resin's descriptor count once a
round has settled differs from its count after its first child, in the
long-lived v1 resin and in every v0 resin).

Prints progress, then a summary table. Exit status 1 when anything above is
nonzero, 2 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import hashlib
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from resin_py.protocol import v0, v1
from resin_py.protocol.terms import OK
from resin_py.runtime.cgroups import CGROUP_SPARES
from resin_py.testing import DEFAULT_COMMAND, ClientTimeout, ResinClient, ResinClosed

ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20
SMALL = 1 * MiB
BIG = 64 * MiB
PRODUCER_BYTES = 256 * MiB
CAT_CHUNK = 64 * 1024  # data bytes per v0 DataIn message (v1: MAX_DATA per STDIN frame)
SETTLE = 2.0  # seconds a finished round may take to settle (fds closed, children reaped)
KINDS = ("zero", "urandom", "cat")
BIG_ORDER = [("v0", "zero"), ("v1", "urandom"), ("v0", "cat"),
             ("v1", "zero"), ("v0", "urandom"), ("v1", "cat")]


# --- /proc ----------------------------------------------------------------------


@dataclass(frozen=True)
class Stat:
    state: str
    ppid: int
    starttime: int
    comm: str


def proc_stat(pid: int) -> Stat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    head, _, rest = data.rpartition(b") ")
    fields = rest.split()
    comm = head.split(b" (", 1)[-1].decode(errors="replace")
    return Stat(fields[0].decode(), int(fields[1]), int(fields[19]), comm)


def children(pid: int, own: bool = True) -> list[tuple[int, Stat]]:
    """The children of `pid`; without `own`, not those with pid's own command line
    (resin's helpers, such as its sentinel, are forks of resin)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(int(name))
            if st is not None and st.ppid == pid:
                found.append((int(name), st))
    if not own:
        cmdline = read_text(f"/proc/{pid}/cmdline")
        found = [(c, st) for c, st in found if read_text(f"/proc/{c}/cmdline") != cmdline]
    return found


def fd_count(pid: int) -> int:
    """resin's descriptors, not counting up to CGROUP_SPARES of its children's
    cgroup directories: resin keeps that many empty ones open for its next
    children, and how many it has depends on how the last children ended, not
    on a leak (runtime/cgroups.py). -1 once resin is gone."""
    cgroup_dir = f"/resin-{pid}/c"
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return -1
    others = cgroup_dirs = 0
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue  # closed meanwhile
        if cgroup_dir in target:
            cgroup_dirs += 1
        else:
            others += 1
    return others + max(0, cgroup_dirs - CGROUP_SPARES)


def read_text(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError as exc:
        return f"({exc.strerror})"


def pipe_pending(pid: int, fd: str) -> str:
    """Bytes waiting in a pipe that `pid` holds (FIONREAD on a reopened end)."""
    try:
        f = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return ""
    try:
        n = struct.unpack("i", fcntl.ioctl(f, termios.FIONREAD, b"\0\0\0\0"))[0]
        return f" {n} B in the pipe"
    except OSError:
        return ""
    finally:
        os.close(f)


def describe(pid: int, brief: bool = False) -> str:
    """What /proc says about a process that helps with a hang (brief: for children)."""
    out = [f"--- pid {pid}: {read_text(f'/proc/{pid}/cmdline').replace(chr(0), ' ').strip()}"]
    status = read_text(f"/proc/{pid}/status").strip()
    if brief:
        status = "  ".join(line for line in status.splitlines()
                           if line.startswith(("State", "PPid", "SigPnd", "ShdPnd", "SigBlk")))
    out.append(status)
    out.append(f"wchan: {read_text(f'/proc/{pid}/wchan')}")
    out.append(f"syscall: {read_text(f'/proc/{pid}/syscall').strip()}")
    out.append("stack:\n" + read_text(f"/proc/{pid}/stack").rstrip())
    with contextlib.suppress(OSError):
        for tid in sorted(os.listdir(f"/proc/{pid}/task"), key=int):
            st = read_text(f"/proc/{pid}/task/{tid}/stat").rpartition(") ")[2].split()[:1]
            wchan = read_text(f"/proc/{pid}/task/{tid}/wchan")
            out.append(f"thread {tid}: state {st} wchan {wchan}")
    fds = []
    with contextlib.suppress(OSError):
        for fd in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                target = "?"
            pos = read_text(f"/proc/{pid}/fdinfo/{fd}").split("\n", 2)[:2]
            pending = pipe_pending(pid, fd) if target.startswith("pipe:") else ""
            fds.append(f"  {fd} -> {target}{pending}  ({' '.join(p.strip() for p in pos)})")
    out.append(f"fds ({len(fds)}):\n" + "\n".join(fds))
    return "\n".join(out)


def pdeathsig() -> None:
    """preexec_fn: die with this script (PR_SET_PDEATHSIG), whatever kills it."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


# --- the record ---------------------------------------------------------------


@dataclass
class Tally:
    done: int = 0
    bytes: int = 0
    hangs: int = 0
    mismatches: int = 0
    errors: int = 0
    zombies: int = 0
    leftovers: int = 0
    fd_growth: int = 0
    seconds: float = 0.0
    fds: str = ""

    def bad(self) -> int:
        return (self.hangs + self.mismatches + self.errors + self.zombies + self.leftovers
                + self.fd_growth)


class Hang(Exception):
    """No progress for STALL seconds."""


class Record:
    """Counts, problems, the hang dumps."""

    def __init__(self, log_dir: Path, stall: float, verbose: bool = True) -> None:
        self.log_dir = log_dir
        self.stall = stall
        self.parts: dict[str, Tally] = {}
        self.problems: list[str] = []
        self.hang_count = 0
        self.verbose = verbose
        self.seen: dict[int, Stat] = {}  # every child seen: pid -> its stat then
        self.lock = threading.Lock()  # transfers run in threads

    def part(self, name: str) -> Tally:
        with self.lock:
            return self.parts.setdefault(name, Tally())

    def add(self, part: str, **counts: float) -> None:
        tally = self.part(part)
        with self.lock:
            for key, n in counts.items():
                setattr(tally, key, getattr(tally, key) + n)

    def problem(self, part: str, what: str, text: str) -> None:
        self.add(part, **{what: 1})
        line = f"[{part}] {what}: {text}"
        with self.lock:
            self.problems.append(line)
            with open(self.log_dir / "problems.txt", "a") as f:
                f.write(line + "\n")
        if self.verbose:
            print("  !! " + line, flush=True)

    def guard(self, part: str, what: str, fun: Callable[[], None]) -> None:
        """Run one transfer; a bug in this harness is an error, not the end of the run."""
        start = time.monotonic()
        try:
            fun()
        except Exception as exc:
            path = self.log_dir / f"traceback-{time.monotonic_ns()}.txt"
            path.write_text(traceback.format_exc())
            self.problem(part, "errors", f"{what}: harness exception {exc!r} ({path})")
        finally:
            self.add(part, seconds=time.monotonic() - start)

    def note_child(self, pid: int) -> None:
        st = proc_stat(pid)
        if st is not None:
            self.seen[pid] = st

    def dump(self, resin_pid: int, why: str, stderr_log: Path | None,
             extra: Sequence[str] = ()) -> Path:
        """Write resin's state to the log dir, then SIGUSR1 (resin logs its loop state)."""
        with self.lock:
            self.hang_count += 1
            n = self.hang_count
        path = self.log_dir / f"hang-{os.getpid()}-{n:03d}.txt"
        text = [f"=== hang {n}: {why}", f"at {time.strftime('%F %T')}",
                describe(resin_pid)]
        kids = children(resin_pid)
        text.append(f"\n=== {len(kids)} children of resin {resin_pid}")
        text += [describe(pid, brief=True) for pid, _ in kids]
        text += extra
        spy = py_spy()
        if spy:
            for extra in ([], ["--nonblocking"]):  # the second works on a stopped process
                try:
                    res = subprocess.run([spy, "dump", "--pid", str(resin_pid), *extra],
                                         capture_output=True, text=True, timeout=30)
                except subprocess.TimeoutExpired:
                    text.append(f"\n=== py-spy dump {' '.join(extra)} timed out")
                    continue
                text.append(f"\n=== py-spy dump {' '.join(extra)} (status {res.returncode})\n"
                            f"{res.stdout}{res.stderr}")
                if res.returncode == 0:
                    break
        else:
            text.append("\n=== py-spy not installed (pip install py-spy)")
        mark = stderr_log.stat().st_size if stderr_log and stderr_log.exists() else 0
        with contextlib.suppress(ProcessLookupError):
            os.kill(resin_pid, signal.SIGUSR1)
        # Give resin time to write its loop state: until its stderr stops growing (<= 5 s).
        deadline, last, still = time.monotonic() + 5.0, mark, 0
        while time.monotonic() < deadline and still < 5:
            time.sleep(0.1)
            size = stderr_log.stat().st_size if stderr_log and stderr_log.exists() else 0
            still = still + 1 if size == last and size > mark else 0
            last = size
        if stderr_log is not None and stderr_log.exists():
            with open(stderr_log, "rb") as f:
                f.seek(mark)
                tail = f.read(1 << 20).decode(errors="replace")
            text.append(f"\n=== resin stderr after SIGUSR1 ({stderr_log}):\n{tail}")
        st = proc_stat(resin_pid)
        text.append(f"\nresin after SIGUSR1: {st.state if st else 'gone'}")
        path.write_text("\n".join(text) + "\n")
        return path


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def settle(rec: Record, part: str, resin_pid: int, fd_base: int | None, what: str) -> int:
    """After a round: resin's children gone (zombies, leftovers) and its fds back
    at `fd_base` (fd_count leaves out the spare cgroups' directories) or below.
    Waits up to SETTLE seconds; returns the fd count."""
    deadline = time.monotonic() + SETTLE
    while True:
        kids = children(resin_pid, own=False)
        fds = fd_count(resin_pid)
        if (not kids and (fd_base is None or fds <= fd_base)) or time.monotonic() > deadline:
            break
        time.sleep(0.01)  # nothing to wait on for "a /proc entry went away"
    for pid, st in kids:
        if st.state == "Z":
            rec.problem(part, "zombies", f"{what}: child {pid} ({st.comm}) is a zombie of resin")
        else:
            rec.problem(part, "leftovers",
                        f"{what}: child {pid} ({st.comm}, state {st.state}) still running")
    if fd_base is not None and fds > fd_base:
        rec.problem(part, "fd_growth", f"{what}: resin has {fds} fds, expected {fd_base}")
    return fds


# --- payloads -------------------------------------------------------------------


class Payloads:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.random = memoryview(os.urandom(BIG + SMALL))
        self.zero_sha = {n: hashlib.sha256(bytes(n)).hexdigest() for n in (SMALL, BIG)}

    def cat(self, size: int) -> memoryview:
        off = self.rng.randrange(0, len(self.random) - size + 1)
        return self.random[off:off + size]


@dataclass
class Job:
    """One transfer: what runs, what came back."""

    proto: str
    kind: str
    size: int
    payload: memoryview | None = None
    id: int = 0
    got: int = 0
    stderr: bytes = b""
    sha: Any = field(default_factory=hashlib.sha256)
    exit: Any = None
    os_pid: int | None = None
    sent: int = 0  # v1 cat: STDIN frames sent
    acked: int = 0
    closed: bool = False
    errors: list[str] = field(default_factory=list)

    @property
    def argv(self) -> list[str]:
        if self.kind == "cat":
            return ["cat"]
        return ["head", "-c", str(self.size), f"/dev/{self.kind}"]

    @property
    def label(self) -> str:
        return f"{self.proto} {' '.join(self.argv)}" + (
            f" <{self.size} B" if self.kind == "cat" else "")

    def frames(self) -> int:
        return -(-self.size // v1.MAX_DATA)

    def check(self, rec: Record, part: str, payloads: Payloads, expect_exit: object) -> None:
        """Count, SHA-256 and exit status against what was sent or is known."""
        if self.got != self.size:
            how = "lost" if self.got < self.size else "duplicated"
            rec.problem(part, "mismatches", f"{self.label}: {how}: got {self.got} of {self.size}")
        else:
            want = (hashlib.sha256(self.payload).hexdigest() if self.payload is not None
                    else payloads.zero_sha.get(self.size) if self.kind == "zero" else None)
            if want is not None and self.sha.hexdigest() != want:
                rec.problem(part, "mismatches", f"{self.label}: reordered or corrupted "
                            "(SHA-256 differs, count right)")
        if self.exit != expect_exit:
            self.errors.append(f"exit {self.exit!r}, expected {expect_exit!r}")
        if self.stderr:
            self.errors.append(f"stderr {self.stderr[:200]!r}")
        for err in self.errors:
            rec.problem(part, "errors", f"{self.label}: {err}")
        rec.add(part, done=1, bytes=self.got)


# --- v0 ------------------------------------------------------------------------


class V0:
    """One fresh resin per transfer, spoken to as lacca 0.2.3 does. A few resins
    are started ahead, so that Python's start-up overlaps the transfers."""

    def __init__(self, rec: Record, payloads: Payloads, command: Sequence[str],
                 stderr_log: Path, ahead: int = 0) -> None:
        self.rec, self.payloads, self.command = rec, payloads, command
        self.stderr_log = stderr_log
        self.fd_base = self._reference()
        self.ahead = ahead
        self.pool = [self._start() for _ in range(ahead)]
        self.lock = threading.Lock()

    def _start(self) -> ResinClient:
        with open(self.stderr_log, "ab") as err:
            return ResinClient(self.command, stderr=err)

    def _client(self) -> ResinClient:
        with self.lock:
            if not self.pool:
                return self._start()
            self.pool.append(self._start())
            return self.pool.pop(0)

    def close(self) -> None:
        with self.lock:
            pool, self.pool = self.pool, []
        for c in pool:
            c.close()

    def _reference(self) -> int:
        """resin's fds after one child came and went (what every v0 resin must be back to)."""
        with self._start() as c:
            c.v0_send(v0.StartProcess("true"))
            _, _, status, _ = c.v0_collect(timeout=60)
            assert status == v0.ExitStatus(0), status
            time.sleep(0.2)
            return fd_count(c.pid)

    def transfer(self, part: str, kind: str, size: int) -> None:
        self.rec.guard(part, f"v0 {kind} {size}", lambda: self._transfer(part, kind, size))

    def _transfer(self, part: str, kind: str, size: int) -> None:
        job = Job("v0", kind, size, self.payloads.cat(size) if kind == "cat" else None)
        c = self._client()
        try:
            self._run(c, job)
        except (Hang, ClientTimeout) as exc:
            self._hang(c, part, job, str(exc) or "no progress")
            return
        except (ResinClosed, OSError) as exc:
            self.rec.problem(part, "errors", f"{job.label}: resin died: {exc!r} "
                             f"(status {c.proc.poll()})")
            c.kill()
            return
        job.check(self.rec, part, self.payloads,
                  v0.ExitStatus(None if kind == "cat" else 0))
        settle(self.rec, part, c.pid, self.fd_base, job.label)
        try:
            status = c.close(timeout=self.rec.stall)
            if status != 0:
                self.rec.problem(part, "errors", f"{job.label}: resin exited with {status}")
        except subprocess.TimeoutExpired:
            self._hang(c, part, job, "resin did not exit after EOF on its stdin")

    def _run(self, c: ResinClient, job: Job) -> None:
        stall = self.rec.stall
        c.v0_send(v0.StartProcess(job.argv[0], tuple(job.argv[1:])))
        if job.payload is not None:
            for i, off in enumerate(range(0, job.size, CAT_CHUNK)):
                # lacca 0.2.3 sends an int array; resin also takes bin: both, alternately.
                chunk = bytes(job.payload[off:off + CAT_CHUNK])
                c.v0_send(v0.DataIn(chunk), data_as_bin=bool(i % 2))
                self._drain(c, job, 0.0)
                if i == 0:
                    job.os_pid = self._note_children(c)
            while job.got < job.size and job.exit is None:
                self._drain(c, job, stall)
            c.v0_send(v0.KillProcess())
        while job.exit is None:
            self._drain(c, job, stall)
            if job.os_pid is None:  # once, for the leftover check at the end
                job.os_pid = self._note_children(c)

    def _note_children(self, c: ResinClient) -> int:
        """Remember resin's children (v0: the one); its pid, 0 if gone already."""
        kids = children(c.pid, own=False)
        for pid, _ in kids:
            self.rec.note_child(pid)
        return kids[0][0] if kids else 0

    def _drain(self, c: ResinClient, job: Job, timeout: float) -> None:
        """Handle the next message (waiting up to `timeout`), then any already here."""
        try:
            msg = c.v0_recv(timeout)
        except ClientTimeout:
            if timeout:
                raise Hang(f"no message from resin for {timeout:.0f} s") from None
            return
        while True:
            if isinstance(msg, v0.DataOut):
                if msg.stream == "Stdout":
                    job.got += len(msg.data)
                    job.sha.update(msg.data)
                else:
                    job.stderr += msg.data
            elif isinstance(msg, v0.ExitStatus):
                job.exit = msg
            else:
                job.errors.append(f"{msg!r}")
            try:
                msg = c.v0_recv(0.0)
            except ClientTimeout:
                return

    def _hang(self, c: ResinClient, part: str, job: Job, why: str) -> None:
        kids = ", ".join(f"{pid} {st.comm} {st.state}"
                         for pid, st in children(c.pid, own=False)) or "none"
        what = (f"{job.label}: {why}; {job.got}/{job.size} bytes out, exit "
                f"{'seen' if job.exit else 'not seen'}, children: {kids}")
        path = self.rec.dump(c.pid, what, self.stderr_log)
        self.rec.problem(part, "hangs", f"{what}; dump {path}")
        c.kill()


# --- v1 ------------------------------------------------------------------------


class V1:
    """One long-lived resin; each batch runs its jobs at once (a new resin after a hang)."""

    def __init__(self, rec: Record, payloads: Payloads, command: Sequence[str],
                 stderr_log: Path) -> None:
        self.rec, self.payloads, self.command = rec, payloads, command
        self.stderr_log = stderr_log
        self.next_id = 0
        self.c: ResinClient | None = None
        self.fd_first: int | None = None
        self.fd_base = 0
        self.fd_last = 0
        self.resins = 0

    def _start(self) -> ResinClient:
        with open(self.stderr_log, "ab") as err:
            c = ResinClient(self.command, stderr=err)
        c.hello()
        res = c.run(self._id(), "true", [], timeout=60)
        assert res.exit is not None and res.exit.code == 0, res
        time.sleep(0.2)
        self.fd_base = self.fd_last = fd_count(c.pid)
        if self.fd_first is None:
            self.fd_first = self.fd_base
        self.resins += 1
        return c

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    def batch(self, part: str, specs: Sequence[tuple[str, int]]) -> None:
        self.rec.guard(part, f"v1 {specs}", lambda: self._batch(part, specs))

    def _batch(self, part: str, specs: Sequence[tuple[str, int]]) -> None:
        if self.c is None:
            self.c = self._start()
        c = self.c
        jobs = [Job("v1", kind, size, self.payloads.cat(size) if kind == "cat" else None,
                    id=self._id()) for kind, size in specs]
        try:
            self._run(c, jobs)
        except (Hang, ClientTimeout) as exc:
            self._hang(c, part, jobs, str(exc) or "no progress")
            return
        except (ResinClosed, OSError) as exc:
            self.rec.problem(part, "errors", f"v1 batch: resin died: {exc!r} "
                             f"(status {c.proc.poll()})")
            c.kill()
            self.c = None
            return
        for job in jobs:
            job.check(self.rec, part, self.payloads, ("exit", 0))
        labels = " + ".join(j.label for j in jobs)
        self.fd_last = settle(self.rec, part, c.pid, self.fd_base, labels)
        self.fd_base = self.fd_last  # report growth once, not every round after

    def _run(self, c: ResinClient, jobs: list[Job]) -> None:
        by_id = {j.id: j for j in jobs}
        for j in jobs:
            c.send_spawn(j.id, j.argv[0], j.argv[1:],
                         **({} if j.kind == "cat" else {"stdin": "null"}))
        pending = len(jobs)
        while pending:
            for j in jobs:
                if j.kind == "cat" and j.os_pid and j.exit is None:
                    self._pump(c, j)
            try:
                frame = c.recv(self.rec.stall)
            except ClientTimeout:
                raise Hang(f"no frame from resin for {self.rec.stall:.0f} s") from None
            job = by_id.get(getattr(frame, "id", -1))
            if job is None:
                jobs[0].errors.append(f"unexpected frame {frame!r}")
                continue
            if isinstance(frame, v1.Stdout):
                job.got += len(frame.data)
                job.sha.update(frame.data)
            elif isinstance(frame, v1.Stderr):
                job.stderr += frame.data
            elif isinstance(frame, v1.Spawned):
                job.os_pid = frame.os_pid
                self.rec.note_child(frame.os_pid)
            elif isinstance(frame, v1.StdinAck):
                job.acked += 1
                if frame.status != v1.AckStatus.WRITTEN:
                    job.errors.append(f"stdin ack {frame.status.name}")
            elif isinstance(frame, v1.Reply):
                if frame.result != OK:
                    job.errors.append(f"close_stdin: {frame.result!r}")
            elif isinstance(frame, v1.Exit):
                job.exit = (frame.kind, frame.value)
                pending -= 1
            else:  # SpawnError, ErrorEvent
                job.errors.append(repr(frame))
                if isinstance(frame, v1.SpawnError):
                    job.exit = "spawn_error"
                    pending -= 1

    def _pump(self, c: ResinClient, j: Job) -> None:
        """Keep STDIN_WINDOW frames in flight; close stdin once all are acked."""
        assert j.payload is not None
        while j.sent < j.frames() and j.sent - j.acked < v1.STDIN_WINDOW:
            off = j.sent * v1.MAX_DATA
            c.send(v1.Stdin(j.id, bytes(j.payload[off:off + v1.MAX_DATA])))
            j.sent += 1
        if j.acked == j.frames() and not j.closed:
            c.send(v1.CloseStdin(j.id, c.make_ref()))
            j.closed = True

    def _hang(self, c: ResinClient, part: str, jobs: list[Job], why: str) -> None:
        state = "; ".join(
            f"{j.label} {j.got}/{j.size} out, pid {j.os_pid} "
            f"{(proc_stat(j.os_pid) or Stat('gone', 0, 0, '')).state if j.os_pid else '-'}"
            f", exit {j.exit}" for j in jobs)
        what = f"v1 batch: {why}; {state}"
        path = self.rec.dump(c.pid, what, self.stderr_log)
        self.rec.problem(part, "hangs", f"{what}; dump {path}")
        c.kill()
        self.c = None

    def close(self, part: str) -> None:
        if self.c is None:
            return
        try:
            status = self.c.close(timeout=self.rec.stall)
            if status != 0:
                self.rec.problem(part, "errors", f"v1 resin exited with {status}")
        except subprocess.TimeoutExpired:
            self.rec.dump(self.c.pid, "v1 resin did not exit after EOF", self.stderr_log)
            self.rec.problem(part, "hangs", "v1 resin did not exit after EOF on its stdin")
            self.c.kill()
        self.c = None


# --- producers (a separate process: --producers) ----------------------------------


def producers(args: argparse.Namespace) -> int:
    """`yes` and `head -c 256M /dev/urandom` through one v1 resin, again and again,
    until SIGTERM; then one line of counts on stdout."""
    stop = False

    def on_term(_signo: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    log_dir = Path(args.log_dir)
    rec = Record(log_dir, args.stall, verbose=False)
    stderr_log = log_dir / "resin-producers-stderr.log"
    command = args.resin or list(DEFAULT_COMMAND)
    pattern = b"y\n" * (v1.MAX_DATA // 2 + 1)
    next_id = 0
    while not stop:
        with open(stderr_log, "ab") as err:
            c = ResinClient(command, stderr=err)
        c.hello()
        try:
            while not stop:
                next_id += 2
                yes, head = next_id, next_id + 1
                c.send_spawn(yes, "yes", [], stdin="null")
                c.send_spawn(head, "head", ["-c", str(PRODUCER_BYTES), "/dev/urandom"],
                             stdin="null")
                got = {yes: 0, head: 0}
                exits: dict[int, tuple[str, int]] = {}
                killed = False
                stopping = False
                while len(exits) < 2:
                    if stop and not stopping:  # asked to end: kill both, wait for the exits
                        for pid_ in (yes, head):
                            c.send(v1.Signal(pid_, c.make_ref(), signal.SIGKILL, True))
                        stopping = True
                    try:
                        frame = c.recv(args.stall)
                    except ClientTimeout:
                        raise Hang(f"no frame for {args.stall:.0f} s; yes {got[yes]} B, "
                                   f"head {got[head]} B, exits {exits}") from None
                    if isinstance(frame, v1.Stdout):
                        if frame.id == yes:
                            # y\n repeated, in phase with what came before
                            start = got[yes] % 2
                            if frame.data != pattern[start:start + len(frame.data)]:
                                rec.problem("producers", "mismatches",
                                            f"yes: wrong bytes at offset {got[yes]}")
                        got[frame.id] += len(frame.data)
                        if frame.id == yes and got[yes] >= PRODUCER_BYTES and not killed:
                            c.send(v1.Signal(yes, c.make_ref(), signal.SIGKILL, False))
                            killed = True
                    elif isinstance(frame, v1.Reply) and stopping:
                        pass  # ok, or {error, esrch} when it had exited
                    elif isinstance(frame, v1.Exit):
                        exits[frame.id] = (frame.kind, frame.value)
                    elif isinstance(frame, v1.Spawned):
                        rec.note_child(frame.os_pid)
                    elif not (isinstance(frame, v1.Reply) and frame.result == OK):
                        rec.problem("producers", "errors", f"unexpected {frame!r}")
                if stopping:
                    break
                if got[head] != PRODUCER_BYTES:
                    rec.problem("producers", "mismatches",
                                f"head -c 256M /dev/urandom: got {got[head]} B")
                if exits != {yes: ("signal", signal.SIGKILL), head: ("exit", 0)}:
                    rec.problem("producers", "errors", f"exits {exits}")
                rec.add("producers", done=2, bytes=got[yes] + got[head])
                settle(rec, "producers", c.pid, None, "producers")
            c.close(timeout=args.stall)
        except (Hang, ClientTimeout) as exc:
            path = rec.dump(c.pid, f"producers: {exc}", stderr_log)
            rec.problem("producers", "hangs", f"{exc}; dump {path}")
            c.kill()
        except (ResinClosed, OSError, subprocess.TimeoutExpired) as exc:
            rec.problem("producers", "errors", f"resin: {exc!r}")
            c.kill()
    leftovers(rec, "producers")
    t = rec.part("producers")
    print(" ".join(f"{k}={getattr(t, k)}" for k in
                   ("done", "bytes", "hangs", "mismatches", "errors", "zombies", "leftovers")),
          flush=True)
    return 0


# --- lacca (bench/stress_lacca.exs) -------------------------------------------------


def lacca(args: argparse.Namespace, rec: Record) -> None:
    part = "lacca"
    rec.guard(part, "stress_lacca.exs", lambda: run_lacca(args, rec, part))


def run_lacca(args: argparse.Namespace, rec: Record, part: str) -> None:
    env = dict(os.environ, MIX_ENV="prod")
    stderr_log = rec.log_dir / "lacca-stderr.log"  # the BEAM's and its resins' stderr
    with open(stderr_log, "ab") as err:
        subprocess.run(["mix", "compile"], cwd=ROOT, env=env, check=True, stdout=err, stderr=err)
        proc = subprocess.Popen(
            ["mix", "run", "bench/stress_lacca.exs", "--streams", str(args.streams),
             "--max-bytes", str(args.max_stream_bytes), "--stall", str(int(args.stall)),
             "--stream-stall", str(int(args.stream_stall)),
             "--seed", str(args.seed)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True,
            preexec_fn=pdeathsig)
    assert proc.stdout is not None
    summary: dict[str, str] = {}
    killed: set[int] = set()
    diag: list[str] = []  # the BEAM's view, printed just before a hang line
    last_line = [time.monotonic()]
    silent = max(60.0, 6 * args.stall)  # it prints progress every 5 s

    def watchdog() -> None:
        while proc.poll() is None:
            if time.monotonic() - last_line[0] > silent:
                rec.problem(part, "hangs", f"stress_lacca.exs printed nothing for {silent:.0f} s:"
                            f" killed (see {stderr_log})")
                proc.kill()
            time.sleep(1.0)

    threading.Thread(target=watchdog, daemon=True).start()
    try:
        for line in proc.stdout:
            last_line[0] = time.monotonic()
            if not line.strip():
                continue
            event, *fields = line.split()
            rest = line.split(" ", 1)[-1].strip()
            kv = dict(f.split("=", 1) for f in fields if "=" in f)
            if event == "progress":
                print(f"  lacca: {kv['done']}/{kv['streams']} streams done, "
                      f"{int(kv['bytes']) / MiB:.0f} MiB echoed", flush=True)
            elif event == "diag":
                diag.append(rest)
            elif event == "hang":
                resin = int(kv.get("resin", "0") or 0)
                extra = ["\n=== the BEAM's view (stress_lacca.exs)", *diag,
                         "\n=== the BEAM", describe(proc.pid)]
                diag = []
                if resin in killed:
                    continue  # reported (and killed) already
                if resin and proc_stat(resin) is not None:
                    path = rec.dump(resin, f"lacca {rest}", stderr_log, extra)
                    rec.problem(part, "hangs", f"{rest}; dump {path}")
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(resin, signal.SIGKILL)
                    killed.add(resin)
                else:
                    path = rec.log_dir / f"hang-lacca-{time.monotonic_ns()}.txt"
                    path.write_text("\n".join([f"=== {rest}", *extra]) + "\n")
                    rec.problem(part, "hangs", f"{rest} (resin unknown or gone: not killed); "
                                f"{path}")
            elif event in ("mismatches", "errors", "zombies", "leftovers", "fd_growth"):
                rec.problem(part, event, rest)
            elif event == "summary":
                summary = kv
            else:
                print(f"  lacca: {line.rstrip()}", flush=True)
        status = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if not summary:
        rec.problem(part, "errors", f"stress_lacca.exs ended without a summary (status {status}); "
                    f"see {stderr_log}")
        return
    rec.add(part, done=int(summary["ok"]), bytes=int(summary["bytes"]))
    rec.part(part).fds = summary.get("fds", "")
    if status != 0:
        rec.problem(part, "errors", f"stress_lacca.exs exited with {status}")
    print(f"  lacca: {' '.join(f'{k}={v}' for k, v in summary.items())}", flush=True)


# --- the run ----------------------------------------------------------------------


def start_hogs(n: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL, preexec_fn=pdeathsig)
            for _ in range(n)]


def stop(procs: Sequence[subprocess.Popen[Any]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        p.wait()


@contextlib.contextmanager
def background(args: argparse.Namespace, log_dir: Path, out: IO[str]
               ) -> Iterator[subprocess.Popen[str] | None]:
    """The hogs and the producers process, always stopped on the way out."""
    hogs = start_hogs(args.hogs)
    prod = None
    try:
        if not args.no_producers:
            prod = subprocess.Popen(
                [sys.executable, __file__, "--producers", "--log-dir", str(log_dir),
                 "--stall", str(args.stall), *(["--resin", *args.resin] if args.resin else [])],
                stdout=out, text=True, preexec_fn=lambda: (pdeathsig(), os.nice(args.nice)))
        yield prod
    finally:
        if prod is not None and prod.poll() is None:
            prod.terminate()
            try:
                prod.wait(30)
            except subprocess.TimeoutExpired:
                prod.kill()
                prod.wait()
        stop(hogs)


def big_lane(rec: Record, v0s: V0, v1s: V1, stop: threading.Event) -> None:
    """64 MiB transfers one after the other, rotating over the six kinds, until the
    rounds are over (and each kind ran at least once)."""
    i = 0
    while not stop.is_set() or i < len(BIG_ORDER):
        proto, kind = BIG_ORDER[i % len(BIG_ORDER)]
        if proto == "v0":
            v0s.transfer("64 MiB", kind, BIG)
        else:
            v1s.batch("64 MiB", [(kind, BIG)])
        i += 1


def rounds(args: argparse.Namespace, rec: Record, payloads: Payloads, command: list[str]
           ) -> int:
    """Each round: the three v0 transfers and a v1 batch of three, all at once; the
    64 MiB lane runs alongside."""
    stderr_log = rec.log_dir / "resin-stderr.log"
    v0s = V0(rec, payloads, command, stderr_log, ahead=len(KINDS) + 1)
    v1s = V1(rec, payloads, command, stderr_log)
    v1_big = V1(rec, payloads, command, stderr_log)
    stop = threading.Event()
    lane = threading.Thread(target=big_lane, args=(rec, v0s, v1_big, stop), daemon=True)
    if not args.no_big:
        lane.start()
    rec.part("v0 1 MiB").fds = f"{v0s.fd_base} each"
    done = 0
    start = time.monotonic()
    try:
        with ThreadPoolExecutor(len(KINDS) + 1) as pool:
            for r in range(1, args.rounds + 1):
                futures = [pool.submit(v0s.transfer, "v0 1 MiB", kind, SMALL) for kind in KINDS]
                futures.append(pool.submit(v1s.batch, "v1 1 MiB", [(k, SMALL) for k in KINDS]))
                for f in futures:
                    f.result()
                done = r
                if r % args.report_every == 0 or r == args.rounds:
                    print(f"round {r}/{args.rounds}  {time.monotonic() - start:6.0f} s  "
                          f"64 MiB {rec.part('64 MiB').done}  hangs "
                          f"{sum(t.hangs for t in rec.parts.values())}  problems "
                          f"{len(rec.problems)}", flush=True)
    finally:
        stop.set()
        if lane.is_alive():
            print("waiting for the 64 MiB lane", flush=True)
            lane.join()
        v0s.close()
        for v1r, part in ((v1s, "v1 1 MiB"), (v1_big, "64 MiB")):
            if v1r.resins:
                rec.part(part).fds = f"v1 {v1r.fd_first}->{v1r.fd_last}" + (
                    f" ({v1r.resins} resins)" if v1r.resins > 1 else "")
            v1r.close(part)
    return done


def leftovers(rec: Record, part: str) -> None:
    """Every child seen during the run is gone (same pid and start time = same process)."""
    deadline = time.monotonic() + SETTLE
    while True:
        left = [(pid, st) for pid, seen in rec.seen.items()
                if (st := proc_stat(pid)) is not None and st.starttime == seen.starttime]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for pid, st in left:
        rec.problem(part, "leftovers", f"{pid} ({st.comm}, state {st.state}) still exists")


def summary(rec: Record, rounds_done: int, args: argparse.Namespace, seconds: float) -> int:
    keys = ("done", "bytes", "seconds", "hangs", "mismatches", "errors", "zombies", "leftovers",
            "fd_growth")
    heads = ("done", "MiB", "s", "hangs", "mismatch", "errors", "zombies", "leftover", "fd+")
    print(f"\n== stress summary: {rounds_done}/{args.rounds} rounds, {args.hogs} hogs, "
          f"{seconds:.0f} s; logs in {rec.log_dir}")
    print(f"{'part':<10}" + "".join(f"{h:>9}" for h in heads) + "  fds before->after")
    total = Tally()
    for name, t in [*rec.parts.items(), ("total", total)]:
        if name != "total":
            for k in keys:
                setattr(total, k, getattr(total, k) + getattr(t, k))
        row = [round(getattr(t, k)) if k != "bytes" else t.bytes // MiB for k in keys]
        print(f"{name:<10}" + "".join(f"{v:>9}" for v in row) + f"  {t.fds}")
    for log in sorted(rec.log_dir.glob("*stderr.log")):
        if log.stat().st_size:
            print(f"{log.name}: {log.stat().st_size} bytes")
    failed = total.bad() > 0 or rounds_done < args.rounds
    print(f"rounds done: {rounds_done}/{args.rounds}; hangs: {total.hangs}; problems: "
          f"{len(rec.problems)}; verdict: {'FAIL' if failed else 'ok'}", flush=True)
    return 1 if failed else 0


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rounds", type=int, default=500)
    ap.add_argument("--no-big", action="store_true", help="no 64 MiB lane")
    ap.add_argument("--streams", type=int, default=1000, help="concurrent lacca cat streams")
    ap.add_argument("--max-stream-bytes", type=int, default=4 * MiB)
    ap.add_argument("--quick", action="store_true",
                    help="--rounds 20 --streams 100 (checks the harness)")
    ap.add_argument("--hogs", type=int, default=2)
    ap.add_argument("--stall", type=float, default=10.0, help="seconds without progress = hang")
    ap.add_argument("--stream-stall", type=float, default=60.0,
                    help="lacca: seconds one stream may go without progress while others move "
                         "(a starved stream; the longest idle time is reported either way)")
    ap.add_argument("--no-lacca", action="store_true")
    ap.add_argument("--no-rounds", action="store_true")
    ap.add_argument("--no-producers", action="store_true")
    ap.add_argument("--nice", type=int, default=5,
                    help="niceness of the producers process and its resin (default 5)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--log-dir", default=None)
    ap.add_argument("--report-every", type=int, default=10)
    ap.add_argument("--resin", nargs="+", default=None,
                    help="resin command (default: $LACCA_RESIN, else python -m resin_py)")
    ap.add_argument("--producers", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.streams = 20, 100
    if args.no_rounds:
        args.rounds = 0
    if args.seed is None:
        args.seed = random.randrange(1 << 31)
    if args.resin is None and os.environ.get("LACCA_RESIN"):
        args.resin = [os.environ["LACCA_RESIN"]]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if args.producers:
        return producers(args)
    log_dir = Path(args.log_dir or f"/tmp/shellac-stress-{time.strftime('%Y%m%d-%H%M%S')}")
    log_dir.mkdir(parents=True, exist_ok=True)
    rec = Record(log_dir, args.stall)
    command = args.resin or list(DEFAULT_COMMAND)

    def on_term(_signo: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    print(f"stress: {args.rounds} rounds, {args.streams} lacca "
          f"streams, {args.hogs} hogs, stall {args.stall:.0f} s, seed {args.seed}, "
          f"resin {' '.join(command)}, logs {log_dir}", flush=True)
    payloads = Payloads(random.Random(args.seed))
    started = time.monotonic()
    rounds_done = 0
    interrupted = False
    prod_out = log_dir / "producers.out"
    try:
        with open(prod_out, "w") as out, background(args, log_dir, out):
            if not args.no_rounds:
                rounds_done = rounds(args, rec, payloads, command)
            if not args.no_lacca:
                print(f"lacca: {args.streams} concurrent cat streams", flush=True)
                lacca(args, rec)
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted", flush=True)
    counts = dict(kv.split("=", 1) for kv in prod_out.read_text().split() if "=" in kv)
    if counts:
        t = rec.part("producers")
        for k, v in counts.items():
            setattr(t, k, int(v))
    elif not args.no_producers and not interrupted:
        rec.problem("producers", "errors", "the producers process reported nothing")
    for line in (log_dir / "problems.txt").read_text().splitlines() if (
            log_dir / "problems.txt").exists() else []:
        if line.startswith("[producers]") and line not in rec.problems:
            rec.problems.append(line)
            print("  !! " + line)
    leftovers(rec, "end")
    status = summary(rec, rounds_done, args, time.monotonic() - started)
    return 2 if interrupted else status


if __name__ == "__main__":
    sys.exit(main())
