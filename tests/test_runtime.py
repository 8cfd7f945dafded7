"""Unit tests of resin's runtime parts over a fake descriptor layer: no
subprocess, no timing. The model-based test is in test_runtime_model.py."""

from __future__ import annotations

from collections.abc import Callable

from runtime_fakes import STDOUT_FD, FakeFds, FakePoller, RecordingSession, Rig, parse_output

from resin_py.protocol.common import StreamKind
from resin_py.protocol.framing import encode_packet
from resin_py.protocol.session import StdinResult
from resin_py.runtime.children import Child, OutPipe
from resin_py.runtime.loop import READ, WRITE
from resin_py.runtime.outbox import Outbox
from resin_py.runtime.server import HANGUP, Resin
from resin_py.spawn import ChildSetup


class LegacyOutbox(Outbox):
    """The flush order resin had before the split (server.py `_flush`): the
    interest in stdout was decided *before* the resume callback ran, so bytes
    the resume queued (a held child's last output and its exit) sat unwatched
    while the loop slept."""

    def flush(self) -> None:
        self._write()
        self._poller.set_interest(self.fd, WRITE if self._queue else 0, self.flush)
        if self.paused and self.size < self.low_water:
            self.paused = False
            self.on_pause_change(False)


def held_exit_scenario(rig: Rig) -> None:
    """A chatty child fills resin's stdout past the high watermark and exits
    while output is paused; then the client reads a little at a time."""
    child = rig.spawn(1, stderr=False)
    pipe = rig.fds.pipes[child.pipes[0].fd]
    pipe.data += b"x" * 60
    pipe.writer_closed = True
    rig.fds.stdout_room = 0
    for _ in range(20):  # read until paused: output backs up in the outbox
        rig.turn()
    assert rig.outbox.paused
    rig.children.exited(child, 0)  # reaped while paused: its exit is held
    assert id(child) in rig.children.held
    # The client makes room for exactly the backlog: the flush writes it all,
    # drops below the low watermark, resumes, drains the held child, and the
    # stdout pipe is full again (EAGAIN) with the rest queued.
    rig.fds.stdout_room = rig.outbox.size
    rig.settle()


def test_held_exit_keeps_stdout_watched() -> None:
    """The regression: bytes queued by the resume are watched before the wait."""
    rig = Rig(high_water=32, low_water=16, stdout_pipe=False)
    held_exit_scenario(rig)
    assert rig.outbox.size > 0
    assert rig.poller.interest(STDOUT_FD) & WRITE
    assert rig.stalled() is None
    rig.fds.stdout_room = 10**6
    for _ in range(5):
        rig.turn()
    streams, exits, rest = parse_output(bytes(rig.fds.stdout))
    assert streams == {(1, "o"): b"x" * 60}
    assert exits == [1]
    assert rest == 0


def test_old_flush_order_loses_the_exit() -> None:
    """The same scenario with the old order: pending bytes, stdout unwatched."""
    rig = Rig(high_water=32, low_water=16, outbox_class=LegacyOutbox, stdout_pipe=False)
    held_exit_scenario(rig)
    assert rig.outbox.size > 0
    assert not rig.poller.interest(STDOUT_FD)
    assert rig.stalled() is not None


def test_outbox_partial_writes_keep_order() -> None:
    rig = Rig(high_water=1000, low_water=10)
    rig.outbox.push(b"abc", b"defg", memoryview(b"hij"))
    rig.fds.stdout_room = 2
    rig.settle()
    assert rig.poller.interest(STDOUT_FD) & WRITE
    rig.fds.stdout_room = 4
    rig.settle()
    rig.fds.stdout_room = 100
    rig.settle()
    assert bytes(rig.fds.stdout) == b"abcdefghij"
    assert rig.outbox.size == 0
    assert not rig.poller.interest(STDOUT_FD)


