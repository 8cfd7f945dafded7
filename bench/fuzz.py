"""Fuzz real resins with hostile frames of both protocols while canaries check
that resin keeps serving correctly (issue 8, "resin never stalls").

    make fuzz                                   # 1,000,000 frames, seed 1
    .venv/bin/python bench/fuzz.py --seed 7 --frames 200000
    .venv/bin/python bench/fuzz.py --hostile-only [--resin-dir DIR]

v1: one long-lived resin. Ids 1..4 run `cat` canaries that the fuzzer never
targets: round after round, each gets a seeded random payload in STDIN frames
(within STDIN_WINDOW) and must echo it back; the SHA-256 of everything sent
and everything echoed must match. Between canary chunks go the fuzz frames:
truncated / overlong / mutated ETF, huge bignums, deep nesting, too many
terms, compressed terms, unknown atoms, tags and frame types, spawns with
wrong and duplicate ids (of `true`, `cat`, `sh -c 'exit 3'` only), data and
credit for unknown, exited and closed ids, credit overflow and negative
credit, zero-length packets, a HELLO mid-stream. Every CONTROL payload is
decoded here first: one that would reach a canary id or spawn anything else
is not sent.

v0: one process per resin, so the canary is the `cat` of each resin: a run of
fresh resins, each fed fuzz messages (chunked, mutated, hostile msgpack,
zero-length packets, a HELLO) while the same decoder resin uses tells which
of them decode to a DataIn (whose bytes then belong to the expected echo) or a
KillProcess (not sent). Probes then check that the echo matches the
SHA-256 of all data sent. Each resin ends with KillProcess, data / kill /
start after the exit (each must get an ErrorReport), and a clean exit on EOF.

A death (resin exits or closes its stdout) or a hang (no answer to a probe
within 10 s) saves the last frames sent as a reproducer and restarts resin.
Resin's CPU per frame comes from /proc/<pid>/schedstat (ns on CPU): a frame is
measured alone, between two sync requests, for the first frames of each kind
and then one in SAMPLE_EVERY; the sync's own cost is subtracted.

--hostile-only: the single-message costs of issue 8 against a real resin:
peak RSS (VmHWM) for a 64 MiB v0 message of empty arrays and for a legit
64 MiB int-array DataIn, and the CPU of the 60 KB bignum CONTROL frame.
`--resin-dir` runs resin from another checkout (e.g. a worktree of an older
commit) to compare.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import json
import os
import random
import select
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from resin_py.protocol import v0, v1
from resin_py.protocol.errors import ProtocolError
from resin_py.protocol.etf import (
    MAX_BIG_BYTES,
    MAX_CONTAINERS,
    MAX_DEPTH,
    MAX_TERMS,
    encode_term,
)
from resin_py.protocol.framing import PacketReader
from resin_py.protocol.terms import FALSE, NIL, TRUE, Atom, Term
from resin_py.testing import ResinClient

HANG_TIMEOUT = 10.0
CANARY_IDS = (1, 2, 3, 4)
SYNC_ID = 5  # never spawned: `signal` to it is answered {error, no_process}
FUZZ_IDS = range(10, 60)  # spawned, signalled, fed by the fuzzer
MAX_LIVE = 30  # fuzz processes alive at once (more: kill some)
SAMPLE_EVERY = 1000
MEASURE_FIRST = 5
V0_SESSION_FRAMES = 5000
OUT_LIMIT = 256 * 1024  # bytes queued for resin's stdin before the fuzzer waits
U32 = struct.Struct(">I")
SAFE_SPAWNS = {
    (b"/bin/true", ()), (b"true", ()), (b"cat", ()), (b"/bin/cat", ()),
    (b"/bin/sh", (b"-c", b"exit 3")),
}


# --- resin under test -------------------------------------------------------------


def schedstat_ns(pid: int) -> int:
    """Nanoseconds resin's (only) thread has spent on a CPU."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def status_kib(pid: int, name: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    return -1


class Died(Exception):
    """resin exited or closed its stdout."""


class Hung(Exception):
    """resin did not answer within HANG_TIMEOUT."""


class Resin:
    """One resin: bytes queued for its stdin, packets read from its stdout.

    Reads and writes go through `pump`, so resin's output is always read
    while the fuzzer writes (resin would rightly stop reading otherwise)."""

    def __init__(self, opts: Options, stderr: Any) -> None:
        cwd = opts.resin_dir
        self.client = ResinClient(None, cwd=cwd, stderr=stderr)
        self.pid = self.client.pid
        assert self.client.proc.stdin is not None and self.client.proc.stdout is not None
        self.wfd = self.client.proc.stdin.fileno()
        self.rfd = self.client.proc.stdout.fileno()
        self.out = bytearray()
        self.reader = PacketReader()
        self.history: collections.deque[bytes] = collections.deque(maxlen=200)
        self.on_packet: Callable[[bytes], None] = lambda _p: None
        self.dead = False
        self.bad_packets = 0  # from resin: a bug if not 0

    def send(self, payload: bytes) -> None:
        """Queue one packet (an empty payload is a zero-length packet)."""
        self.history.append(payload)
        self.out += struct.pack(">H", len(payload)) + payload

    def pump(self, timeout: float = 0.0) -> None:
        if self.dead:
            raise Died("resin is gone")
        wfds = [self.wfd] if self.out else []
        readable, writable, _ = select.select([self.rfd], wfds, [], timeout)
        if writable:
            try:
                with memoryview(self.out) as mv:
                    n = os.write(self.wfd, mv[:1 << 20])
                del self.out[:n]
            except BlockingIOError:
                pass
            except BrokenPipeError:
                self.dead = True
                raise Died("resin closed its stdin") from None
        if readable:
            try:
                data = os.read(self.rfd, 1 << 20)
            except BlockingIOError:
                return
            if not data:
                self.dead = True
                raise Died("resin closed its stdout")
            self.reader.feed(data)
            while True:
                try:
                    packet = self.reader.next_packet()
                except ProtocolError:
                    self.bad_packets += 1
                    continue
                if packet is None:
                    break
                self.on_packet(packet)

    def wait_for(self, cond: Callable[[], bool], what: str,
                 progress: Callable[[], object] | None = None) -> None:
        """Pump until cond(); Hung after HANG_TIMEOUT without progress."""
        last = progress() if progress else None
        deadline = time.monotonic() + HANG_TIMEOUT
        while not cond():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Hung(what)
            self.pump(min(remaining, 0.05 if not self.out else 0.0))
            if progress:
                now = progress()
                if now != last:
                    last, deadline = now, time.monotonic() + HANG_TIMEOUT

    def drain_out(self) -> None:
        self.wait_for(lambda: not self.out, "resin reading its stdin")

    def cpu_ns(self) -> int:
        return schedstat_ns(self.pid)

    def close(self) -> int | None:
        """Close resin's stdin; its exit status (None: it had to be killed)."""
        with contextlib.suppress(Died, Hung):
            self.drain_out()
        self.client.close_resin_stdin()
        try:
            deadline = time.monotonic() + HANG_TIMEOUT
            while self.client.proc.poll() is None and time.monotonic() < deadline:
                try:
                    self.pump(0.05)
                except Died:
                    break
            return self.client.proc.wait(0.5 if self.client.proc.poll() is None else None)
        except subprocess.TimeoutExpired:
            return None
        finally:
            self.client.kill()


