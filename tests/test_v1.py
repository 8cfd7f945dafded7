"""v1 (handshake, many processes, flow control) against a real resin."""

from __future__ import annotations

import os
import signal
import struct
import time
from pathlib import Path

import pytest
from conftest import both_spawners, proc_state, wait_gone, wait_until

from resin_py.protocol import v1
from resin_py.protocol.etf import encode_term
from resin_py.protocol.terms import NIL, OK, Atom
from resin_py.protocol.v1 import AckStatus, StreamKind
from resin_py.protocol.v1_session import OUTPUT_FRAME_DATA
from resin_py.testing import ResinClient

ERROR = Atom("error")


def barrier(c: ResinClient) -> list[v1.ResinFrame]:
    """Round trip a request: every frame resin produced before it has arrived.
    Returns (and keeps) the frames received meanwhile."""
    c.close_child_stdin(2**32 - 1)  # an id nobody uses: answered {error, no_process}
    return list(c._stash)


def test_handshake_any_version_gets_v1(resin: ResinClient) -> None:
    assert resin.hello(7) == 1


@both_spawners
def test_echo(client: ResinClient) -> None:
    r = client.run(1, "/bin/echo", ["hi"])
    assert (r.stdout, r.stderr, r.exit) == (b"hi\n", b"", v1_exit(1, 0))


def v1_exit(id: int, code: int) -> v1.Exit:
    return v1.Exit(id, "exit", code)


@both_spawners
def test_stdout_and_stderr_are_separate(client: ResinClient) -> None:
    r = client.run(1, "sh", ["-c", "echo out; echo err >&2"])
    assert (r.stdout, r.stderr) == (b"out\n", b"err\n")


@both_spawners
@pytest.mark.parametrize("code", [0, 3, 200])
def test_exit_codes(client: ResinClient, code: int) -> None:
    assert client.run(5, "sh", ["-c", f"exit {code}"]).exit == v1_exit(5, code)


@both_spawners
def test_death_by_signal(client: ResinClient) -> None:
    assert client.run(1, "sh", ["-c", "kill -USR1 $$"]).exit == v1.Exit(1, "signal", signal.SIGUSR1)


@both_spawners
def test_spawned_reports_the_os_pid(client: ResinClient) -> None:
    spawned = client.spawn(1, "sleep", ["1000"])
    assert isinstance(spawned, v1.Spawned)
    # vfork returns once exec has the new memory, a moment before the
    # arguments are on its stack: wait for them.
    cmdline = Path(f"/proc/{spawned.os_pid}/cmdline")
    wait_until(lambda: cmdline.read_bytes() != b"", what="exec to finish")
    assert cmdline.read_bytes() == b"sleep\x001000\x00"
    assert client.signal(1, signal.SIGKILL) == OK
    assert client.collect(1).exit == v1.Exit(1, "signal", 9)
    wait_gone(spawned.os_pid)


@both_spawners
def test_spawn_errors(client: ResinClient, tmp_path: Path) -> None:
    assert client.spawn(1, "no-such-program-xyz") == v1.SpawnError(1, Atom("enoent"))
    assert client.spawn(1, "/no/such/file") == v1.SpawnError(1, Atom("enoent"))
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\necho hi\n")
    assert client.spawn(2, str(script)) == v1.SpawnError(2, Atom("eacces"))
    noexec = tmp_path / "noexec"
    noexec.write_bytes(b"\x00\x01garbage")
    noexec.chmod(0o755)
    assert client.spawn(2, str(noexec)) == v1.SpawnError(2, Atom("enoexec"))
    assert client.spawn(3, "true", cd="/no/such/dir") == v1.SpawnError(
        3, (Atom("cwd"), Atom("enoent")))
    # The id is free again after spawn_error.
    assert client.run(1, "true").exit == v1_exit(1, 0)


def test_id_in_use(client: ResinClient) -> None:
    assert isinstance(client.spawn(1, "cat"), v1.Spawned)
    assert client.spawn(1, "true") == v1.SpawnError(1, Atom("id_in_use"))
    assert client.close_child_stdin(1) == OK
    assert client.collect(1).exit == v1_exit(1, 0)