def test_outbox_pause_and_resume_callbacks() -> None:
    rig = Rig(high_water=10, low_water=4)
    changes: list[bool] = []
    rig.outbox.on_pause_change = changes.append
    rig.outbox.push(b"x" * 11)
    assert changes == [True] and rig.outbox.paused
    rig.fds.stdout_room = 6  # 5 left: still above the low watermark
    rig.settle()
    assert changes == [True]
    rig.fds.stdout_room = 2  # 3 left
    rig.settle()
    assert changes == [True, False] and not rig.outbox.paused


def test_outbox_broken_stdout_drops_and_reports() -> None:
    rig = Rig()
    errors: list[OSError] = []
    rig.outbox.on_broken = errors.append

    def broken(fd: int, bufs: object) -> int:
        raise BrokenPipeError

    rig.fds.writev = broken  # type: ignore[method-assign]
    rig.outbox.push(b"abc")
    rig.settle()
    assert len(errors) == 1 and rig.outbox.size == 0
    assert not rig.poller.interest(STDOUT_FD)


def test_pipe_watched_only_with_credit() -> None:
    rig = Rig(high_water=10**6)
    rig.fds.stdout_room = 10**6
    child = rig.spawn(1, credit=5, stderr=False)
    out = child.pipes[0]
    rig.fds.pipes[out.fd].data += b"0123456789"
    rig.turn()
    assert out.credit == 0
    assert not rig.poller.interest(out.fd)  # no credit: not watched
    rig.children.grant_credit(child, StreamKind.STDOUT, 3)
    assert rig.poller.interest(out.fd)
    rig.turn()
    rig.turn()
    assert parse_output(bytes(rig.fds.stdout))[0] == {(1, "o"): b"01234567"}


def test_exit_waits_for_credit_then_comes_last() -> None:
    rig = Rig(high_water=10**6)
    rig.fds.stdout_room = 10**6
    child = rig.spawn(1, credit=4, stderr=False)
    pipe = rig.fds.pipes[child.pipes[0].fd]
    pipe.data += b"abcdefgh"
    pipe.writer_closed = True
    rig.turn()
    rig.children.exited(child, 0)
    rig.turn()
    streams, exits, _ = parse_output(bytes(rig.fds.stdout))
    assert exits == [] and streams == {(1, "o"): b"abcd"}
    rig.children.grant_credit(child, StreamKind.STDOUT, 100)
    rig.turn()
    streams, exits, _ = parse_output(bytes(rig.fds.stdout))
    assert streams == {(1, "o"): b"abcdefgh"} and exits == [1]
    assert len(rig.children) == 0
    assert all(rig.fds.pipes[p.fd].closed for p in child.pipes)


def test_empty_pipe_without_credit_does_not_hold_the_exit() -> None:
    rig = Rig(high_water=10**6)
    rig.fds.stdout_room = 10**6
    child = rig.spawn(1, credit=3, stderr=False)
    rig.fds.pipes[child.pipes[0].fd].data += b"abc"
    rig.turn()
    assert child.pipes[0].credit == 0
    rig.children.exited(child, 0)  # nothing left in the pipe, a grandchild keeps it open
    rig.turn()
    assert parse_output(bytes(rig.fds.stdout))[1] == [1]


def test_shutdown_releases_exits_held_for_credit() -> None:
    rig = Rig(high_water=10**6)
    rig.fds.stdout_room = 10**6
    child = rig.spawn(1, credit=2, stderr=False)
    rig.fds.pipes[child.pipes[0].fd].data += b"abcdef"
    rig.turn()
    rig.children.exited(child, 0)
    assert id(child) in rig.children.held
    rig.children.shutdown()
    rig.turn()
    assert parse_output(bytes(rig.fds.stdout))[1] == [1]