# --- options and results -------------------------------------------------------------


@dataclass
class Options:
    seed: int = 1
    frames: int = 1_000_000
    v0_share: float = 0.2
    out_dir: str = "/tmp/resin-fuzz"
    resin_dir: str | None = None
    measure: bool = True
    verbose: bool = True


@dataclass
class Stats:
    frames: int = 0
    v1_frames: int = 0
    v0_frames: int = 0
    deaths: int = 0
    hangs: int = 0
    mismatches: int = 0
    canary_rounds: int = 0
    canary_exits: int = 0
    v0_resins: int = 0
    v0_bad_lifecycle: int = 0  # an expected ErrorReport / ExitStatus / exit 0 missing
    internal_errors: int = 0
    bad_packets: int = 0
    events: collections.Counter[str] = field(default_factory=collections.Counter)
    kinds: collections.Counter[str] = field(default_factory=collections.Counter)
    worst_cpu_ms: dict[str, float] = field(default_factory=dict)
    measured: collections.Counter[str] = field(default_factory=collections.Counter)
    rss_kib: dict[str, int] = field(default_factory=dict)
    v0_hwm_kib_max: int = 0
    reproducers: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def cpu(self, kind: str, ms: float) -> None:
        self.measured[kind] += 1
        self.worst_cpu_ms[kind] = max(self.worst_cpu_ms.get(kind, 0.0), ms)


def save_reproducer(opts: Options, stats: Stats, resin: Resin, what: str, proto: str) -> None:
    os.makedirs(opts.out_dir, exist_ok=True)
    path = Path(opts.out_dir) / f"repro-{proto}-{len(stats.reproducers)}.txt"
    with open(path, "w") as f:
        f.write(f"# {what}; seed {opts.seed}; {proto}; frame {stats.frames}\n")
        f.write("# the last packets sent, oldest first, hex payloads (empty: zero-length)\n")
        for payload in resin.history:
            f.write(payload.hex() + "\n")
    stats.reproducers.append(str(path))


# --- v1 frame generators ----------------------------------------------------------------