@pytest.mark.parametrize(
    ("term", "what"),
    [
        ((Atom("spawn"), 1, "notabinary", [], []), "exec"),
        ((Atom("spawn"), 1, b"", [], []), "exec"),
        ((Atom("spawn"), 1, b"true", [1], []), "args"),
        ((Atom("spawn"), 1, b"true", b"x", []), "args"),
        ((Atom("spawn"), 1, b"true", [], [Atom("cd")]), "opts"),
        ((Atom("spawn"), 1, b"true", [], [(Atom("bogus"), 1)]), "bogus"),
        ((Atom("spawn"), 1, b"true", [], [(Atom("cd"), 1)]), "cd"),
        ((Atom("spawn"), 1, b"true", [], [(Atom("env"), [(b"A=B", b"1")])]), "env"),
        ((Atom("spawn"), 1, b"true", [], [(Atom("stdin"), Atom("tty"))]), "stdin"),
        ((Atom("spawn"), 1, b"true", [], [(Atom("credit"), -1)]), "credit"),
    ],
)
def test_spawn_badarg(client: ResinClient, term: object, what: str) -> None:
    client.send_packet(b"\x10" + encode_term(term))  # type: ignore[arg-type]
    assert client.recv() == v1.SpawnError(1, (Atom("badarg"), Atom(what)))


def test_malformed_frames(client: ResinClient) -> None:
    cases: list[tuple[bytes, object]] = [
        (b"\x10\x83\x68", (Atom("bad_term"),)),
        (b"\x10garbage", (Atom("bad_term"),)),
        (b"\x10\x83\x50\x00\x00\x00\x10\x78\x9c", (Atom("bad_term"),)),  # compressed
        (b"\x10" + encode_term((Atom("launch"), 1)), (Atom("unknown_request"),)),
        (b"\x10" + encode_term(42), (Atom("unknown_request"),)),
        (b"\x99", (Atom("bad_frame"), 0x99)),
        (b"\x11\x00\x00", (Atom("bad_frame"), 0x11)),
        (b"\x12\x00\x00\x00\x01\x01", (Atom("bad_frame"), 0x12)),
        (b"\x12\x00\x00\x00\x01\x03\x00\x00\x00\x01", (Atom("bad_frame"), 0x12)),
        (b"\x00\x01", (Atom("bad_frame"), 0)),  # a second hello
        (b"\x21\x00\x00\x00\x01hi", (Atom("bad_frame"), 0x21)),  # a resin frame
    ]
    for payload, reason in cases:
        client.send_packet(payload)
        event = client.recv()
        assert isinstance(event, v1.ErrorEvent), payload
        assert isinstance(event.reason, tuple) and event.reason[: len(reason)] == reason, payload
    client.send_raw(b"\x00\x00")
    assert client.recv() == v1.ErrorEvent(None, Atom("zero_length_packet"))
    assert client.run(1, "/bin/echo", ["fine"]).stdout == b"fine\n"


def test_random_garbage_never_kills_resin(client: ResinClient) -> None:
    import random

    rng = random.Random(1234)
    valid = [
        v1_payload(v1.Spawn(1, b"true")),
        v1_payload(v1.Signal(7, 1, 9, True)),
        v1_payload(v1.Credit(1, StreamKind.STDOUT, 5)),
    ]
    for _ in range(300):
        base = bytearray(rng.choice(valid))
        for _ in range(rng.randint(1, 4)):
            base[rng.randrange(len(base))] = rng.randrange(256)
        if rng.random() < 0.3:
            base = base[: rng.randint(1, len(base))]
        if base and base[0] in (0x11, 0x10, 0x12):  # keep spawns from running wild
            base[1:5] = b"\xff\xff\xff\xf0"
        client.send_packet(bytes(base))
    barrier(client)
    assert client.run(2, "/bin/echo", ["alive"]).stdout == b"alive\n"


def v1_payload(frame: v1.ClientFrame) -> bytes:
    return v1.encode_client_frame(frame)


@pytest.mark.serial
def test_one_mib_round_trip_with_acks(client: ResinClient) -> None:
    data = os.urandom(1 << 20)
    assert isinstance(client.spawn(1, "cat"), v1.Spawned)
    started = time.monotonic()
    assert client.write(1, data) == AckStatus.WRITTEN
    assert client.close_child_stdin(1) == OK
    r = client.collect(1)
    assert r.stdout == data and r.exit == v1_exit(1, 0)
    assert all(len(f.data) <= v1.MAX_DATA for f in r.frames if isinstance(f, v1.Stdout))
    assert time.monotonic() - started < 5