def test_stdin_answers_once_in_order_and_broken_at_exit() -> None:
    rig = Rig()
    child = rig.spawn(1)
    stdin = rig.fds.pipes[child.stdin_fd]
    stdin.room = 5
    rig.children.write_stdin(child, b"abc")
    rig.children.write_stdin(child, b"defg")  # 2 bytes fit, then EAGAIN
    rig.children.write_stdin(child, b"")
    assert rig.session.stdin_results[1] == [StdinResult.WRITTEN]
    assert rig.poller.interest(child.stdin_fd) & WRITE
    assert child.queued_writes == 2 and child.queued_bytes == 2
    assert rig.children.stdin_bytes == 2
    stdin.room = 100
    rig.turn()
    assert rig.session.stdin_results[1] == [StdinResult.WRITTEN] * 3
    assert bytes(stdin.data) == b"abcdefg"
    assert not rig.poller.interest(child.stdin_fd)
    stdin.room = 0
    rig.children.write_stdin(child, b"late")
    rig.children.close_stdin(child, "ref")
    rig.children.exited(child, 0)
    assert rig.session.stdin_results[1][3:] == [StdinResult.BROKEN]
    assert rig.children.stdin_bytes == 0
    assert stdin.closed


class CountingPoller:
    """Counts what is stated about one descriptor."""

    def __init__(self, rig: Rig, fd: int) -> None:
        self.calls: list[int] = []
        real = rig.poller.set_interest

        def spy(fd_: int, events: int, handler: Callable[[], None]) -> None:
            if fd_ == fd:
                self.calls.append(events)
            real(fd_, events, handler)

        rig.poller.set_interest = spy  # type: ignore[method-assign]


def test_stdin_write_with_nothing_queued_is_written_at_once() -> None:
    """The fast path: one write, answered at once, never queued or watched."""
    rig = Rig()
    child = rig.spawn(1)
    stdin = rig.fds.pipes[child.stdin_fd]
    spy = CountingPoller(rig, child.stdin_fd)
    rig.children.write_stdin(child, b"abc")
    rig.children.write_stdin(child, b"")  # no bytes: answered without a write
    rig.children.write_stdin(child, b"de")
    assert rig.session.stdin_results[1] == [StdinResult.WRITTEN] * 3
    assert bytes(stdin.data) == b"abcde"
    assert spy.calls == []
    assert child.queued_writes == 0 and child.queued_bytes == 0
    assert rig.children.stdin_bytes == 0 and not child.queue


def test_stdin_partial_write_queues_the_rest_and_watches() -> None:
    rig = Rig()
    child = rig.spawn(1)
    stdin = rig.fds.pipes[child.stdin_fd]
    stdin.room = 2
    rig.children.write_stdin(child, b"abcd")
    assert rig.session.stdin_results.get(1) is None  # not all written: no answer yet
    assert child.queued_writes == 1 and child.queued_bytes == 2
    assert rig.children.stdin_bytes == 2
    assert rig.poller.interest(child.stdin_fd) & WRITE
    rig.children.write_stdin(child, b"ef")  # behind the queued rest, not before it
    stdin.room = 100
    rig.turn()
    assert rig.session.stdin_results[1] == [StdinResult.WRITTEN] * 2
    assert bytes(stdin.data) == b"abcdef"
    assert not rig.poller.interest(child.stdin_fd)
    assert child.queued_writes == 0 and rig.children.stdin_bytes == 0
    rig.children.write_stdin(child, b"g")  # empty queue again: at once
    assert rig.session.stdin_results[1][-1] == StdinResult.WRITTEN
    assert bytes(stdin.data) == b"abcdefg"


def test_stdin_full_pipe_queues_the_write() -> None:
    rig = Rig()
    child = rig.spawn(1)
    stdin = rig.fds.pipes[child.stdin_fd]
    stdin.room = 0
    rig.children.write_stdin(child, b"ab")
    rig.children.close_stdin(child, "ref")  # after the queued write, not before
    assert rig.session.stdin_results.get(1) is None and not rig.session.closed_refs
    assert child.queued_bytes == 2 and rig.poller.interest(child.stdin_fd) & WRITE
    stdin.room = 10
    rig.turn()
    assert rig.session.stdin_results[1] == [StdinResult.WRITTEN]
    assert rig.session.closed_refs == [(1, "ref")]
    assert bytes(stdin.data) == b"ab" and stdin.closed


