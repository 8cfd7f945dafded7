"""v0 (legacy lacca 0.2.3 protocol) against a real resin."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import msgpack
import pytest
from conftest import exists, spawned_child, wait_gone

from resin_py.protocol import v0
from resin_py.protocol.framing import encode_packet
from resin_py.protocol.v0_session import DECODE_ERROR, ERROR_PREFIX
from resin_py.testing import ResinClient


def start(resin: ResinClient, exe: str, *args: str) -> None:
    resin.v0_send(v0.StartProcess(exe, args))


def the_child(resin: ResinClient) -> int:
    """v0 never tells the pid: find resin's only spawned child."""
    return spawned_child(resin.pid)


def test_echo_is_byte_identical_to_resin_03(resin: ResinClient) -> None:
    start(resin, "/bin/echo", "hi")
    assert resin.recv_packet().hex() == (
        "81a7446174614f757482a27479a65374646f7574a362756693" + "68690a")
    assert resin.recv_packet().hex() == "81aa45786974537461747573" + "81a4636f646500"


def test_data_out_high_bytes_are_uint8(resin: ResinClient) -> None:
    start(resin, "printf", r"a\200\377")
    payload = resin.recv_packet()
    assert payload.endswith(bytes.fromhex("9361cc80ccff"))
    assert msgpack.unpackb(payload) == {"DataOut": {"ty": "Stdout", "buf": [0x61, 0x80, 0xFF]}}


def test_stderr(resin: ResinClient) -> None:
    start(resin, "sh", "-c", "echo oops >&2")
    out, err, status, _ = resin.v0_collect()
    assert (out, err, status.code) == (b"", b"oops\n", 0)


@pytest.mark.parametrize("code", [0, 3, 200])
def test_exit_codes(resin: ResinClient, code: int) -> None:
    start(resin, "sh", "-c", f"exit {code}")
    assert resin.v0_collect()[2] == v0.ExitStatus(code)


def test_death_by_signal_is_nil(resin: ResinClient) -> None:
    start(resin, "sh", "-c", "kill -TERM $$")
    assert resin.v0_collect()[2] == v0.ExitStatus(None)


@pytest.mark.parametrize("bare", [False, True])
def test_kill_process(resin: ResinClient, bare: bool) -> None:
    start(resin, "sleep", "1000")
    child = the_child(resin)
    if bare:
        resin.send_packet(b"\x02" + msgpack.packb("KillProcess"))
    else:
        resin.v0_send(v0.KillProcess())
    assert resin.v0_collect()[2] == v0.ExitStatus(None)
    wait_gone(child)


def io_error(code: int, kind: str, message: str) -> v0.ErrorReport:
    return v0.ErrorReport(f"{ERROR_PREFIX}internal io error: Os {{ code: {code}, "
                          f'kind: {kind}, message: "{message}" }}')


def decode_error(text: str) -> v0.ErrorReport:
    return v0.ErrorReport(ERROR_PREFIX + DECODE_ERROR + text)


ENOENT = io_error(2, "NotFound", "No such file or directory")


def test_nonexistent_executable_then_keeps_serving(resin: ResinClient) -> None:
    # resin 0.3.x's text: Rust's Debug of the io::Error.
    start(resin, "/nonexistent/program")
    assert resin.v0_recv() == ENOENT
    start(resin, "no-such-program-on-path")
    assert resin.v0_recv() == ENOENT
    start(resin, "")
    assert resin.v0_recv() == ENOENT
    start(resin, "/bin/echo", "ok")  # one process per session: none was started
    assert resin.v0_collect()[:3] == (b"ok\n", b"", v0.ExitStatus(0))


def test_exec_permission_denied(resin: ResinClient, tmp_path: Path) -> None:
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\necho no\n")
    script.chmod(0o644)
    start(resin, str(script))
    assert resin.v0_recv() == io_error(13, "PermissionDenied", "Permission denied")