@pytest.mark.heavy
@both_spawners
def test_hundred_concurrent_processes(client: ResinClient) -> None:
    ids = range(1000, 1100)
    for i in ids:
        client.send_spawn(i, "sh", ["-c", f"read x; echo {i}:$x; echo e{i} >&2; exit {i % 7}"])
    for i in ids:
        assert isinstance(client.expect(lambda f, i=i: isinstance(f, v1.Spawned) and f.id == i),
                          v1.Spawned)
    for i in ids:
        client.send(v1.Stdin(i, b"line%d\n" % i))
    for i in reversed(ids):
        r = client.collect(i)
        assert r.stdout == b"%d:line%d\n" % (i, i)
        assert r.stderr == b"e%d\n" % i
        assert r.exit == v1_exit(i, i % 7)
        assert [f for f in r.frames if isinstance(f, v1.StdinAck)] == [
            v1.StdinAck(i, AckStatus.WRITTEN)]


@both_spawners
def test_option_cd(client: ResinClient, tmp_path: Path) -> None:
    assert client.run(1, "pwd", cd=str(tmp_path)).stdout == str(tmp_path).encode() + b"\n"


@both_spawners
def test_option_env(client: ResinClient) -> None:
    os.environ["RESIN_TEST_INHERITED"] = "yes"  # resin started before: not inherited
    r = client.run(1, "sh", ["-c", 'echo "$FOO|${HOME-unset}|${PATH:+path}"'],
               env={"FOO": "bar", "HOME": None})
    assert r.stdout == b"bar|unset|path\n"


@both_spawners
def test_option_clear_env(client: ResinClient) -> None:
    r = client.run(1, "/usr/bin/env", clear_env=True, env={"ONLY": "this"})
    # resin's cookie is always there (docs/protocol.md, "Containment").
    only, cookie = r.stdout.splitlines()
    assert only == b"ONLY=this"
    assert cookie.startswith(f"RESIN_TREE={client.pid}.".encode())


@both_spawners
def test_env_path_is_used_for_lookup(client: ResinClient, tmp_path: Path) -> None:
    tool = tmp_path / "my-tool"
    tool.write_text("#!/bin/sh\necho found me\n")
    tool.chmod(0o755)
    assert client.run(1, "my-tool", env={"PATH": f"{tmp_path}:/usr/bin:/bin"}).stdout == (
        b"found me\n")
    assert client.spawn(2, "my-tool") == v1.SpawnError(2, Atom("enoent"))


@both_spawners
def test_option_arg0(client: ResinClient) -> None:
    assert client.run(1, "sh", ["-c", 'echo "$0"'], arg0="custom-name").stdout == b"custom-name\n"


@both_spawners
def test_option_stdin_null(client: ResinClient) -> None:
    client.spawn(1, "sh", ["-c", "cat; echo eof; exec sleep 1000"], stdin="null")
    assert client.expect(lambda f: isinstance(f, v1.Stdout)) == v1.Stdout(1, b"eof\n")
    assert client.write(1, b"ignored") == AckStatus.CLOSED
    assert client.close_child_stdin(1) == OK
    assert client.signal(1, signal.SIGKILL) == OK
    assert client.collect(1).exit == v1.Exit(1, "signal", 9)


@both_spawners
def test_option_stderr_merged_and_discarded(client: ResinClient) -> None:
    script = ["-c", "echo one; echo two >&2; echo three"]
    merged = client.run(1, "sh", script, stderr="stdout")
    assert (merged.stdout, merged.stderr) == (b"one\ntwo\nthree\n", b"")
    discarded = client.run(2, "sh", script, stderr="discard")
    assert (discarded.stdout, discarded.stderr) == (b"one\nthree\n", b"")


def test_signal_to_pid_and_to_group(client: ResinClient) -> None:
    spawned = client.spawn(1, "sh", ["-c", "sleep 1000 & echo $!; wait"])
    assert isinstance(spawned, v1.Spawned)
    leader = spawned.os_pid
    out = client.expect(lambda f: isinstance(f, v1.Stdout))
    assert isinstance(out, v1.Stdout)
    member = int(out.data)
    assert client.signal(1, signal.SIGSTOP, group=False) == OK
    wait_until(lambda: proc_state(leader) == "T", what="leader stopped")
    assert proc_state(member) != "T"  # only the leader was stopped
    assert client.signal(1, signal.SIGSTOP, group=True) == OK
    wait_until(lambda: proc_state(member) == "T", what="member stopped")
    assert client.signal(1, signal.SIGKILL, group=True) == OK
    assert client.collect(1).exit == v1.Exit(1, "signal", 9)
    wait_gone(member)
    wait_gone(leader)


