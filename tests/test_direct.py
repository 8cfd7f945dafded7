"""Direct output (docs/protocol.md §4.3.3): the client reads a child's pipe
itself. The rules without a subprocess (protocol core, a fake Core, the
runtime over fake fds), then the same rules against a real resin."""

from __future__ import annotations

import os
import select
import struct
import time

import pytest
from conftest import wait_until
from runtime_fakes import Rig, parse_output
from test_sessions import spawned, v1_send, v1_session

from resin_py.protocol import v1
from resin_py.protocol.errors import BadArgument
from resin_py.protocol.etf import decode_term, encode_term
from resin_py.protocol.terms import Atom
from resin_py.protocol.v1 import StreamKind
from resin_py.runtime.children import DIRECT_RECHECK_MAX, DIRECT_RECHECK_MIN
from resin_py.testing import ResinClient

OUT, ERR = StreamKind.STDOUT, StreamKind.STDERR
DIRECT = Atom("direct")


# --- the protocol core -----------------------------------------------------------

def _spawn_term(opts: list[object]) -> bytes:
    return bytes((v1.CONTROL,)) + encode_term((Atom("spawn"), 1, b"cat", [], opts))


@pytest.mark.parametrize(("value", "direct"), [
    ([Atom("stdout")], (OUT,)),
    ([Atom("stderr"), Atom("stdout")], (ERR, OUT)),
    ([], ()),
])
def test_direct_option_parses(value: list[Atom], direct: tuple[StreamKind, ...]) -> None:
    frame = v1.decode_client_frame(_spawn_term([(DIRECT, value)]))
    assert isinstance(frame, v1.Spawn) and frame.options.direct == direct
    assert v1.decode_client_frame(v1.encode_client_frame(frame)) == frame


@pytest.mark.parametrize("opts", [
    [(DIRECT, Atom("stdout"))],  # not a list
    [(DIRECT, [Atom("stdin")])],
    [(DIRECT, [Atom("stdout"), Atom("stdout")])],
    [(DIRECT, [b"stdout"])],
    [(DIRECT, [Atom("stdout")]), (Atom("pty"), (24, 80))],  # a terminal is no pipe
    [(DIRECT, [Atom("stderr")]), (Atom("stderr"), Atom("stdout"))],  # merged
    [(DIRECT, [Atom("stderr")]), (Atom("stderr"), Atom("discard"))],
])
def test_bad_direct_option_is_badarg_direct(opts: list[object]) -> None:
    with pytest.raises(BadArgument) as info:
        v1.decode_client_frame(_spawn_term(opts))
    assert v1.error_event(info.value) == v1.SpawnError(1, (Atom("badarg"), DIRECT))


def test_relay_request_and_spawned_with_direct_round_trip() -> None:
    relay = v1.Relay(9)
    assert v1.decode_client_frame(v1.encode_client_frame(relay)) == relay
    ev = v1.Spawned(3, 4242, ((OUT, 17, 123456),))
    payload = v1.encode_resin_frame(ev)
    assert decode_term(payload[1:]) == (
        Atom("spawned"), 3, 4242, [(Atom("stdout"), 17, 123456)])
    assert v1.decode_resin_frame(payload) == ev
    # Without direct streams: the 3-tuple, as before.
    assert v1.decode_resin_frame(v1.encode_resin_frame(v1.Spawned(3, 4242))) == v1.Spawned(3, 4242)


# --- the session, over a fake Core -----------------------------------------------

def test_session_answers_a_direct_spawn_with_its_pipes() -> None:
    core, session = v1_session()
    v1_send(session, v1.Spawn(5, b"cat", options=v1.SpawnOptions(direct=(OUT,))))
    assert core.frames() == [v1.Spawned(5, 501, ((OUT, 45, 9005),))]


def test_session_relays_a_known_id_and_ignores_an_unknown_one() -> None:
    core, session = v1_session()
    spawned(core, session, 2)
    v1_send(session, v1.Relay(2))
    v1_send(session, v1.Relay(77))
    assert core.calls[-1] == ("relay", 2)
    assert ("relay", 77) not in core.calls
    assert core.frames() == []  # no reply, no error


# --- the runtime, over fake fds ------------------------------------------------------