def test_stdin_epipe_with_nothing_queued_closes_and_answers_broken() -> None:
    rig = Rig()
    child = rig.spawn(1)
    stdin = rig.fds.pipes[child.stdin_fd]
    stdin.reader_closed = True
    rig.children.write_stdin(child, b"abc")
    assert rig.session.stdin_results[1] == [StdinResult.BROKEN]
    assert stdin.closed and not rig.poller.interest(child.stdin_fd)
    assert child.queued_writes == 0 and rig.children.stdin_bytes == 0


def test_stdin_after_close_is_answered_closed() -> None:
    rig = Rig()
    child = rig.spawn(1)
    rig.children.close_stdin(child, "r1")
    rig.children.write_stdin(child, b"x")
    assert rig.session.closed_refs == [(1, "r1")]
    assert rig.session.stdin_results[1] == [StdinResult.CLOSED]


def test_child_closing_its_stdin_answers_broken() -> None:
    rig = Rig()
    child = rig.spawn(1)
    rig.fds.pipes[child.stdin_fd].reader_closed = True
    rig.children.write_stdin(child, b"abc")
    rig.children.write_stdin(child, b"def")
    assert rig.session.stdin_results[1] == [StdinResult.BROKEN] * 2


def test_parked_pipes_resume_when_backlog_clears() -> None:
    rig = Rig(high_water=20, low_water=10, stdout_pipe=False)  # the read path
    a = rig.spawn(1, stderr=False)
    b = rig.spawn(2, stderr=False)
    rig.fds.pipes[a.pipes[0].fd].data += b"a" * 40
    rig.fds.pipes[b.pipes[0].fd].data += b"b" * 40
    for _ in range(10):
        rig.turn()
        assert rig.stalled() is None
    assert rig.outbox.paused and rig.children.parked
    rig.fds.stdout_room = 10**6
    for _ in range(20):
        rig.turn()
        assert rig.stalled() is None
    streams = parse_output(bytes(rig.fds.stdout))[0]
    assert streams == {(1, "o"): b"a" * 40, (2, "o"): b"b" * 40}


def test_pid_reused_while_an_exit_is_held() -> None:
    """A reaped child whose exit waits for credit no longer owns its pid: a
    new child may get it, and both exits are reported."""
    rig = Rig(high_water=10**6)
    rig.fds.stdout_room = 10**6
    a = rig.spawn(1, credit=2, stderr=False)
    rig.fds.pipes[a.pipes[0].fd].data += b"abcdef"
    rig.turn()
    rig.children.exited(a, 0)  # held: 4 bytes wait for credit
    b = Child(2, a.pid, rig.fds.new_pipe(),
              [OutPipe(rig.fds.new_pipe(), StreamKind.STDOUT, None)])
    rig.children.add(b)  # the kernel gave a's pid to b
    assert rig.children.get(a.pid) is b and len(rig.children) == 2
    rig.fds.pipes[b.pipes[0].fd].writer_closed = True
    rig.children.exited(b, 0)
    rig.turn()
    assert parse_output(bytes(rig.fds.stdout))[1] == [2]
    rig.children.grant_credit(a, StreamKind.STDOUT, 10)
    rig.turn()
    streams, exits, _ = parse_output(bytes(rig.fds.stdout))
    assert exits == [2, 1] and streams[(1, "o")] == b"abcdef"
    assert len(rig.children) == 0


def test_children_in_a_row_join_their_cgroup_a_lone_one_is_created_in_it() -> None:
    from resin_py.runtime.server import CGROUP_BURST, cgroup_clone

    assert cgroup_clone(100.0, -1.0)  # the first child of a resin
    assert not cgroup_clone(100.0 + CGROUP_BURST / 2, 100.0)  # a burst: migrations are warm
    assert cgroup_clone(100.0 + 2 * CGROUP_BURST, 100.0)  # after a pause: maybe cold