def test_start_process_without_args_starts_nothing(resin: ResinClient) -> None:
    # resin 0.3.x refused it (serde: a missing field); resin_py used to start
    # the program with no arguments.
    resin.send_packet(b"\x02" + msgpack.packb({"StartProcess": {"exec": "sleep"}}))
    assert resin.v0_recv() == decode_error('Syntax("missing field `args`")')
    resin.send_packet(b"\x02" + msgpack.packb({"StartProcess": {"exec": "sleep", "args": [1]}}))
    assert resin.v0_recv() == decode_error(
        'Syntax("invalid type: integer `1`, expected a string")')
    # One process per session: a second StartProcess would be refused.
    start(resin, "/bin/echo", "started")
    assert resin.v0_collect()[:3] == (b"started\n", b"", v0.ExitStatus(0))


def test_decode_errors_read_as_resin_03(resin: ResinClient) -> None:
    resin.send_packet(b"\x02" + msgpack.packb({"Bogus": None}))
    assert resin.v0_recv() == decode_error(
        'Syntax("unknown variant `Bogus`, expected one of `StartProcess`, `KillProcess`, '
        '`DataOut`, `DataIn`, `ExitStatus`, `ErrorReport`")')
    resin.send_packet(b"\x02\xc1")
    assert resin.v0_recv() == decode_error("TypeMismatch(Reserved)")
    resin.v0_send(v0.KillProcess())
    assert resin.v0_recv() == v0.ErrorReport(ERROR_PREFIX + "KillProcess before StartProcess")


@pytest.mark.parametrize("flags", [0x00, 0x01, 0x0F])
def test_flags_type_bits_are_ignored_even_in_the_first_packet(
        resin: ResinClient, flags: int) -> None:
    # Only a first packet of exactly `00 vv` is a v1 handshake.
    resin.v0_send(v0.StartProcess("cat", ()), flags=flags)
    resin.v0_send(v0.DataIn(b"x" * 100), flags=flags, chunk_size=30)
    assert resin.v0_recv() == v0.DataOut("Stdout", b"x" * 100)


def test_burst_is_sent_1024_bytes_per_data_out(resin: ResinClient) -> None:
    start(resin, "head", "-c", "5000", "/dev/zero")
    out, _, status, msgs = resin.v0_collect()
    assert (out, status) == (bytes(5000), v0.ExitStatus(0))
    assert [len(m.data) for m in msgs if isinstance(m, v0.DataOut)] == [1024] * 4 + [904]


def test_large_output_never_exceeds_1024_bytes_per_data_out(resin: ResinClient) -> None:
    start(resin, "sh", "-c", "head -c 300000 /dev/urandom | od -An -v -tx1 | head -c 250000")
    out, _, status, msgs = resin.v0_collect()
    assert (len(out), status) == (250000, v0.ExitStatus(0))
    sizes = [len(m.data) for m in msgs if isinstance(m, v0.DataOut)]
    assert max(sizes) == 1024 and len(sizes) >= 245


@pytest.mark.parametrize(
    "payload",
    [
        b"\x02\xc1",  # never-used msgpack byte
        b"\x02\x92",  # truncated array
        b"\x02\x81\xa7DataOut",  # truncated map
        b"\x02\x01\x02",  # extra data
        b"\x02\xa3\xff\xfe\xfd",  # invalid utf-8 str
        b"\x02" + msgpack.packb({"Bogus": 1}),
        b"\x02" + msgpack.packb([1, 2, 3]),
        b"\x02" + msgpack.packb({"DataIn": {"buf": [256]}}),
        b"\x02" + msgpack.packb({"StartProcess": {"exec": 5}}),
        b"\x02" + msgpack.packb({"StartProcess": {"exec": "x", "args": [1]}}),
    ],
)
def test_malformed_messages_are_reported(resin: ResinClient, payload: bytes) -> None:
    resin.send_packet(payload)
    assert isinstance(resin.v0_recv(), v0.ErrorReport)
    start(resin, "/bin/echo", "still here")
    assert resin.v0_collect()[0] == b"still here\n"