def _rig() -> Rig:
    rig = Rig(high_water=10**6)
    rig.fds.stdout_room = 10**6
    return rig


def test_a_direct_pipe_is_never_watched_nor_read() -> None:
    rig = _rig()
    child = rig.spawn(1, credit=100, direct=(OUT,))
    out, err = child.pipes
    rig.fds.pipes[out.fd].data += b"for the client"
    rig.fds.pipes[err.fd].data += b"oops"
    assert not rig.poller.interest(out.fd) and rig.poller.interest(err.fd)
    rig.turn()
    rig.children.grant_credit(child, OUT, 10)  # credit does not make it watched
    rig.turn()
    assert not rig.poller.interest(out.fd)
    assert rig.fds.pipes[out.fd].data == b"for the client"
    assert parse_output(bytes(rig.fds.stdout))[0] == {(1, "e"): b"oops"}


class Clock:
    """A time.monotonic() the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_exit_waits_until_the_client_emptied_the_direct_pipe() -> None:
    rig = _rig()
    clock = rig.children.clock = Clock()
    child = rig.spawn(1, stderr=False, direct=(OUT,))
    pipe = rig.fds.pipes[child.pipes[0].fd]
    pipe.data += b"unread"
    pipe.writer_closed = True
    rig.children.exited(child, 0)
    rig.turn()
    assert parse_output(bytes(rig.fds.stdout))[1] == []
    assert id(child) in rig.children.direct_held and not pipe.closed  # resin's fd stays
    assert rig.children.direct_due == clock.now + DIRECT_RECHECK_MIN
    for _ in range(50):  # wakeups before it is due: no look, no backoff
        rig.children.recheck_direct(clock.now)
    assert rig.children.direct_delay == DIRECT_RECHECK_MIN
    for _ in range(10):  # nothing read yet: looked at less and less often
        clock.now = rig.children.direct_due
        rig.children.recheck_direct(clock.now)
    assert rig.children.direct_delay == DIRECT_RECHECK_MAX
    assert rig.children.direct_due == clock.now + DIRECT_RECHECK_MAX
    pipe.data.clear()  # the client read it all
    rig.children.recheck_direct(clock.now + 0.01)  # not due yet
    assert id(child) in rig.children.direct_held
    clock.now = rig.children.direct_due
    rig.children.recheck_direct(clock.now)
    rig.turn()
    assert parse_output(bytes(rig.fds.stdout))[1] == [1]
    assert pipe.closed and not rig.children.direct_held and len(rig.children) == 0
    assert rig.children.direct_delay == DIRECT_RECHECK_MIN


def test_an_empty_direct_pipe_still_written_to_holds_the_exit() -> None:
    """A killed writer may still be inside one write(2): an empty pipe with a
    writer left and members alive holds the exit until either is gone."""
    rig = _rig()
    alive = {"members": True}
    rig.children.members_alive = lambda child: alive["members"]
    child = rig.spawn(1, stderr=False, direct=(OUT,))
    pipe = rig.fds.pipes[child.pipes[0].fd]
    rig.children.exited(child, 0)  # empty, but not hung up
    rig.turn()
    assert parse_output(bytes(rig.fds.stdout))[1] == [] and not pipe.closed
    pipe.data += b"late page"  # the writer's last page
    alive["members"] = False  # then it died
    rig.children.recheck_direct(rig.children.direct_due)
    assert parse_output(bytes(rig.fds.stdout))[1] == []  # not empty
    pipe.data.clear()
    rig.children.recheck_direct(rig.children.direct_due)
    rig.turn()
    assert parse_output(bytes(rig.fds.stdout))[1] == [1]
    # With members alive, a hang-up (no writer left) is enough.
    alive["members"] = True
    child = rig.spawn(2, stderr=False, direct=(OUT,))
    rig.fds.pipes[child.pipes[0].fd].writer_closed = True
    rig.children.exited(child, 0)
    rig.turn()
    assert parse_output(bytes(rig.fds.stdout))[1] == [1, 2]


def test_direct_fd_stays_open_until_the_exit_is_reported() -> None:
    """Another stream holding the exit (no credit, or a second direct pipe
    unread) keeps an emptied direct pipe's descriptor open: the client may
    still open /proc/<resin>/fd/<fd> until the exit."""
    rig = _rig()
    child = rig.spawn(1, credit=0, direct=(OUT,))  # stderr captured, no credit
    out, err = child.pipes
    rig.fds.pipes[out.fd].writer_closed = True
    rig.fds.pipes[err.fd].data += b"waits for credit"
    rig.children.exited(child, 0)
    rig.turn()
    assert parse_output(bytes(rig.fds.stdout))[1] == []
    assert not rig.fds.pipes[out.fd].closed
    rig.children.grant_credit(child, ERR, 100)
    rig.turn()
    assert parse_output(bytes(rig.fds.stdout))[1] == [1]
    assert rig.fds.pipes[out.fd].closed and rig.fds.pipes[err.fd].closed
    child = rig.spawn(2, direct=(OUT, ERR))
    out, err = child.pipes
    rig.fds.pipes[out.fd].writer_closed = rig.fds.pipes[err.fd].writer_closed = True
    rig.fds.pipes[err.fd].data += b"unread"
    rig.children.exited(child, 0)
    rig.turn()
    assert not rig.fds.pipes[out.fd].closed and not rig.fds.pipes[err.fd].closed
    rig.fds.pipes[err.fd].data.clear()
    rig.children.recheck_direct(rig.children.direct_due)
    rig.turn()
    assert parse_output(bytes(rig.fds.stdout))[1] == [1, 2]
    assert rig.fds.pipes[out.fd].closed and rig.fds.pipes[err.fd].closed


def test_an_empty_direct_pipe_does_not_hold_the_exit() -> None:
    rig = _rig()
    child = rig.spawn(1, stderr=False, direct=(OUT,))
    rig.children.exited(child, 0)
    rig.turn()
    assert parse_output(bytes(rig.fds.stdout))[1] == [1]
    assert rig.fds.pipes[child.pipes[0].fd].closed and not rig.children.direct_held


def test_relay_reads_the_direct_pipe_and_then_reports_the_exit() -> None:
    rig = _rig()
    child = rig.spawn(1, stderr=False, direct=(OUT,))
    pipe = rig.fds.pipes[child.pipes[0].fd]
    pipe.data += b"left behind"
    rig.children.exited(child, 0)
    rig.turn()
    assert parse_output(bytes(rig.fds.stdout))[1] == []
    rig.children.relay(child)
    rig.turn()
    streams, exits, _ = parse_output(bytes(rig.fds.stdout))
    assert streams == {(1, "o"): b"left behind"} and exits == [1]
    assert not rig.children.direct_held


def test_relay_of_a_running_child_watches_its_pipe_under_its_credit() -> None:
    rig = _rig()
    child = rig.spawn(1, credit=4, stderr=False, direct=(OUT,))
    out = child.pipes[0]
    rig.fds.pipes[out.fd].data += b"abcdefgh"
    rig.children.relay(child)
    assert rig.poller.interest(out.fd)
    rig.turn()
    rig.turn()
    assert parse_output(bytes(rig.fds.stdout))[0] == {(1, "o"): b"abcd"}


def test_shutdown_does_not_wait_for_a_direct_pipe() -> None:
    rig = _rig()
    child = rig.spawn(1, stderr=False, direct=(OUT,))
    rig.fds.pipes[child.pipes[0].fd].data += b"nobody reads this"
    rig.children.exited(child, 0)
    assert id(child) in rig.children.direct_held
    rig.children.shutdown()
    rig.turn()
    assert parse_output(bytes(rig.fds.stdout))[1] == [1]
    assert not rig.children.direct_held


# --- end to end, against a real resin --------------------------------------------------

def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def test_client_reads_stdout_itself_every_byte_then_the_exit(client: ResinClient) -> None:
    n = 2_000_000  # about 15 MB of lines, in order
    sp = client.spawn(1, "sh", ["-c", f"seq 1 {n}; echo done >&2; exit 3"], direct=(OUT,))
    assert isinstance(sp, v1.Spawned) and [k for k, _, _ in sp.direct] == [OUT]
    data = _read_all(client.open_direct(sp)[OUT])
    r = client.collect(1)
    assert r.exit == v1.Exit(1, "exit", 3)
    assert r.stdout == b""  # not one STDOUT frame: the client read it all itself
    assert r.stderr == b"done\n"  # stderr was not direct: relayed as always
    assert data == "".join(f"{i}\n" for i in range(1, n + 1)).encode()


def test_exit_is_held_while_the_client_has_not_read(client: ResinClient) -> None:
    sp = client.spawn(1, "sh", ["-c", "echo last words"], direct=(OUT,))
    assert isinstance(sp, v1.Spawned)
    own = client.open_direct(sp)[OUT]
    # The child has exited (its pipe is at EOF once read), but its exit
    # waits for this client to read what it wrote.
    select.select([own], [], [], 10)
    ticket = client.spawn(2, "true", [])  # a round trip through resin
    assert isinstance(ticket, v1.Spawned)
    client.collect(2)
    assert not any(isinstance(f, v1.Exit) and f.id == 1 for f in client._stash)
    assert _read_all(own) == b"last words\n"
    assert client.collect(1).exit == v1.Exit(1, "exit", 0)


def test_child_gone_before_the_client_opened_its_pipe(client: ResinClient) -> None:
    sp = client.spawn(1, "sh", ["-c", "echo early"], direct=(OUT,))
    assert isinstance(sp, v1.Spawned)
    pid = sp.os_pid
    wait_until(lambda: not os.path.exists(f"/proc/{pid}"), timeout=10)
    # resin still holds the pipe (its exit waits for the read): the client can open it.
    assert _read_all(client.open_direct(sp)[OUT]) == b"early\n"
    assert client.collect(1).exit == v1.Exit(1, "exit", 0)


def test_relay_hands_the_pipe_back_to_resin(client: ResinClient) -> None:
    sp = client.spawn(1, "sh", ["-c", "printf relayed"], direct=(OUT,))
    assert isinstance(sp, v1.Spawned)
    client.send(v1.Relay(1))
    r = client.collect(1)
    assert (r.stdout, r.exit) == (b"relayed", v1.Exit(1, "exit", 0))


def test_a_descendant_that_keeps_writing_cannot_hold_the_exit(client: ResinClient) -> None:
    # The leader leaves a writer behind in a session of its own; resin kills
    # everything left (cgroup or process tree) before it waits for the pipe.
    sp = client.spawn(1, "sh", ["-c", "setsid yes & echo started"],
                      direct=(OUT,))
    assert isinstance(sp, v1.Spawned)
    own = client.open_direct(sp)[OUT]
    deadline = time.monotonic() + 30
    while True:  # read until EOF: every writer is dead
        chunk = os.read(own, 1 << 20)
        if not chunk:
            break
        assert time.monotonic() < deadline, "the escaped writer was not killed"
    os.close(own)
    assert client.collect(1, timeout=30).exit == v1.Exit(1, "exit", 0)


def test_direct_spawn_refused_with_a_terminal(client: ResinClient) -> None:
    r = client.spawn(1, "true", [], direct=(OUT,), pty=(24, 80))
    assert r == v1.SpawnError(1, (Atom("badarg"), DIRECT))
    assert client.run(2, "echo", ["still serving"]).stdout == b"still serving\n"


# --- direct_after: resin relays the start, then hands the pipe over ----------------

def _records(out: bytes) -> list[tuple[str, int, bytes]]:
    """resin's stdout under the fake session, record by record, in order."""
    records, pos = [], 0
    while pos < len(out):
        tag, id, n = struct.unpack_from(">cII", out, pos)
        pos += 9
        records.append((tag.decode(), id, out[pos:pos + n]))
        pos += n
    return records