# --- output by splice(2) -------------------------------------------------------------


def frames(out: bytes) -> list[tuple[bytes, int, int]]:
    """The records on resin's stdout (tag, id, length): every one whole."""
    rest = parse_output(out)[2]
    assert rest == 0, f"a torn frame: {rest} bytes left over"
    got, pos = [], 0
    while pos < len(out):
        tag, id, n = out[pos], int.from_bytes(out[pos + 1:pos + 5], "big"), \
            int.from_bytes(out[pos + 5:pos + 9], "big")
        got.append((bytes([tag]), id, n))
        pos += 9 + n
    return got


def test_partial_splices_never_tear_a_frame() -> None:
    """stdout takes a few bytes at a time: each frame begun is finished
    before any other bytes (another child's frames, an exit) go out."""
    rig = Rig(high_water=1000, low_water=10)
    a = rig.spawn(1, stderr=False)
    b = rig.spawn(2, stderr=False, source="pty")  # read path: queued bytes
    pa, pb = rig.fds.pipes[a.pipes[0].fd], rig.fds.pipes[b.pipes[0].fd]
    pa.data += bytes(range(40))
    pb.data += b"b" * 20
    pb.writer_closed = True
    rig.children.exited(b, 0)
    pending_seen = False
    for room in [0, 3, 1, 0, 7, 2, 5, 1, 9, 4, 11, 3] * 10:
        rig.fds.stdout_room = room
        rig.turn()
        pending_seen |= rig.outbox._src >= 0
        assert rig.stalled() is None
    rig.fds.stdout_room = 10**6
    for _ in range(5):
        rig.turn()
    assert pending_seen
    assert rig.fds.spliced == 40  # a's bytes never went through resin
    streams, exits, _ = parse_output(bytes(rig.fds.stdout))
    assert streams == {(1, "o"): bytes(range(40)), (2, "o"): b"b" * 20}
    assert exits == [2]
    assert all(n <= 5 for tag, id, n in frames(bytes(rig.fds.stdout)) if id == 1)


def test_spliced_output_never_exceeds_credit() -> None:
    rig = Rig(high_water=1000, low_water=10)
    child = rig.spawn(1, credit=12, stderr=False)
    pipe = rig.fds.pipes[child.pipes[0].fd]
    pipe.data += b"z" * 50
    rig.fds.stdout_room = 10**6
    for _ in range(5):
        rig.turn()
    assert parse_output(bytes(rig.fds.stdout))[0] == {(1, "o"): b"z" * 12}
    assert child.pipes[0].credit == 0 and not rig.poller.interest(child.pipes[0].fd)
    assert rig.fds.available(child.pipes[0].fd) == 38
    rig.children.grant_credit(child, StreamKind.STDOUT, 7)
    for _ in range(5):
        rig.turn()
    assert parse_output(bytes(rig.fds.stdout))[0] == {(1, "o"): b"z" * 19}
    assert rig.fds.spliced == 19


def test_bytes_known_in_the_pipe_spare_fionread_and_later_bytes_still_come() -> None:
    """What FIONREAD said, less what was spliced since, is still in the pipe
    (only resin reads it): batches go on without asking again, and bytes
    written meanwhile are found once the known ones are used up."""
    rig = Rig(high_water=1000, low_water=10)
    child = rig.spawn(1, stderr=False)
    pipe = rig.fds.pipes[child.pipes[0].fd]
    pipe.data += bytes(range(40))
    for room in [12, 3, 30, 0, 8, 10**6]:
        rig.fds.stdout_room = room
        rig.turn()
        if room == 3:
            pipe.data += b"later"
        assert rig.stalled() is None
    for _ in range(3):
        rig.turn()
    assert parse_output(bytes(rig.fds.stdout))[0] == {(1, "o"): bytes(range(40)) + b"later"}
    assert rig.fds.spliced == 45 and all(n <= 5 for _, _, n in frames(bytes(rig.fds.stdout)))
    # 45 bytes in batches of up to 7 (read_limit): 7 batches, FIONREAD only
    # when fewer than a frame's worth were known (at the start, at "later",
    # at the end).
    assert rig.fds.fionreads <= 4