def test_signal_errors(client: ResinClient) -> None:
    assert client.signal(9, 15) == (ERROR, Atom("no_process"))
    assert isinstance(client.spawn(1, "cat"), v1.Spawned)
    assert client.signal(1, 12345) == (ERROR, Atom("einval"))
    assert client.signal(1, 0) == OK  # a liveness check
    ref = client.make_ref()
    client.send_packet(b"\x10" + encode_term((Atom("signal"), 1, ref, Atom("x"), Atom("true"))))
    assert client.recv() == v1.Reply(1, ref, (ERROR, (Atom("badarg"), Atom("signo"))))
    client.send_packet(b"\x10" + encode_term((Atom("signal"), 1, ref, 9, NIL)))
    assert client.recv() == v1.Reply(1, ref, (ERROR, (Atom("badarg"), Atom("group"))))
    assert client.close_child_stdin(1) == OK
    assert client.collect(1).exit == v1_exit(1, 0)
    assert client.signal(1, 15) == (ERROR, Atom("no_process"))


def test_refs_are_echoed_untouched(client: ResinClient) -> None:
    ref = (Atom("ref"), [1, 2, b"x"], 3.5, 2**70)
    assert client.request(v1.Signal(4, ref, 0, False)) == (ERROR, Atom("no_process"))


def test_close_stdin_after_queued_data(client: ResinClient) -> None:
    client.spawn(1, "sh", ["-c", "cat; echo EOF; exec sleep 1000"])
    for part in (b"a" * 70000, b"b" * 10, b"c"):
        for i in range(0, len(part), v1.MAX_DATA):
            client.send(v1.Stdin(1, part[i:i + v1.MAX_DATA]))
    ref = client.make_ref()
    client.send(v1.CloseStdin(1, ref))
    acks = [client.expect(lambda f: isinstance(f, v1.StdinAck)) for _ in range(4)]
    assert {a.status for a in acks if isinstance(a, v1.StdinAck)} == {AckStatus.WRITTEN}
    assert client.expect(lambda f: isinstance(f, v1.Reply)) == v1.Reply(1, ref, OK)
    assert client.write(1, b"too late") == AckStatus.CLOSED
    assert client.close_child_stdin(1) == OK  # idempotent
    out = b""
    while not out.endswith(b"EOF\n"):  # cat saw EOF after all the data
        frame = client.expect(lambda f: isinstance(f, v1.Stdout))
        assert isinstance(frame, v1.Stdout)
        out += frame.data
    assert out == b"a" * 70000 + b"b" * 10 + b"c" + b"EOF\n"
    client.signal(1, signal.SIGKILL, group=True)
    assert client.collect(1).exit == v1.Exit(1, "signal", 9)


def test_echo_round_trips_then_a_backed_up_write_keep_order(client: ResinClient) -> None:
    """Small writes to a reading child take resin's direct path (one packet
    per read, nothing queued); a write into a full pipe is queued and a close
    waits behind it. Every write is acked in order, the bytes arrive in order."""
    client.spawn(1, "cat")
    echoed = b""
    for i in range(200):
        msg = b"%03d" % i
        assert client.write(1, msg) == AckStatus.WRITTEN
        while len(echoed) < 3 * (i + 1):
            frame = client.expect(lambda f: isinstance(f, v1.Stdout))
            assert isinstance(frame, v1.Stdout)
            echoed += frame.data
    assert echoed == b"".join(b"%03d" % i for i in range(200))
    # A child that stopped itself before reading: its pipe fills, the rest of
    # the writes and the close wait in resin's queue.
    spawned = client.spawn(2, "sh", ["-c", "kill -STOP $$; cat; echo EOF"])
    assert isinstance(spawned, v1.Spawned)
    wait_until(lambda: proc_state(spawned.os_pid) == "T", what="the child to stop")
    big = bytes(range(256)) * 1024  # 256 KiB: more than the pipe holds
    frames = range(0, len(big), v1.MAX_DATA)
    for i in frames:
        client.send(v1.Stdin(2, big[i:i + v1.MAX_DATA]))
    ref = client.make_ref()
    client.send(v1.CloseStdin(2, ref))
    assert client.write(1, b"go") == AckStatus.WRITTEN  # the other child is not held up
    assert not [f for f in barrier(client) if isinstance(f, v1.Reply) and f.id == 2]
    client.signal(2, signal.SIGCONT)
    acks = [client.expect(lambda f: isinstance(f, v1.StdinAck) and f.id == 2) for _ in frames]
    assert {a.status for a in acks if isinstance(a, v1.StdinAck)} == {AckStatus.WRITTEN}
    assert client.expect(lambda f: isinstance(f, v1.Reply) and f.id == 2) == v1.Reply(2, ref, OK)
    assert client.collect(2).stdout == big + b"EOF\n"
    assert client.close_child_stdin(1) == OK
    assert client.collect(1).stdout == b"go"