def test_zero_length_packet(resin: ResinClient) -> None:
    resin.send_raw(b"\x00\x00")  # before the protocol is decided
    assert isinstance(resin.v0_recv(), v0.ErrorReport)
    start(resin, "cat")
    resin.send_raw(b"\x00\x00")  # in a v0 session
    assert isinstance(resin.v0_recv(), v0.ErrorReport)
    resin.v0_send(v0.DataIn(b"x"))
    assert resin.v0_recv() == v0.DataOut("Stdout", b"x")


def test_split_length_header(resin: ResinClient) -> None:
    start(resin, "cat")
    packet = b"".join(encode_packet(p) for p in v0.encode_client_message(v0.DataIn(b"one")))
    second = b"".join(encode_packet(p) for p in v0.encode_client_message(v0.DataIn(b"two")))
    # The first header byte of `second` travels with `first`; once resin has
    # answered `first` it has certainly read that byte on its own.
    resin.send_raw(packet + second[:1])
    assert resin.v0_recv() == v0.DataOut("Stdout", b"one")
    resin.send_raw(second[1:])
    assert resin.v0_recv() == v0.DataOut("Stdout", b"two")
    # And a header split across two plain writes.
    third = b"".join(encode_packet(p) for p in v0.encode_client_message(v0.DataIn(b"3")))
    resin.send_raw(third[:1])
    resin.send_raw(third[1:])
    assert resin.v0_recv() == v0.DataOut("Stdout", b"3")


@pytest.mark.parametrize("as_bin", [False, True])
def test_data_in_as_ints_and_bin(resin: ResinClient, as_bin: bool) -> None:
    data = bytes(range(256))
    start(resin, "head", "-c", "256")
    resin.v0_send(v0.DataIn(data), data_as_bin=as_bin)
    out, _, status, _ = resin.v0_collect()
    assert (out, status.code) == (data, 0)


@pytest.mark.serial
def test_one_mib_round_trip_chunked(resin: ResinClient) -> None:
    data = os.urandom(1 << 20)
    start(resin, "head", "-c", str(len(data)))
    packets = v0.encode_client_message(v0.DataIn(data))
    assert len(packets) > 1 and all(p[0] == 0x82 for p in packets[:-1]) and packets[-1][0] == 2
    started = time.monotonic()
    resin.v0_send(v0.DataIn(data))
    out, _, status, msgs = resin.v0_collect()
    assert (out == data, status.code) == (True, 0)
    assert all(len(m.data) <= 1024 for m in msgs if isinstance(m, v0.DataOut))
    assert time.monotonic() - started < 5


def test_lifecycle_errors(resin: ResinClient) -> None:
    resin.v0_send(v0.DataIn(b"early"))
    assert isinstance(resin.v0_recv(), v0.ErrorReport)
    resin.v0_send(v0.KillProcess())
    assert isinstance(resin.v0_recv(), v0.ErrorReport)
    start(resin, "cat")
    start(resin, "cat")
    assert isinstance(resin.v0_recv(), v0.ErrorReport)
    resin.v0_send(v0.DataIn(b"x"))
    assert resin.v0_recv() == v0.DataOut("Stdout", b"x")


def test_after_exit(resin: ResinClient) -> None:
    start(resin, "true")
    assert resin.v0_collect()[2] == v0.ExitStatus(0)
    resin.v0_send(v0.DataIn(b"late"))
    assert isinstance(resin.v0_recv(), v0.ErrorReport)
    resin.v0_send(v0.KillProcess())
    assert isinstance(resin.v0_recv(), v0.ErrorReport)


@pytest.mark.serial
def test_stdin_eof_kills_child_and_exits(resin: ResinClient) -> None:
    start(resin, "sleep", "1000")
    child = the_child(resin)
    started = time.monotonic()
    resin.close_resin_stdin()
    assert resin.v0_recv() == v0.ExitStatus(None)
    assert resin.wait(timeout=1) == 0
    assert time.monotonic() - started < 1
    assert not exists(child)


def test_sigint_is_ignored(resin: ResinClient) -> None:
    start(resin, "cat")
    the_child(resin)  # resin is past its startup
    os.kill(resin.pid, signal.SIGINT)
    resin.v0_send(v0.DataIn(b"alive"))
    assert resin.v0_recv() == v0.DataOut("Stdout", b"alive")