def test_exit_after_a_pending_frame_and_the_rest_of_the_pipe() -> None:
    """Reaped while a frame of its output is part way out: the exit comes
    after that frame and everything left in the pipe."""
    rig = Rig(high_water=1000, low_water=10)
    child = rig.spawn(1, stderr=False)
    pipe = rig.fds.pipes[child.pipes[0].fd]
    pipe.data += b"q" * 33
    pipe.writer_closed = True
    rig.fds.stdout_room = 12  # the header and 3 bytes of the first frame
    rig.turn()
    assert rig.outbox._src == child.pipes[0].fd
    rig.children.exited(child, 0)
    assert id(child) in rig.children.held and not child.finished
    assert rig.stalled() is None
    for _ in range(30):
        rig.fds.stdout_room = 4
        rig.turn()
        assert rig.stalled() is None
    rig.fds.stdout_room = 10**6
    rig.turn()
    streams, exits, _ = parse_output(bytes(rig.fds.stdout))
    assert streams == {(1, "o"): b"q" * 33} and exits == [1]
    assert frames(bytes(rig.fds.stdout))[-1] == (b"x", 1, 0)
    assert child.finished and rig.fds.pipes[child.pipes[0].fd].closed


def test_fallback_to_reads() -> None:
    """No splice where stdout is no pipe, where the output fd is no pipe (a
    pty), or where splice fails (EINVAL: the frame begun is read instead)."""
    for stdout_pipe, source in [(False, "pipe"), (True, "pty"), (True, "refuses")]:
        rig = Rig(high_water=1000, low_water=10, stdout_pipe=stdout_pipe)
        child = rig.spawn(1, source=source)
        out, err = (rig.fds.pipes[p.fd] for p in child.pipes)
        for pipe in (out, err):
            pipe.data += b"d" * 23
            pipe.writer_closed = True
        rig.fds.stdout_room = 10**6
        rig.children.exited(child, 0)
        for _ in range(5):
            rig.turn()
        assert rig.fds.spliced == 0, (stdout_pipe, source)
        streams, exits, _ = parse_output(bytes(rig.fds.stdout))
        assert streams == {(1, "o"): b"d" * 23, (1, "e"): b"d" * 23} and exits == [1]
        assert [p.splice for p in child.pipes] == [False, False]


def test_pause_and_resume_with_a_pending_frame() -> None:
    """A pending frame counts in the backlog: past the high watermark the
    pipes park; they resume once it is out, and the frame stays whole."""
    rig = Rig(high_water=20, low_water=10)
    a = rig.spawn(1, stderr=False)
    b = rig.spawn(2, stderr=False, source="pty")
    rig.fds.pipes[a.pipes[0].fd].data += b"a" * 40
    rig.fds.pipes[b.pipes[0].fd].data += b"b" * 40
    for _ in range(10):
        rig.turn()
        assert rig.stalled() is None
    assert rig.outbox.size and rig.children.parked
    assert not any(rig.poller.interest(p.fd) for c in (a, b) for p in c.pipes)
    for _ in range(60):
        rig.fds.stdout_room = 6
        rig.turn()
        assert rig.stalled() is None
    rig.fds.stdout_room = 10**6
    for _ in range(5):
        rig.turn()
    frames(bytes(rig.fds.stdout))
    streams = parse_output(bytes(rig.fds.stdout))[0]
    assert streams == {(1, "o"): b"a" * 40, (2, "o"): b"b" * 40}
    assert rig.fds.spliced == 40