def test_direct_after_option_parses_and_keeps_the_plain_spawned() -> None:
    frame = v1.decode_client_frame(_spawn_term([(DIRECT, [Atom("stdout")]),
                                                (Atom("direct_after"), 65536)]))
    assert isinstance(frame, v1.Spawn) and frame.options.direct_after == 65536
    assert v1.decode_client_frame(v1.encode_client_frame(frame)) == frame
    with pytest.raises(BadArgument):
        v1.decode_client_frame(_spawn_term([(Atom("direct_after"), -1)]))
    core, session = v1_session()
    v1_send(session, v1.Spawn(5, b"cat", options=v1.SpawnOptions(direct=(OUT,),
                                                                   direct_after=10)))
    assert core.frames() == [v1.Spawned(5, 501)]
    session.on_direct(session.procs[5], ((OUT, 12, 345),))
    ev = v1.Direct(5, ((OUT, 12, 345),))
    assert core.frames() == [ev]
    payload = v1.encode_resin_frame(ev)
    assert decode_term(payload[1:]) == (Atom("direct"), 5, [(Atom("stdout"), 12, 345)])


def test_pipe_goes_direct_once_resin_took_enough_and_frames_come_first() -> None:
    rig = _rig()
    child = rig.spawn(1, stderr=False, direct=(OUT,), direct_after=10)
    out = child.pipes[0]
    fake = rig.fds.pipes[out.fd]
    fake.data += b"0123"
    rig.turn()
    assert not out.direct and rig.poller.interest(out.fd)  # 4 bytes: still relayed
    fake.data += b"456789abcdefghij"
    for _ in range(5):
        rig.turn()
    assert out.direct and not rig.poller.interest(out.fd)
    records = _records(bytes(rig.fds.stdout))
    assert records[-1] == ("d", 1, out.fd.to_bytes(4, "big"))  # the hand-over, last
    relayed = b"".join(data for tag, _, data in records if tag == "o")
    assert len(relayed) >= 10 and b"0123456789abcdefghij".startswith(relayed)
    assert bytes(fake.data) == b"0123456789abcdefghij"[len(relayed):]  # the client's now
    fake.data.clear()
    rig.children.exited(child, 0)
    rig.turn()
    assert _records(bytes(rig.fds.stdout))[-1] == ("x", 1, b"")