class V1Gen:
    """Fuzz frames of every kind, seeded."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.live: set[int] = set()  # ids resin reported spawned and not exited
        self.queue: collections.deque[tuple[str, bytes]] = collections.deque()
        self.ref = 0
        self.kinds: list[tuple[str, Callable[[], bytes], int]] = [
            ("spawn", self.spawn, 6),
            ("spawn_dup_id", self.spawn_dup, 2),
            ("signal", self.signal, 4),
            ("close_stdin", self.close_stdin, 3),
            ("stdin", self.stdin, 10),
            ("stdin_unknown_id", self.stdin_unknown, 4),
            ("stdin_after_close", self.stdin_after_close, 2),
            ("credit", self.credit, 6),
            ("credit_overflow", self.credit_overflow, 2),
            ("credit_bad", self.credit_bad, 2),
            ("bad_options", self.bad_options, 3),
            ("etf_mutated", self.mutated, 20),
            ("etf_truncated", self.truncated, 6),
            ("etf_overlong", self.overlong, 4),
            ("etf_bignum", self.bignum, 4),
            ("etf_deep", self.deep, 3),
            ("etf_many_terms", self.many_terms, 2),
            ("etf_compressed", self.compressed, 2),
            ("etf_unknown", self.unknown, 6),
            ("etf_bad_tag", self.bad_tag, 3),
            ("etf_random", self.etf_random, 3),
            ("etf_worst", lambda: b"", 2),  # see next()
            ("frame_random", self.frame_random, 4),
            ("frame_big", self.frame_big, 1),
            ("zero_length", lambda: b"", 2),
            ("hello_midstream", lambda: bytes((v1.HELLO, self.rng.choice((1, 2, 0, 255)))), 1),
        ]
        self.names = [k[0] for k in self.kinds]
        self.funcs = {k[0]: k[1] for k in self.kinds}
        self.weights = [k[2] for k in self.kinds]
        self.worst_frames = sorted(worst_v1_frames().items())

    def next(self) -> tuple[str, bytes]:
        if self.queue:
            return self.queue.popleft()
        while True:
            kind = self.rng.choices(self.names, self.weights)[0]
            if kind == "etf_worst":  # one kind per frame
                name, term = self.rng.choice(self.worst_frames)
                if name == "distinct_atoms":
                    term = distinct_atoms(self.rng.randrange(26**3 - MAX_TERMS))
                kind, payload = f"worst_{name}", b"\x10" + term
            else:
                payload = self.funcs[kind]()
            if safe_v1(payload):
                return kind, payload

    # ids and terms

    def fuzz_id(self) -> int:
        r = self.rng.random()
        if r < 0.85:
            return self.rng.choice(FUZZ_IDS)
        return self.rng.choice((0, 6, 7, 8, 9, 2**32 - 1, self.rng.randrange(60, 2**32)))

    def next_ref(self) -> Term:
        self.ref += 1
        return self.rng.choice((self.ref, (Atom("r"), self.ref), [self.ref, b"x"]))

    def control(self, term: Term) -> bytes:
        return bytes((v1.CONTROL,)) + encode_term(term)

    def spawn_term(self, id: int) -> Term:
        exe, args = self.rng.choice(sorted(SAFE_SPAWNS))
        opts: list[Term] = []
        for _ in range(self.rng.randrange(4)):
            opts.append(self.rng.choice((
                (Atom("credit"), self.rng.choice((0, 1, 100, 65536, 2**32 + 5, Atom("infinity")))),
                (Atom("stdin"), Atom(self.rng.choice(("pipe", "null")))),
                (Atom("stderr"), Atom(self.rng.choice(("capture", "stdout", "discard")))),
                (Atom("env"), [(b"FUZZ", b"1"), (b"PATH", NIL)] if self.rng.random() < 0.2
                 else [(b"FUZZ", b"1")]),
                (Atom("cd"), self.rng.choice((b"/", b"/tmp", b"/nonexistent"))),
                (Atom("clear_env"), self.rng.choice((TRUE, FALSE))),
                (Atom("arg0"), b"fuzz"),
            )))
        return (Atom("spawn"), id, exe, list(args), opts)

    def spawn(self) -> bytes:
        if len(self.live) >= MAX_LIVE:  # keep the number of children bounded
            return self.kill_one()
        return self.control(self.spawn_term(self.fuzz_id()))

    def kill_one(self) -> bytes:
        """SIGKILL to one of them, and credit so that its exit is not held back."""
        id = self.rng.choice(sorted(self.live))
        for stream in (1, 2):
            self.queue.append(("credit", struct.pack(">BIBI", v1.CREDIT, id, stream, 2**32 - 1)))
        return self.control((Atom("signal"), id, self.next_ref(), 9, TRUE))

    def spawn_dup(self) -> bytes:
        id = self.rng.choice(sorted(self.live)) if self.live else self.fuzz_id()
        return self.control(self.spawn_term(id))

    def signal(self) -> bytes:
        signo = self.rng.choice((0, 0, 9, 15, 1, 18, 99, -1, 2**31, 2**40))
        group = self.rng.choice((TRUE, FALSE, FALSE, NIL))
        return self.control((Atom("signal"), self.fuzz_id(), self.next_ref(), signo, group))

    def close_stdin(self) -> bytes:
        return self.control((Atom("close_stdin"), self.fuzz_id(), self.next_ref()))

    def data(self) -> bytes:
        n = self.rng.choice((0, 1, 10, 100, 1000, self.rng.randrange(v1.MAX_DATA + 1)))
        return self.rng.randbytes(n) if n < 2000 else bytes(n)

    def stdin(self) -> bytes:
        return struct.pack(">BI", v1.STDIN, self.fuzz_id()) + self.data()

    def stdin_unknown(self) -> bytes:
        return struct.pack(">BI", v1.STDIN, self.rng.randrange(1000, 2**32)) + self.data()[:100]

    def stdin_after_close(self) -> bytes:
        id = self.rng.choice(FUZZ_IDS)
        return (self.close_stdin_of(id), struct.pack(">BI", v1.STDIN, id) + b"late")[
            self.rng.randrange(2)]

    def close_stdin_of(self, id: int) -> bytes:
        return self.control((Atom("close_stdin"), id, self.next_ref()))

    def credit(self) -> bytes:
        amount = self.rng.choice((0, 1, 4096, 65536, 1 << 20, 2**32 - 1))
        return struct.pack(">BIBI", v1.CREDIT, self.fuzz_id(), self.rng.choice((1, 2)), amount)

    def credit_overflow(self) -> bytes:
        return struct.pack(">BIBI", v1.CREDIT, self.rng.choice(FUZZ_IDS), 1, 2**32 - 1)

    def credit_bad(self) -> bytes:
        r = self.rng.randrange(3)
        if r == 0:  # no such stream
            return struct.pack(">BIBI", v1.CREDIT, self.fuzz_id(), self.rng.choice((0, 3, 255)), 1)
        good = struct.pack(">BIBI", v1.CREDIT, self.fuzz_id(), 1, 1)
        return good[:self.rng.randrange(1, 10)] if r == 1 else good + b"\x00" * self.rng.randrange(
            1, 5)

    def bad_options(self) -> bytes:
        bad: Term = self.rng.choice((
            (Atom("credit"), -1), (Atom("credit"), -(2**70)), (Atom("credit"), 2**2000),
            (Atom("credit"), 1.5), (Atom("stdin"), Atom("tty")), (Atom("bogus"), 1),
            (Atom("env"), [(b"A=B", b"1")]), (Atom("env"), [(b"", b"1")]), (Atom("cd"), b"a\0b"),
            Atom("cd"), (Atom("cd"),), 42,
        ))
        exe = self.rng.choice((b"/bin/true", b"", 42, [b"x"], b"a\0b"))
        args: Term = self.rng.choice(([], [1], b"x", [b"a\0"]))
        return self.control((Atom("spawn"), self.fuzz_id(), exe, args, [bad]))

    def template(self) -> bytes:
        r = self.rng.randrange(3)
        if r == 0:
            return self.control(self.spawn_term(self.fuzz_id()))
        if r == 1:
            return self.control((Atom("signal"), self.fuzz_id(), self.next_ref(), 0, FALSE))
        return self.control((Atom("close_stdin"), self.fuzz_id(), self.next_ref()))

    def mutated(self) -> bytes:
        data = bytearray(self.template())
        for _ in range(self.rng.randrange(1, 5)):
            pos = self.rng.randrange(1, len(data))
            op = self.rng.randrange(4)
            if op == 0:
                data[pos] = self.rng.randrange(256)
            elif op == 1:
                del data[pos]
            elif op == 2:
                data.insert(pos, self.rng.randrange(256))
            else:
                data[pos] ^= 1 << self.rng.randrange(8)
        return bytes(data[:65535]) or b"\x10"

    def truncated(self) -> bytes:
        data = self.template()
        return data[:self.rng.randrange(1, len(data))]

    def overlong(self) -> bytes:
        return self.template() + self.rng.randbytes(self.rng.randrange(1, 50))

    def bignum(self) -> bytes:
        n = self.rng.choice((MAX_BIG_BYTES, MAX_BIG_BYTES + 1, 1000, 60000, 2**32 - 1))
        have = min(n, 60000, self.rng.choice((n, 10)))
        sign = self.rng.choice((0, 1, 2))
        big = (b"n" + bytes((n,)) if n <= 255 else b"o" + U32.pack(n)) + bytes((sign,)) + (
            b"\xff" * have)
        where = self.rng.randrange(4)
        if where == 0:
            body = big
        elif where == 1:  # as a ref
            body = b"h\x05w\x06signala\x0b" + big + b"a\x00w\x05false"
        elif where == 2:  # as the id
            body = b"h\x03w\x0bclose_stdin" + big + b"a\x01"
        else:  # in a map, where erlang-py used to decode it
            body = b"h\x03w\x0bclose_stdina\x0bt" + U32.pack(1) + b"a\x01" + big
        return (b"\x10\x83" + body)[:65535]

    def deep(self) -> bytes:
        depth = self.rng.choice((MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 1000, 30000))
        kind = self.rng.randrange(4)
        if kind == 0:
            body = b"h\x01" * depth + b"j"
        elif kind == 1:
            body = b"l\x00\x00\x00\x01" * depth + b"j" + b"j" * depth
        elif kind == 2:
            body = (b"t" + U32.pack(1) + b"a\x00") * depth + b"j"
        else:
            body = b"l\x00\x00\x00\x01a\x00" * depth + b"j"
        # as a ref of a close_stdin: the request is valid if the ref is
        return (b"\x10\x83h\x03w\x0bclose_stdina\x0b" + body)[:65535]

    def many_terms(self) -> bytes:
        n = self.rng.choice((MAX_TERMS - 10, MAX_TERMS, MAX_TERMS + 1, 30000))
        elem = self.rng.choice((b"j", b"a\x01", b"w\x00", b"h\x00"))
        body = b"l" + U32.pack(n) + elem * n + b"j"
        return (b"\x10\x83h\x03w\x0bclose_stdina\x0b" + body)[:65535]

    def compressed(self) -> bytes:
        inner = encode_term((Atom("close_stdin"), 11, 1))[1:]
        if self.rng.random() < 0.5:
            inner = b"\x6b\xff\xff" + b"a" * 65535  # inflates 40x
        blob = zlib.compress(inner)
        body = b"P" + U32.pack(len(inner)) + blob
        if self.rng.random() < 0.5:
            body = b"h\x02a\x01" + body  # nested
        return (b"\x10\x83" + body)[:65535]

    def unknown(self) -> bytes:
        name = self.rng.choice(("launch", "spawn", "signal", "close_stdin", "", "x" * 255,
                                "é" * 100, "spawn_" + str(self.rng.randrange(100))))
        arity = self.rng.randrange(0, 8)
        term: Term = tuple([Atom(name), self.fuzz_id()][:arity] + [NIL] * max(0, arity - 2))
        if self.rng.random() < 0.2:
            term = self.rng.choice((42, b"spawn", [Atom("spawn")], Atom("spawn"), 1.5))
        return self.control(term)

    def bad_tag(self) -> bytes:
        tag = self.rng.choice((0, 1, 78, 82, 117, 121, 200, 255, 99, 77, 112, 113, 88, 90))
        body = bytes((tag,)) + self.rng.randbytes(self.rng.randrange(0, 40))
        if self.rng.random() < 0.5:
            body = b"h\x03w\x0bclose_stdina\x0b" + body
        return b"\x10\x83" + body

    def etf_random(self) -> bytes:
        version = 131 if self.rng.random() < 0.9 else self.rng.randrange(256)
        return b"\x10" + bytes((version,)) + self.rng.randbytes(self.rng.randrange(0, 300))

    def frame_random(self) -> bytes:
        kind = self.rng.choice((0x00, 0x01, 0x02, 0x13, 0x20, 0x21, 0x22, 0x23, 0xFF,
                                v1.STDIN, v1.CREDIT, v1.CONTROL))
        return bytes((kind,)) + self.rng.randbytes(self.rng.randrange(0, 20))

    def frame_big(self) -> bytes:
        kind = self.rng.choice((v1.CONTROL, v1.STDIN, 0x30))
        head = bytes((kind,)) + (U32.pack(self.fuzz_id()) if kind == v1.STDIN else b"\x83")
        return head + self.rng.randbytes(65535 - len(head))


def distinct_atoms(offset: int) -> bytes:
    """A list of MAX_TERMS - 1 atoms of three letters, different for each
    offset (resin caches only the first 4,096 names it sees)."""
    names = (bytes((97 + i // 676 % 26, 97 + i // 26 % 26, 97 + i % 26))
             for i in range(offset, offset + MAX_TERMS - 1))
    return b"\x83l" + U32.pack(MAX_TERMS - 1) + b"".join(b"w\x03" + n for n in names) + b"j"


def worst_v1_frames() -> dict[str, bytes]:
    """ETF terms (with the 131) of at most one packet that cost resin the most."""
    n = MAX_TERMS - 1

    def lst(elems: list[bytes], tail: bytes = b"j") -> bytes:
        return b"l" + U32.pack(len(elems)) + b"".join(elems) + tail

    return {
        "bignum_60kb": b"\x83o" + U32.pack(60000) + b"\x00" + b"\xff" * 60000 + b"j",
        "bignums_max": b"\x83" + lst([b"n\xff\x00" + b"\xff" * 255] * 250),
        "atoms": b"\x83" + lst([b"w\x00"] * n),
        "distinct_atoms": distinct_atoms(0),
        "tuples": b"\x83" + lst([b"h\x00"] * n),
        "nested_lists": b"\x83" + lst([b"l\x00\x00\x00\x01jj"] * (n // 2)),
        "long_list": b"\x83" + lst([b"j"] * n),
        "charlists": b"\x83" + lst([b"k\x00\x02ab"] * (MAX_CONTAINERS - 1)),
        "improper": b"\x83" + lst([b"w\x00"] * n, tail=b"a\x01"),
        "colliding_map": b"\x83t" + U32.pack(4000) + b"".join(
            b"n\x08\x00" + ((2**61 - 1) * (i + 1) % 2**64).to_bytes(8, "little") + b"j"
            for i in range(4000)),
        "pids": b"\x83" + lst([b"X" + b"w\x00" + b"\x00" * 12] * 4000),
        "spawn_many_args": encode_term((Atom("spawn"), 12, b"/bin/true", [b"ab"] * (n - 10), [])),
        "huge_ref": encode_term((Atom("signal"), 12, [Atom("")] * (n - 10), 0, FALSE)),
        "unknown_request": encode_term((Atom("what"), [Atom("a")] * (n - 5))),
        "deep": b"\x83" + b"h\x01" * 30000 + b"j",
        "compressed": b"\x83P" + U32.pack(2**32 - 1) + b"x" * 60000,
    }


def safe_v1(payload: bytes) -> bool:
    """Never target a canary or the sync id, never spawn anything but SAFE_SPAWNS."""
    if len(payload) >= 5 and payload[0] in (v1.STDIN, v1.CREDIT):
        return U32.unpack_from(payload, 1)[0] not in (*CANARY_IDS, SYNC_ID)
    if not payload or payload[0] != v1.CONTROL:
        return True
    try:
        frame = v1.decode_client_frame(payload)
    except ProtocolError:
        return True
    if isinstance(frame, v1.Spawn | v1.Signal | v1.CloseStdin) and frame.id in (
            *CANARY_IDS, SYNC_ID):
        return False
    return not isinstance(frame, v1.Spawn) or (frame.exec, frame.args) in SAFE_SPAWNS


# --- v1 session ----------------------------------------------------------------------------


class Canary:
    """A `cat` that must echo every byte sent to it, in order."""

    def __init__(self, id: int, rng: random.Random) -> None:
        self.id = id
        self.rng = rng
        self.sent = hashlib.sha256()
        self.received = hashlib.sha256()
        self.sent_len = 0
        self.received_len = 0
        self.chunks: collections.deque[bytes] = collections.deque()
        self.unacked = 0
        self.acks = 0
        self.checked = 0  # sent_len at the last check

    @property
    def idle(self) -> bool:
        return not self.chunks and not self.unacked and self.received_len == self.sent_len

    def start_round(self) -> None:
        size = self.rng.choice((1, 100, 4096, 65530, 65531, 200_000, 256 * 1024))
        payload = self.rng.randbytes(size)
        self.sent.update(payload)
        self.sent_len += size
        for i in range(0, size, v1.MAX_DATA):
            self.chunks.append(payload[i:i + v1.MAX_DATA])

    def step(self, resin: Resin) -> None:
        while self.chunks and self.unacked < v1.STDIN_WINDOW:
            resin.send(struct.pack(">BI", v1.STDIN, self.id) + self.chunks.popleft())
            self.unacked += 1

    def progress(self) -> tuple[int, int]:
        return self.received_len, self.acks


class V1Run:
    def __init__(self, opts: Options, stats: Stats, rng: random.Random, stderr: Any) -> None:
        self.opts, self.stats, self.rng, self.stderr = opts, stats, rng, stderr
        self.gen = V1Gen(rng)
        self.sync_ref = 0
        self.synced = -1
        self.baseline_ns = 0
        self.resin: Resin | None = None
        self.canaries: list[Canary] = []
        self.hello = False
        self.closing = False

    def start(self) -> Resin:
        resin = Resin(self.opts, self.stderr)
        self.resin = resin
        resin.on_packet = self.on_packet
        self.gen.live.clear()
        self.hello = False
        resin.send(bytes((v1.HELLO, 1)))
        resin.wait_for(lambda: self.hello, "hello reply")
        self.canaries = [Canary(id, random.Random(self.rng.random())) for id in CANARY_IDS]
        self.spawned: set[int] = set()
        for c in self.canaries:
            resin.send(bytes((v1.CONTROL,)) + encode_term((Atom("spawn"), c.id, b"cat", [], [])))
        resin.wait_for(lambda: self.spawned >= set(CANARY_IDS), "canary spawns")
        self.baseline_ns = min(self.sync_cost() for _ in range(20))
        return resin

    def on_packet(self, payload: bytes) -> None:
        try:
            frame = v1.decode_resin_frame(payload)
        except ProtocolError:
            self.stats.bad_packets += 1
            return
        stats = self.stats
        if isinstance(frame, v1.HelloReply):
            self.hello = True
            return
        canary = self.canaries[frame.id - 1] if (
            not isinstance(frame, v1.HelloReply | v1.ErrorEvent) and frame.id in CANARY_IDS
            and self.canaries) else None
        if canary is not None:
            if isinstance(frame, v1.Stdout):
                canary.received.update(frame.data)
                canary.received_len += len(frame.data)
            elif isinstance(frame, v1.StdinAck):
                canary.unacked -= 1
                canary.acks += 1
                if frame.status != v1.AckStatus.WRITTEN:
                    stats.events["canary_ack_" + frame.status.name.lower()] += 1
            elif isinstance(frame, v1.Spawned):
                self.spawned.add(frame.id)
            elif isinstance(frame, v1.Exit):
                if not self.closing:
                    stats.canary_exits += 1
            else:
                stats.events["canary_" + type(frame).__name__] += 1
            return
        if isinstance(frame, v1.Reply) and frame.id == SYNC_ID:
            if isinstance(frame.ref, int):
                self.synced = frame.ref
            return
        if isinstance(frame, v1.ErrorEvent) and frame.id in CANARY_IDS:
            stats.events["canary_error"] += 1
        if isinstance(frame, v1.Spawned):
            self.gen.live.add(frame.id)
        elif isinstance(frame, v1.Exit):
            self.gen.live.discard(frame.id)
        if isinstance(frame, v1.ErrorEvent):
            reason = frame.reason
            tag = reason[0] if isinstance(reason, tuple) and reason else reason
            name = tag.name if isinstance(tag, Atom) else type(tag).__name__
            stats.events["error:" + name] += 1
            if name == "internal":
                stats.internal_errors += 1
        else:
            stats.events[type(frame).__name__] += 1

    def sync(self) -> None:
        """Wait until resin has handled everything sent so far."""
        assert self.resin is not None
        self.sync_ref += 1
        ref = self.sync_ref
        self.resin.send(bytes((v1.CONTROL,)) + encode_term(
            (Atom("signal"), SYNC_ID, ref, 0, FALSE)))
        self.resin.wait_for(lambda: self.synced >= ref, "sync reply")

    def sync_cost(self) -> int:
        assert self.resin is not None
        self.sync()
        t0 = self.resin.cpu_ns()
        self.sync()
        return self.resin.cpu_ns() - t0

    def measure(self, kind: str, payload: bytes) -> None:
        """Send the frame alone between two syncs; its CPU cost in resin. A frame
        that only gets decoded (ETF kinds) is sent 3 times and the least cost
        counts: the cost is the frame's, the rest is the machine's noise."""
        resin = self.resin
        assert resin is not None
        self.finish_rounds()
        costs = []
        for _ in range(3 if kind.startswith(("etf_", "worst_")) else 1):
            self.sync()
            t0 = resin.cpu_ns()
            resin.send(payload)
            self.sync()
            costs.append(resin.cpu_ns() - t0 - self.baseline_ns)
        self.stats.cpu(kind, max(min(costs), 0) / 1e6)

    def finish_rounds(self) -> None:
        resin = self.resin
        assert resin is not None
        for c in self.canaries:
            def done(c: Canary = c) -> bool:
                c.step(resin)
                return c.idle

            resin.wait_for(done, f"canary {c.id} echo", c.progress)
            self.check(c)

    def check(self, c: Canary) -> None:
        if c.checked == c.sent_len:
            return
        c.checked = c.sent_len
        self.stats.canary_rounds += 1
        if c.sent.digest() != c.received.digest():
            self.stats.mismatches += 1
            # resynchronise: count the mismatch once
            c.received = c.sent.copy()

    def run(self, budget: int) -> None:
        stats = self.stats
        sent = 0
        while sent < budget:
            try:
                resin = self.resin or self.start()
                if "v1_before" not in stats.rss_kib:
                    stats.rss_kib["v1_before"] = status_kib(resin.pid, "VmRSS")
                sent = self.fuzz(resin, sent, budget)
                self.finish_rounds()
                stats.rss_kib["v1_after"] = status_kib(resin.pid, "VmRSS")
                stats.rss_kib["v1_peak"] = status_kib(resin.pid, "VmHWM")
            except Died as exc:
                self.fail("death", exc)
            except Hung as exc:
                self.fail("hang", exc)
        if self.resin is not None:
            self.closing = True
            self.resin.close()
            self.stats.bad_packets += self.resin.bad_packets
            self.resin = None

    def fail(self, what: str, exc: Exception) -> None:
        assert self.resin is not None
        if what == "death":
            self.stats.deaths += 1
        else:
            self.stats.hangs += 1
        save_reproducer(self.opts, self.stats, self.resin, f"{what}: {exc}", "v1")
        if self.opts.verbose:
            print(f"  v1 {what}: {exc} (reproducer {self.stats.reproducers[-1]})", flush=True)
        self.resin.client.kill()
        self.resin = None

    def fuzz(self, resin: Resin, sent: int, budget: int) -> int:
        stats = self.stats
        last_sync = sent
        seen = {c.id: (c.progress(), time.monotonic()) for c in self.canaries}
        while sent < budget:
            now = time.monotonic()
            for c in self.canaries:
                if c.idle:
                    self.check(c)
                    c.start_round()
                c.step(resin)
                progress, since = seen[c.id]
                if c.progress() != progress:
                    seen[c.id] = (c.progress(), now)
                elif now - since > HANG_TIMEOUT:
                    raise Hung(f"canary {c.id}: no echo for {HANG_TIMEOUT} s")
            for _ in range(100):
                if sent >= budget or len(resin.out) > OUT_LIMIT:
                    break
                kind, payload = self.gen.next()
                n = stats.kinds[kind]
                stats.kinds[kind] += 1
                if self.opts.measure and (n < MEASURE_FIRST or n % SAMPLE_EVERY == 0):
                    self.measure(kind, payload)
                else:
                    resin.send(payload)
                sent += 1
                stats.frames += 1
                stats.v1_frames += 1
            resin.pump(0.0 if len(resin.out) < OUT_LIMIT else 0.05)
            if sent - last_sync >= 5000:  # resin still answers
                self.sync()
                last_sync = sent
                if self.opts.verbose and sent % 50000 < 5000:
                    print(f"  v1 {sent} frames, {stats.canary_rounds} canary rounds", flush=True)
            if resin.client.proc.poll() is not None:
                raise Died(f"resin exited with {resin.client.proc.returncode}")
        return sent


# --- v0 -------------------------------------------------------------------------------------


class V0Gen:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.kinds: list[tuple[str, Callable[[], list[bytes]], int]] = [
            ("data_in", self.data_in, 10),
            ("data_in_chunked", self.data_in_chunked, 4),
            ("mutated", self.mutated, 20),
            ("truncated", self.truncated, 5),
            ("start_again", self.start_again, 3),
            ("hostile_arrays", self.hostile_arrays, 3),
            ("hostile_headers", self.hostile_headers, 4),
            ("deep", self.deep, 2),
            ("bad_ints", self.bad_ints, 4),
            ("bad_types", self.bad_types, 6),
            ("long_strings", self.long_strings, 2),
            ("random", self.random_bytes, 5),
            ("zero_length", lambda: [b""], 2),
            ("hello_midstream", lambda: [b"\x00\x01"], 1),
        ]
        self.names = [k[0] for k in self.kinds]
        self.funcs = {k[0]: k[1] for k in self.kinds}
        self.weights = [k[2] for k in self.kinds]

    def next(self) -> tuple[str, list[bytes]]:
        kind = self.rng.choices(self.names, self.weights)[0]
        return kind, self.funcs[kind]()

    def chunks(self, body: bytes) -> list[bytes]:
        size = self.rng.choice((v0.V0_MAX_CHUNK, v0.V0_MAX_CHUNK, 1, 7, 1000))
        if len(body) // size > 2000:
            size = v0.V0_MAX_CHUNK
        return v0.chunk_payload(body, chunk_size=size, flags=self.rng.choice((0x02, 0x00, 0x0F)))

    def data_bytes(self) -> bytes:
        n = self.rng.choice((0, 1, 100, 5000, 70000))
        return self.rng.randbytes(n)

    def data_in(self) -> list[bytes]:
        return v0.encode_client_message(v0.DataIn(self.data_bytes()),
                                        data_as_bin=self.rng.random() < 0.3)

    def data_in_chunked(self) -> list[bytes]:
        data = self.data_bytes()
        buf: Any = data if self.rng.random() < 0.3 else list(data)
        return self.chunks(msgpack.packb({"DataIn": {"buf": buf}}))

    def template(self) -> bytes:
        return self.rng.choice((
            msgpack.packb({"DataIn": {"buf": list(self.rng.randbytes(self.rng.randrange(50)))}}),
            msgpack.packb({"StartProcess": {"exec": "cat", "args": ["-u"]}}),
            msgpack.packb({"KillProcess": None}),
            msgpack.packb("KillProcess"),
        ))

    def mutated(self) -> list[bytes]:
        data = bytearray(self.template())
        for _ in range(self.rng.randrange(1, 5)):
            pos = self.rng.randrange(len(data))
            op = self.rng.randrange(3)
            if op == 0:
                data[pos] = self.rng.randrange(256)
            elif op == 1 and len(data) > 1:
                del data[pos]
            else:
                data.insert(pos, self.rng.randrange(256))
        packets = self.chunks(bytes(data))
        if self.rng.random() < 0.2:  # a flags byte with the MORE bit where it does not belong
            i = self.rng.randrange(len(packets))
            packets[i] = bytes((packets[i][0] ^ v0.FLAG_MORE,)) + packets[i][1:]
        return packets

    def truncated(self) -> list[bytes]:
        data = self.template()
        return self.chunks(data[:self.rng.randrange(len(data))] or b"\xc1")

    def start_again(self) -> list[bytes]:
        return v0.encode_client_message(v0.StartProcess("cat"))

    def hostile_arrays(self) -> list[bytes]:
        n = self.rng.choice((1000, 65000, 1 << 20))
        body = self.rng.choice((
            b"\xdd" + U32.pack(n) + b"\x90" * n,
            b"\x81\xa6DataIn\x81\xa3buf\xdd" + U32.pack(n) + b"\x90" * n,
            b"\x81\xacStartProcess\x82\xa4exec\xa1x\xa4args\xdd" + U32.pack(n) + b"\xa0" * n,
            b"\x81\xa6DataIn\x82\xa1x\xdd" + U32.pack(n) + b"\x80" * n + b"\xa3buf\x90",
        ))
        return v0.chunk_payload(body)

    def hostile_headers(self) -> list[bytes]:
        claim = U32.pack(self.rng.choice((2**32 - 1, 2**31, 1 << 26)))
        body = self.rng.choice((
            b"\xdd" + claim, b"\xdf" + claim, b"\xdb" + claim + b"x", b"\xc6" + claim,
            b"\x81\xa6DataIn\x81\xa3buf\xdd" + claim + b"\x01\x02",
            b"\x81\xa6DataIn\x81\xa3buf\xc6" + claim + b"\x01",
            b"\x81\xacStartProcess\x81\xa4args\xdd" + claim,
            b"\x81\xabKillProcess\xdd" + claim,
        ))
        return self.chunks(body)

    def deep(self) -> list[bytes]:
        depth = self.rng.choice((100, 1000, 5000))
        inner = self.rng.choice((b"\x91" * depth + b"\xc0", b"\x81\xa1k" * depth + b"\xc0"))
        return self.chunks(b"\x81\xa6DataIn\x82\xa1x" + inner + b"\xa3buf\x90")

    def bad_ints(self) -> list[bytes]:
        good = list(self.rng.randbytes(self.rng.randrange(100)))
        bad: Any = self.rng.choice((256, -1, 2**40, 1.0, None, "a", b"b", [1]))
        buf = good[:]
        buf.insert(self.rng.randrange(len(buf) + 1), bad)
        return self.chunks(msgpack.packb({"DataIn": {"buf": buf}}))

    def bad_types(self) -> list[bytes]:
        value: Any = self.rng.choice((
            {"DataIn": None}, {"DataIn": {"buf": None}}, {"DataIn": {}}, {"StartProcess": None},
            {"StartProcess": {"exec": ""}}, {"StartProcess": {"exec": 1}},
            {"StartProcess": {"exec": "x", "args": [1]}}, {"StartProcess": {"exec": "a\0b"}},
            {"Nope": 1}, {"DataIn": {"buf": []}, "x": 1}, [], 42, None, "Kill", {1: 2},
            msgpack.ExtType(5, b"x"), {"DataIn": {"buf": msgpack.ExtType(1, b"abc")}},
        ))
        return self.chunks(msgpack.packb(value))

    def long_strings(self) -> list[bytes]:
        n = self.rng.choice((v0.V0_MAX_STRING, v0.V0_MAX_STRING + 1, 1 << 20))
        return self.chunks(self.rng.choice((
            msgpack.packb({"T" * n: None}), msgpack.packb("K" * n),
            msgpack.packb({"StartProcess": {"exec": "x" * n}}),
            msgpack.packb({"DataIn": {"k" * n: 1, "buf": [1]}}),
        )))

    def random_bytes(self) -> list[bytes]:
        n = self.rng.randrange(1, 300)
        return [bytes((self.rng.randrange(256),)) + self.rng.randbytes(n)
                for _ in range(self.rng.randrange(1, 3))]


class V0Run:
    """Fresh resins, each with its cat canary, fed fuzz messages."""

    def __init__(self, opts: Options, stats: Stats, rng: random.Random, stderr: Any) -> None:
        self.opts, self.stats, self.rng, self.stderr = opts, stats, rng, stderr
        self.gen = V0Gen(rng)

    def run(self, budget: int) -> None:
        """Fresh resins until `budget` packets are sent."""
        start = self.stats.v0_frames
        while self.stats.v0_frames - start < budget:
            n = min(V0_SESSION_FRAMES, budget - (self.stats.v0_frames - start))
            resin = Resin(self.opts, self.stderr)
            self.stats.v0_resins += 1
            try:
                self.session(resin, n)
            except Died as exc:
                self.fail(resin, "death", exc)
            except Hung as exc:
                self.fail(resin, "hang", exc)
            else:
                status = resin.close()
                if status != 0:
                    self.stats.v0_bad_lifecycle += 1
            finally:
                self.stats.bad_packets += resin.bad_packets
                resin.client.kill()

    def fail(self, resin: Resin, what: str, exc: Exception) -> None:
        if what == "death":
            self.stats.deaths += 1
        else:
            self.stats.hangs += 1
        save_reproducer(self.opts, self.stats, resin, f"{what}: {exc}", "v0")
        if self.opts.verbose:
            print(f"  v0 {what}: {exc} (reproducer {self.stats.reproducers[-1]})", flush=True)

    def session(self, resin: Resin, budget: int) -> None:
        stats = self.stats
        sent_hash, received = hashlib.sha256(), hashlib.sha256()
        counts = {"sent": 0, "received": 0, "errors": 0, "exits": 0}

        def on_packet(payload: bytes) -> None:
            try:
                msg = v0.decode_resin_message(payload)
            except ProtocolError:
                stats.bad_packets += 1
                return
            if isinstance(msg, v0.DataOut):
                received.update(msg.data)
                counts["received"] += len(msg.data)
            elif isinstance(msg, v0.ErrorReport):
                counts["errors"] += 1
                stats.events["v0:ErrorReport"] += 1
                if msg.msg.startswith("resin daemon error: internal error"):
                    stats.internal_errors += 1
            else:
                counts["exits"] += 1

        def send_data(data: bytes) -> None:
            for p in v0.encode_client_message(v0.DataIn(data)):
                resin.send(p)
            sent_hash.update(data)
            counts["sent"] += len(data)

        def probe() -> None:
            send_data(self.rng.randbytes(self.rng.choice((1, 1000, 40000))))
            resin.wait_for(lambda: counts["received"] >= counts["sent"], "v0 canary echo",
                           lambda: counts["received"])
            stats.canary_rounds += 1
            if received.digest() != sent_hash.digest():
                stats.mismatches += 1

        def expect_error(packets: list[bytes]) -> None:
            before = counts["errors"]
            for p in packets:
                resin.send(p)
            resin.wait_for(lambda: counts["errors"] > before, "v0 ErrorReport")

        resin.on_packet = on_packet
        for p in v0.encode_client_message(v0.StartProcess("cat")):
            resin.send(p)
        probe()
        first = stats.v0_frames
        i = 0
        while stats.v0_frames - first < budget:
            i += 1
            kind, packets = self.gen.next()
            messages = simulate_v0(packets)
            if packets and packets[-1] and packets[-1][0] & v0.FLAG_MORE:
                packets.append(b"\x02")  # end the message: the next one starts clean
                messages = simulate_v0(packets)
            if messages is None:  # would kill the canary
                packets, messages = [b""], []
            for p in packets:
                resin.send(p)
                while len(resin.out) > OUT_LIMIT:
                    resin.pump(0.05)
            for msg in messages:
                if isinstance(msg, v0.DataIn):
                    sent_hash.update(msg.data)
                    counts["sent"] += len(msg.data)
            stats.kinds["v0_" + kind] += 1
            stats.frames += len(packets)
            stats.v0_frames += len(packets)
            resin.pump(0.0)
            if i % 500 == 0:
                probe()
            if resin.client.proc.poll() is not None:
                raise Died(f"resin exited with {resin.client.proc.returncode}")
        probe()
        hwm_kib = status_kib(resin.pid, "VmHWM")
        stats.v0_hwm_kib_max = max(stats.v0_hwm_kib_max, hwm_kib)
        # The end of the child, then what comes after it: each an ErrorReport.
        resin.send(v0.encode_client_message(v0.KillProcess())[0])
        resin.wait_for(lambda: counts["exits"] > 0, "v0 ExitStatus")
        for msg in (v0.DataIn(b"late"), v0.KillProcess(), v0.StartProcess("cat")):
            expect_error(v0.encode_client_message(msg))
        expect_error([b""])  # zero-length packet


def simulate_v0(packets: list[bytes]) -> list[v0.ClientMessage | None] | None:
    """What resin's v0 decoder makes of these packets (starting between
    messages); None if one of them is a KillProcess (the canary's end)."""
    decoder = v0.V0Decoder()
    out: list[v0.ClientMessage | None] = []
    for p in packets:
        if not p:
            continue  # a zero-length packet never reaches the decoder
        try:
            msg = decoder.feed_packet(p)
        except ProtocolError:
            continue
        if isinstance(msg, v0.KillProcess):
            return None
        if msg is not None:
            out.append(msg)
    return out


# --- hostile single messages -----------------------------------------------------------------


def hostile_v0(opts: Options, stderr: Any, message: bytes, echo: int) -> dict[str, Any]:
    """One v0 message to a fresh resin (after StartProcess cat if `echo`): until
    its ErrorReport or `echo` bytes echoed, resin's CPU and peak RSS."""
    resin = Resin(opts, stderr)
    replies: list[bytes] = []
    resin.on_packet = replies.append
    if echo:
        for p in v0.encode_client_message(v0.StartProcess("cat")):
            resin.send(p)
    t0 = resin.cpu_ns()
    start = time.monotonic()
    read, echoed, reply = [0], [0], [""]

    def done() -> bool:
        while read[0] < len(replies):
            msg = v0.decode_resin_message(replies[read[0]])
            read[0] += 1
            if isinstance(msg, v0.DataOut):
                echoed[0] += len(msg.data)
            elif isinstance(msg, v0.ErrorReport):
                reply[0] = msg.msg[:100]
                return True
        return bool(echo) and echoed[0] >= echo

    try:
        for p in v0.chunk_payload(message):
            resin.send(p)
            while len(resin.out) > OUT_LIMIT:
                resin.pump(0.05)
        resin.wait_for(done, "v0 reply", lambda: (len(resin.out), echoed[0]))
        return {
            "message_mib": round(len(message) / 2**20, 1),
            "reply": reply[0],
            "echoed": echoed[0],
            "resin_cpu_s": round((resin.cpu_ns() - t0) / 1e9, 2),
            "peak_rss_mib": round(status_kib(resin.pid, "VmHWM") / 1024, 1),
            "seconds": round(time.monotonic() - start, 1),
        }
    except (Died, Hung) as exc:
        alive = resin.client.proc.poll() is None
        return {"failed": str(exc),
                "peak_rss_mib": round(status_kib(resin.pid, "VmHWM") / 1024, 1) if alive else None}
    finally:
        resin.client.kill()


def hostile(opts: Options, stderr: Any) -> dict[str, Any]:
    """Issue 8's single-message costs against a real resin."""
    size = v0.V0_MAX_MESSAGE
    pairs = (size - 20) // 2
    result: dict[str, Any] = {
        "v0_64mib_empty_arrays": hostile_v0(
            opts, stderr, b"\xdd" + U32.pack(size - 5) + b"\x90" * (size - 5), 0),
        "v0_64mib_int_array": hostile_v0(  # a legit message: cat echoes it
            opts, stderr, b"\x81\xa6DataIn\x81\xa3buf\xdd" + U32.pack(pairs)
            + b"\xcc\xfe" * pairs, pairs),
    }
    # v1: the 60 KB bignum frame, alone between two syncs.
    run = V1Run(opts, Stats(), random.Random(0), stderr)
    try:
        resin = run.start()
        frame = b"\x10\x83o" + U32.pack(60000) + b"\x00" + b"\xff" * 60000 + b"j"
        costs = []
        for _ in range(3):
            run.sync()
            t0 = resin.cpu_ns()
            resin.send(frame)
            run.sync()
            costs.append((resin.cpu_ns() - t0 - run.baseline_ns) / 1e6)
        result["v1_60kb_bignum_frame_cpu_ms"] = round(min(costs), 2)
    except (Died, Hung) as exc:
        result["v1_60kb_bignum_frame_cpu_ms"] = f"failed: {exc}"
    finally:
        if run.resin is not None:
            run.resin.client.kill()
    return result


# --- main -------------------------------------------------------------------------------------


def run(opts: Options) -> Stats:
    """The fuzz run (also used by tests/test_fuzz_slice.py)."""
    stats = Stats()
    rng = random.Random(opts.seed)
    os.makedirs(opts.out_dir, exist_ok=True)
    start = time.monotonic()
    with open(Path(opts.out_dir) / "resin-stderr.log", "w") as stderr:
        v0_budget = int(opts.frames * opts.v0_share)
        V0Run(opts, stats, random.Random(rng.random()), stderr).run(v0_budget)
        V1Run(opts, stats, random.Random(rng.random()), stderr).run(opts.frames - stats.frames)
    stats.seconds = time.monotonic() - start
    return stats


def report(stats: Stats) -> str:
    lines = [
        f"frames sent: {stats.frames} (v1 {stats.v1_frames}, v0 {stats.v0_frames} packets "
        f"in {stats.v0_resins} resins) in {stats.seconds:.0f} s",
        f"daemon deaths: {stats.deaths}",
        f"hangs: {stats.hangs}",
        f"canary checksum mismatches: {stats.mismatches} "
        f"(canary rounds {stats.canary_rounds}, canary exits {stats.canary_exits})",
        f"v0 lifecycle failures: {stats.v0_bad_lifecycle}; internal errors: "
        f"{stats.internal_errors}; undecodable packets from resin: {stats.bad_packets}",
        "resin RSS (v1): before {} MiB, after {} MiB, peak {} MiB; v0 resins peak {} MiB".format(
            *(round(stats.rss_kib.get(k, -1) / 1024, 1)
              for k in ("v1_before", "v1_after", "v1_peak")),
            round(stats.v0_hwm_kib_max / 1024, 1)),
        "worst resin CPU per frame by kind (ms; measured frames):",
    ]
    for kind, ms in sorted(stats.worst_cpu_ms.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {kind:22s} {ms:8.2f}  ({stats.measured[kind]})")
    top = ", ".join(f"{k} {n}" for k, n in stats.events.most_common(12))
    lines.append(f"replies: {top}")
    if stats.reproducers:
        lines.append("reproducers: " + ", ".join(stats.reproducers))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--v0-share", type=float, default=0.2)
    parser.add_argument("--out-dir", default="/tmp/resin-fuzz")
    parser.add_argument("--resin-dir", help="run resin from this checkout")
    parser.add_argument("--hostile", action="store_true", help="also the hostile single messages")
    parser.add_argument("--hostile-only", action="store_true")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--hang-timeout", type=float, default=10.0,
                        help="seconds without an answer that count as a hang")
    args = parser.parse_args(argv)
    global HANG_TIMEOUT
    HANG_TIMEOUT = args.hang_timeout
    opts = Options(seed=args.seed, frames=args.frames, v0_share=args.v0_share,
                   out_dir=args.out_dir, resin_dir=args.resin_dir)
    results: dict[str, Any] = {"seed": args.seed}
    ok = True
    if not args.hostile_only:
        print(f"fuzzing resin: seed {opts.seed}, {opts.frames} frames", flush=True)
        stats = run(opts)
        print(report(stats), flush=True)
        results["fuzz"] = {k: v for k, v in stats.__dict__.items()}
        ok = not (stats.deaths or stats.hangs or stats.mismatches or stats.canary_exits)
    if args.hostile or args.hostile_only:
        os.makedirs(opts.out_dir, exist_ok=True)
        with open(Path(opts.out_dir) / "resin-stderr-hostile.log", "w") as stderr:
            results["hostile"] = hostile(opts, stderr)
        print("hostile single messages:", json.dumps(results["hostile"], indent=1), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