def test_broken_stdout_mid_frame() -> None:
    """EPIPE with a frame part way: reported once, from flush; nothing else
    is spliced; the child's exit is still handled (the output is dropped)."""
    rig = Rig(high_water=1000, low_water=10)
    broken: list[OSError] = []
    rig.outbox.on_broken = broken.append
    child = rig.spawn(1, stderr=False)
    pipe = rig.fds.pipes[child.pipes[0].fd]
    pipe.data += b"e" * 30
    rig.fds.stdout_room = 11
    rig.turn()
    assert rig.outbox._src >= 0 and not broken
    rig.fds.stdout_broken = True
    rig.fds.stdout_room = 10**6
    rig.turn()
    assert len(broken) == 1 and isinstance(broken[0], BrokenPipeError)
    assert not rig.outbox.splicing and rig.outbox.size == 0
    spliced = rig.fds.spliced
    pipe.writer_closed = True
    rig.children.shutdown()  # what resin does on a broken stdout
    rig.children.exited(child, 0)
    for _ in range(5):
        rig.turn()
    assert child.finished and rig.fds.spliced == spliced
    assert rig.poller.interest(STDOUT_FD) == 0
    assert len(broken) == 1 and rig.outbox.broken  # reported once, the rest dropped


def test_shutdown_reads_the_rest_of_a_pending_frame() -> None:
    """Shutting down, exits wait for nothing: a frame pending from the pipe
    being drained is read into memory first, so it stays whole."""
    rig = Rig(high_water=1000, low_water=10)
    child = rig.spawn(1, stderr=False)
    pipe = rig.fds.pipes[child.pipes[0].fd]
    pipe.data += b"s" * 12
    pipe.writer_closed = True
    rig.fds.stdout_room = 10  # the header and 1 byte
    rig.turn()
    assert rig.outbox._src >= 0
    rig.children.shutdown()
    rig.children.exited(child, 0)
    assert child.finished and rig.outbox._src < 0
    rig.fds.stdout_room = 10**6
    rig.turn()
    streams, exits, _ = parse_output(bytes(rig.fds.stdout))
    assert streams == {(1, "o"): b"s" * 12} and exits == [1]
    frames(bytes(rig.fds.stdout))


def test_small_output_is_read_not_spliced() -> None:
    """Output under splice_min is read (one read, its frame in the turn's
    writev); a read of splice_min or more, or one that fills what it asked
    for (150 of 300: the rest is spliced), turns splicing back on; the bytes
    and their order are the same either way."""
    rig = Rig(high_water=1000, low_water=10, splice_min=64)
    rig.session.read_limit = 150
    child = rig.spawn(1, stderr=False)
    out = child.pipes[0]
    pipe = rig.fds.pipes[out.fd]
    rig.fds.stdout_room = 10**6
    sent = b""
    for chunk, spliced, small in [(b"a" * 10, 0, True), (b"b" * 63, 0, True),
                                  (b"c" * 100, 0, False), (b"d" * 80, 80, False),
                                  (b"e" * 5, 80, True), (b"f" * 70, 80, False),
                                  (b"g" * 9, 80, True), (b"h" * 300, 230, False),
                                  (b"i", 230, True)]:
        pipe.data += chunk
        sent += chunk
        rig.turn()
        assert (rig.fds.spliced, out.small) == (spliced, small), chunk[:1]
        assert parse_output(bytes(rig.fds.stdout))[0] == {(1, "o"): sent}
        frames(bytes(rig.fds.stdout))


def test_a_small_pipe_waits_for_its_pending_frame() -> None:
    """A spliced frame part way out: the pipe's next output, however small,
    is not read before that frame is finished (it would tear it)."""
    rig = Rig(high_water=1000, low_water=10, splice_min=16)
    child = rig.spawn(1, stderr=False)
    pipe = rig.fds.pipes[child.pipes[0].fd]
    pipe.data += b"p" * 40
    rig.fds.stdout_room = 12  # the header and 3 bytes
    rig.turn()
    assert rig.outbox._src == child.pipes[0].fd
    pipe.data += b"s" * 3
    for _ in range(20):
        rig.fds.stdout_room = 4
        rig.turn()
        assert rig.stalled() is None
    rig.fds.stdout_room = 10**6
    for _ in range(3):
        rig.turn()
    assert parse_output(bytes(rig.fds.stdout))[0] == {(1, "o"): b"p" * 40 + b"s" * 3}
    frames(bytes(rig.fds.stdout))
    # the last 10 "p" and the "s" (13 < 16) were read, behind the finished frame
    assert rig.fds.spliced == 30 and child.pipes[0].small