def test_stdin_ack_epipe_and_no_process(client: ResinClient) -> None:
    client.spawn(1, "sh", ["-c", "exec 0<&-; echo ready; exec sleep 1000"])
    client.expect(lambda f: isinstance(f, v1.Stdout) and f.data == b"ready\n")
    assert client.write(1, b"nobody reads this") == AckStatus.EPIPE
    assert client.write(1, b"again") == AckStatus.EPIPE
    assert client.write(77, b"who?") == AckStatus.NO_PROCESS
    client.signal(1, signal.SIGKILL)
    assert client.collect(1).exit == v1.Exit(1, "signal", 9)
    assert client.write(1, b"after exit") == AckStatus.NO_PROCESS


def test_credit_zero_then_exact_grants(client: ResinClient) -> None:
    client.spawn(1, "sh", ["-c", "echo hello; echo done >&2"], credit=0)
    client.send(v1.Credit(1, StreamKind.STDERR, 100))
    # stderr is written after stdout: once it arrives, "hello" sits in the pipe.
    assert client.expect(lambda f: isinstance(f, v1.Stderr)) == v1.Stderr(1, b"done\n")
    assert not [f for f in barrier(client) if isinstance(f, v1.Stdout | v1.Exit)]
    client.send(v1.Credit(1, StreamKind.STDOUT, 3))
    assert client.expect(lambda f: isinstance(f, v1.Stdout)) == v1.Stdout(1, b"hel")
    assert not [f for f in barrier(client) if isinstance(f, v1.Stdout | v1.Exit)]
    client.send(v1.Credit(1, StreamKind.STDOUT, 2))
    assert client.expect(lambda f: isinstance(f, v1.Stdout)) == v1.Stdout(1, b"lo")
    assert not [f for f in barrier(client) if isinstance(f, v1.Stdout | v1.Exit)]
    client.send(v1.Credit(1, StreamKind.STDOUT, 1000))
    r = client.collect(1)
    assert r.stdout == b"\n" and r.exit == v1_exit(1, 0)
    client.send(v1.Credit(1, StreamKind.STDOUT, 10))  # unknown id now: ignored
    barrier(client)


def test_reads_never_exceed_credit(client: ResinClient) -> None:
    client.spawn(1, "head", ["-c", "100000", "/dev/zero"], credit=1000)
    got = 0
    while got < 100000:
        frame = client.expect(lambda f: isinstance(f, v1.Stdout))
        assert isinstance(frame, v1.Stdout) and len(frame.data) <= 1000
        got += len(frame.data)
        if got % 1000 == 0:
            client.send(v1.Credit(1, StreamKind.STDOUT, 1000))
    assert client.collect(1).exit == v1_exit(1, 0)


def test_noisy_child_without_credit_does_not_stall_others(client: ResinClient) -> None:
    client.spawn(1, "yes", credit=0)
    for i in range(2, 12):
        assert client.run(i, "/bin/echo", [str(i)]).stdout == b"%d\n" % i
    assert client.signal(1, signal.SIGKILL) == OK
    assert not [f for f in barrier(client) if isinstance(f, v1.Exit)]  # exit waits for the pipe
    client.send(v1.Credit(1, StreamKind.STDOUT, 10 << 20))
    r = client.collect(1)
    assert r.exit == v1.Exit(1, "signal", 9) and set(r.stdout) <= set(b"y\n")