def test_a_short_output_never_goes_direct() -> None:
    rig = _rig()
    child = rig.spawn(1, stderr=False, direct=(OUT,), direct_after=100)
    rig.fds.pipes[child.pipes[0].fd].data += b"short"
    rig.fds.pipes[child.pipes[0].fd].writer_closed = True
    rig.turn()
    rig.children.exited(child, 0)
    rig.turn()
    assert [tag for tag, _, _ in _records(bytes(rig.fds.stdout))] == ["o", "x"]


def test_direct_after_end_to_end_relays_the_start_then_the_client_reads(
        client: ResinClient) -> None:
    size, after = 8 * 1024 * 1024, 1024 * 1024
    sp = client.spawn(1, "head", ["-c", str(size), "/dev/zero"], direct=(OUT,),
                      direct_after=after)
    assert sp == v1.Spawned(1, sp.os_pid)  # no pipes in it: they come later
    relayed = 0
    while True:
        frame = client.expect(lambda f: getattr(f, "id", None) == 1)
        if isinstance(frame, v1.Direct):
            break
        assert isinstance(frame, v1.Stdout), frame
        relayed += len(frame.data)
    assert after <= relayed < size
    own = client.open_direct(v1.Spawned(1, sp.os_pid, frame.pipes))[OUT]
    rest = _read_all(own)
    assert relayed + len(rest) == size and rest.count(0) == len(rest)
    r = client.collect(1)
    assert r.exit == v1.Exit(1, "exit", 0) and r.stdout == b""