# --- resin's own stdin: packets to the session, and its interest ----------------

STDIN_FD = 0


class StdinFds(FakeFds):
    """FakeFds whose resin stdin yields the chunks a test queues, one per read."""

    def __init__(self) -> None:
        super().__init__()
        self.stdin_chunks: list[bytes] = []
        self.stdin_reads = 0

    def readinto(self, fd: int, buf: bytearray) -> int:
        assert fd == STDIN_FD
        if not self.stdin_chunks:
            raise BlockingIOError
        self.stdin_reads += 1
        chunk = self.stdin_chunks.pop(0)
        buf[:len(chunk)] = chunk
        return len(chunk)


class PacketSession(RecordingSession):
    """Records the packets the runtime hands the session."""

    def __init__(self, outbox: Outbox) -> None:
        super().__init__(outbox)
        self.packets: list[bytes] = []

    def on_packet(self, payload: bytes) -> None:
        assert isinstance(payload, bytes)
        self.packets.append(payload)


class NoSpawner:
    def spawn(self, setup: ChildSetup) -> int:
        raise AssertionError("not used")


def stdin_resin() -> tuple[Resin, StdinFds, PacketSession, list[int]]:
    """A Resin over fakes with a recording session; the list gets every
    interest stated on resin's stdin."""
    fds = StdinFds()
    poller = FakePoller(fds)
    stated: list[int] = []
    real = poller.set_interest

    def spy(fd: int, events: int, handler: Callable[[], None]) -> None:
        if fd == STDIN_FD:
            stated.append(events)
        else:
            real(fd, events, handler)

    poller.set_interest = spy  # type: ignore[method-assign]
    resin = Resin(STDIN_FD, STDOUT_FD, fds=fds, poller=poller, spawner=NoSpawner(), devnull=-1)
    session = PacketSession(resin.outbox)
    resin.session = resin.children.session = session
    return resin, fds, session, stated


def test_stdin_packets_whole_split_and_batched_arrive_in_order() -> None:
    resin, fds, session, _ = stdin_resin()
    one, two, three = b"\x11one", b"\x11two!", b"\x11three"
    fds.stdin_chunks = [
        encode_packet(one),  # exactly one packet: the fast path
        encode_packet(two)[:3],  # a packet in two reads: reassembled
        encode_packet(two)[3:] + encode_packet(three)[:1],
        encode_packet(three)[1:],  # whole-looking, but after buffered bytes
        encode_packet(one) + encode_packet(two),  # two in one read
    ]
    for _ in range(5):
        resin._on_stdin()
    assert session.packets == [one, two, three, one, two]
    assert resin.reader.buffered == 0


def test_stdin_packet_is_not_handed_on_while_shutting_down() -> None:
    resin, fds, session, _ = stdin_resin()
    resin.closing = True
    fds.stdin_chunks = [encode_packet(b"\x11late")]
    resin._on_stdin()
    assert session.packets == []


def test_stdin_interest_is_stated_only_when_it_changes() -> None:
    resin, _, session, stated = stdin_resin()
    resin.settle()
    resin.settle()
    assert stated == [READ]
    # Too much waits for the children's stdin (v0's bound): only a hangup
    # is watched, until it is written.
    session.stdin_backlog = 0
    resin.children.stdin_bytes = 1
    resin.settle()
    resin.settle()
    resin.children.stdin_bytes = 0
    resin.settle()
    assert stated == [READ, HANGUP, READ]
    resin.begin_shutdown()
    resin.settle()
    assert stated == [READ, HANGUP, READ, 0]