def test_infinite_credit_frames_are_ignored(client: ResinClient) -> None:
    client.spawn(1, "cat")
    client.send(v1.Credit(1, StreamKind.STDOUT, 5))
    client.write(1, b"0123456789")
    client.close_child_stdin(1)
    assert client.collect(1).stdout == b"0123456789"


def test_big_output_is_split_into_max_data_frames(client: ResinClient) -> None:
    r = client.run(1, "head", ["-c", str(3 * v1.MAX_DATA + 7), "/dev/zero"])
    assert len(r.stdout) == 3 * v1.MAX_DATA + 7
    sizes = [len(f.data) for f in r.frames if isinstance(f, v1.Stdout)]
    assert max(sizes) <= v1.MAX_DATA


def test_no_data_frame_after_exit(client: ResinClient) -> None:
    client.spawn(1, "sh", ["-c", "head -c 300000 /dev/zero; exit 4"])
    r = client.collect(1)
    assert len(r.stdout) == 300000 and r.frames[-1] == v1_exit(1, 4)
    assert not [f for f in barrier(client) if getattr(f, "id", None) == 1]


def test_ids_span_u32(client: ResinClient) -> None:
    for id in (0, 2**31, 2**32 - 2):
        assert client.run(id, "/bin/echo", ["x"]).exit == v1_exit(id, 0)


def test_stdin_frame_header_is_big_endian(client: ResinClient) -> None:
    client.spawn(0x01020304, "head", ["-c", "2"])
    client.send_packet(b"\x11" + struct.pack(">I", 0x01020304) + b"ok")
    r = client.collect(0x01020304)
    assert r.stdout == b"ok"


def _wchar(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar")


def test_output_backlog_is_bounded_by_the_watermarks(client: ResinClient) -> None:
    """A client that does not read makes resin stop reading children (high
    water mark), so the child blocks instead of resin buffering everything."""
    total = 50_000_000
    spawned = client.spawn(1, "head", ["-c", str(total), "/dev/zero"])
    assert isinstance(spawned, v1.Spawned)
    pid = spawned.os_pid
    seen: list[int] = []

    def stalled() -> bool:
        # Blocked in write(2) with no progress between two looks.
        seen.append(_wchar(pid))
        return (proc_state(pid) == "S" and len(seen) > 1 and seen[-1] == seen[-2]
                and "pipe_write" in Path(f"/proc/{pid}/wchan").read_text())

    wait_until(stalled, what="the child to block on a full pipe")
    # out buffer (<= 1 MiB + one read) + resin's stdout pipe + the child's pipe
    # + what the client read during spawn: a few MiB, not 50 MB.
    assert seen[-1] < 8 << 20
    r = client.collect(1, timeout=30)
    assert len(r.stdout) == total and r.exit == v1_exit(1, 0)


def test_backlog_pause_holds_every_child_and_releases_them(client: ResinClient) -> None:
    """While resin's output is backed up, other children's output and exits
    wait (in order: data before exit) and all of it comes once it clears."""
    total = 8 << 20
    client.send_spawn(1, "head", ["-c", str(total), "/dev/zero"])
    for i in range(2, 12):
        client.send_spawn(i, "sh", ["-c", f"echo {i}; echo e{i} >&2; exit {i}"])
    # The spawns all go out before the client reads anything: the flood backs
    # resin's output up while the others run and exit.
    r = client.collect(1, timeout=30)
    assert len(r.stdout) == total and r.exit == v1_exit(1, 0)
    for i in range(2, 12):
        r = client.collect(i)
        assert (r.stdout, r.stderr, r.exit) == (f"{i}\n".encode(), f"e{i}\n".encode(),
                                                v1_exit(i, i))
        assert isinstance(r.frames[-1], v1.Exit)


def test_big_reads_split_into_frames_keep_every_byte_in_order(client: ResinClient,
                                                              tmp_path: Path) -> None:
    """A chatty child's pipe is enlarged and read up to 1 MiB at a time; the
    frames cut from each read must carry exactly the child's bytes."""
    data = os.urandom(5 << 20)
    (tmp_path / "data").write_bytes(data)
    r = client.run(1, "cat", [str(tmp_path / "data")])
    assert r.stdout == data
    sizes = [len(f.data) for f in r.frames if isinstance(f, v1.Stdout)]
    assert max(sizes) == OUTPUT_FRAME_DATA and len(sizes) < 2 * len(data) // v1.MAX_DATA