def test_direct_after_with_a_short_output_is_all_frames(client: ResinClient) -> None:
    sp = client.spawn(1, "echo", ["just frames"], direct=(OUT,), direct_after=65536)
    assert isinstance(sp, v1.Spawned) and not sp.direct
    r = client.collect(1)
    assert r.stdout == b"just frames\n" and not any(isinstance(f, v1.Direct) for f in r.frames)


@pytest.mark.parametrize("seed", range(20))
def test_going_direct_with_stdout_backed_up_never_tears_nor_loses(seed: int) -> None:
    """resin's stdout takes a few bytes at a time (frames pending, pipes
    parked) when the hand-over is due: every byte is either in a frame before
    the `direct` record or still in the pipe for the client, in order."""
    import random

    rnd = random.Random(seed)
    rig = Rig(high_water=rnd.choice([20, 64, 1000]), low_water=10)
    child = rig.spawn(1, stderr=False, direct=(OUT,), direct_after=rnd.randint(1, 30))
    other = rig.spawn(2, stderr=False)
    fake = rig.fds.pipes[child.pipes[0].fd]
    sent = bytes(rnd.randrange(256) for _ in range(200))
    fed = 0
    for _ in range(300):
        if fed < len(sent) and not child.pipes[0].direct:
            n = rnd.randint(0, 17)
            fake.data += sent[fed:fed + n]
            fed += n
        rig.fds.pipes[other.pipes[0].fd].data += b"x" * rnd.randint(0, 3)
        rig.fds.stdout_room = rnd.choice([0, 1, 3, 7, 20])
        rig.turn()
        assert rig.stalled() is None
    rig.fds.stdout_room = 10**6
    for _ in range(10):
        rig.turn()
    records = _records(bytes(rig.fds.stdout))
    tags = [tag for tag, id, _ in records if id == 1]
    relayed = b"".join(data for tag, id, data in records if id == 1 and tag == "o")
    if "d" in tags:
        assert tags.index("d") == len(tags) - 1  # nothing of it after the hand-over
        assert relayed + bytes(fake.data) == sent[:fed]
    else:
        assert relayed == sent[:fed] and not fake.data


def test_direct_after_without_direct_is_badarg() -> None:
    with pytest.raises(BadArgument) as info:
        v1.decode_client_frame(_spawn_term([(Atom("direct_after"), 10)]))
    assert v1.error_event(info.value) == v1.SpawnError(1, (Atom("badarg"), Atom("direct_after")))


def test_relay_before_the_hand_over_keeps_the_stream_relayed() -> None:
    rig = _rig()
    child = rig.spawn(1, stderr=False, direct=(OUT,), direct_after=4)
    out = child.pipes[0]
    rig.children.relay(child)
    rig.fds.pipes[out.fd].data += b"0123456789"
    for _ in range(3):
        rig.turn()
    assert not out.direct
    assert parse_output(bytes(rig.fds.stdout))[0] == {(1, "o"): b"0123456789"}


def test_a_reaped_childs_pipe_is_not_handed_over() -> None:
    # Parked with enough taken, then the child exits, then stdout clears: the
    # rest is relayed (drain), never handed over after the exit.
    rig = Rig(high_water=8, low_water=4)
    child = rig.spawn(1, stderr=False, direct=(OUT,), direct_after=4)
    out = child.pipes[0]
    fake = rig.fds.pipes[out.fd]
    fake.data += b"x" * 40
    rig.fds.stdout_room = 0
    for _ in range(3):
        rig.turn()
    fake.writer_closed = True
    rig.children.exited(child, 0)
    rig.fds.stdout_room = 10**6
    for _ in range(5):
        rig.turn()
    assert not out.direct
    records = _records(bytes(rig.fds.stdout))
    assert [t for t, _, _ in records if t != "o"] == ["x"]
    assert b"".join(d for t, _, d in records if t == "o") == b"x" * 40


def test_resin_looks_at_held_exits_when_due_before_its_waits() -> None:
    """Resin.settle (before every wait) rechecks held exits once due, and the
    loop's wait is bounded by when they are due."""
    from test_runtime import stdin_resin

    from resin_py.runtime.children import Child, OutPipe

    resin, fds, session, _ = stdin_resin()
    resin.children.session = session
    exits: list[int] = []
    session.on_exit = lambda child: exits.append(child.id)  # type: ignore[method-assign]
    clock = resin.children.clock = Clock()
    fd = fds.new_pipe()
    fds.pipes[fd].data += b"unread"
    fds.pipes[fd].writer_closed = True
    child = Child(1, 4242, -1, [OutPipe(fd, OUT, None, direct=True)])
    resin.children.add(child)
    resin.children.exited(child, 0)
    for _ in range(7):  # wakeups before it is due (the review's "7 turns")
        resin.settle()
    assert resin.children.direct_delay == DIRECT_RECHECK_MIN and exits == []
    fds.pipes[fd].data.clear()
    resin.settle()
    assert exits == []  # not due yet
    clock.now += DIRECT_RECHECK_MIN
    resin.settle()
    assert exits == [1] and fds.pipes[fd].closed
