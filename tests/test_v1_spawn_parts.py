"""Spawn requests larger than one packet, sent in parts (docs/protocol.md
§4.3.1), against a real resin."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence

from resin_py.protocol import v1
from resin_py.protocol.etf import encode_term
from resin_py.protocol.terms import NIL, Atom
from resin_py.testing import ResinClient

ARGS_PER_PART = 8000  # below MAX_TERMS (8,192) with the tuple around them
ENV_PER_PART = 2000  # one container each, below MAX_CONTAINERS (4,096)
ARG_MAX = int(subprocess.run(["getconf", "ARG_MAX"], capture_output=True, text=True,
                             check=True).stdout)


def chunks(items: list[bytes], n: int, limit: int = 65000) -> list[list[bytes]]:
    """Items in groups of at most `n` and `limit` bytes (5 + len per binary)."""
    out: list[list[bytes]] = []
    size = limit
    for item in items:
        if len(out) == 0 or len(out[-1]) >= n or size + len(item) + 5 > limit:
            out.append([])
            size = 0
        out[-1].append(item)
        size += len(item) + 5
    return out


NO_OPTIONS = v1.SpawnOptions()


def send_in_parts(c: ResinClient, id: int, exe: bytes, args: list[bytes],
                  env: Sequence[tuple[bytes, bytes]] = (), opts: v1.SpawnOptions = NO_OPTIONS,
                  parts: int | None = None) -> int:
    """Send args and env as spawn_part frames, then the final spawn; the
    number of parts."""
    n = 0
    for group in chunks(args, ARGS_PER_PART):
        c.send(v1.SpawnPart(id, tuple(group)))
        n += 1
    pairs = {k + b"=" + v: (k, v) for k, v in env}
    for group in chunks(list(pairs), ENV_PER_PART):
        c.send(v1.SpawnPart(id, env=tuple(pairs[kv] for kv in group)))
        n += 1
    c.send(v1.Spawn(id, exe, (), opts, n if parts is None else parts))
    return n


def answer(c: ResinClient, id: int) -> v1.ResinFrame:
    return c.expect(lambda f: isinstance(f, v1.Spawned | v1.SpawnError | v1.ErrorEvent)
                    and f.id == id)


def control(term: object) -> bytes:
    return bytes((v1.CONTROL,)) + encode_term(term)  # type: ignore[arg-type]


def test_100_000_arguments_reach_the_child(client: ResinClient) -> None:
    args = [b"sh", *(f"a{i}".encode() for i in range(1, 100_001))]
    assert send_in_parts(client, 1, b"sh", [b"-c", b'echo $# "$1" "$100000"', *args]) > 13
    assert isinstance(answer(client, 1), v1.Spawned)
    r = client.collect(1)
    assert (r.stdout, r.exit) == (b"100000 a1 a100000\n", v1.Exit(1, "exit", 0))


def test_an_environment_of_1_mib_reaches_the_child(client: ResinClient) -> None:
    env = [(f"BIG{i}".encode(), bytes([65 + i % 26]) * 4096) for i in range(256)]
    send_in_parts(client, 1, b"sh", [b"-c", b'echo ${#BIG7} ${BIG7%"${BIG7#?}"}; env | wc -c'],
                  env, v1.SpawnOptions(clear_env=True))
    assert isinstance(answer(client, 1), v1.Spawned)
    r = client.collect(1)
    length, first, total = r.stdout.split()
    assert (length, first) == (b"4096", b"H")
    assert int(total) >= 256 * 4096 + 256 * 6  # Name=Value\n each, and the shell's own


def test_parts_and_the_final_spawn_add_up(client: ResinClient) -> None:
    client.send(v1.SpawnPart(1, (b"-c", b'echo "$@" $X $Y', b"sh", b"1")))
    client.send(v1.SpawnPart(1, env=((b"X", b"x"), (b"Y", b"part"))))
    client.send(v1.SpawnPart(1, (b"2",)))
    client.send(v1.Spawn(1, b"sh", (b"3",), v1.SpawnOptions(env=((b"Y", b"final"),)), 3))
    assert isinstance(answer(client, 1), v1.Spawned)
    assert client.collect(1).stdout == b"1 2 3 x final\n"


def test_ids_may_interleave(client: ResinClient) -> None:
    client.send(v1.SpawnPart(1, (b"one",)))
    client.send(v1.SpawnPart(2, (b"two",)))
    client.send(v1.SpawnPart(1, (b"uno",)))
    client.send(v1.Spawn(2, b"echo", (), v1.SpawnOptions(), 1))
    client.send(v1.Spawn(1, b"echo", (), v1.SpawnOptions(), 2))
    assert client.collect(2).stdout == b"two\n"
    assert client.collect(1).stdout == b"one uno\n"


def test_an_argument_list_over_arg_max_fails_in_execve(client: ResinClient) -> None:
    big = [b"x" * 60000] * (ARG_MAX // 60000 + 2)  # over ARG_MAX, under MAX_SPAWN_BYTES
    assert sum(len(a) + 9 for a in big) < v1.MAX_SPAWN_BYTES
    send_in_parts(client, 1, b"true", big)
    assert answer(client, 1) == v1.SpawnError(1, Atom("e2big"))
    assert client.run(1, "true").exit == v1.Exit(1, "exit", 0)  # the id is free again


def test_a_request_over_max_spawn_bytes_is_refused_without_forking(client: ResinClient
                                                                  ) -> None:
    big = [b"y" * 60000] * (v1.MAX_SPAWN_BYTES // 60000 + 1)
    n = send_in_parts(client, 1, b"/no/such/program", big)  # never looked up
    assert n == len(big)
    assert answer(client, 1) == v1.SpawnError(1, Atom("e2big"))
    assert client.run(1, "true").exit == v1.Exit(1, "exit", 0)


def test_pending_bytes_are_bounded(client: ResinClient) -> None:
    part = (b"z" * 60000,)  # counts 60,009 bytes
    per_id = 25  # 1.5 MB an id: under ARG_MAX, so each spawn can run
    ids = v1.MAX_PENDING_BYTES // (per_id * 60009) + 1
    for id in range(1, ids + 1):
        for _ in range(per_id):
            client.send(v1.SpawnPart(id, part))
    for id in range(1, ids + 1):
        client.send(v1.Spawn(id, b"true", (), v1.SpawnOptions(), per_id))
    results = [answer(client, id) for id in range(1, ids + 1)]
    assert results[-1] == v1.SpawnError(ids, Atom("enomem"))
    assert all(isinstance(r, v1.Spawned) for r in results[:-1])
    for id in range(1, ids):
        client.collect(id)
    assert isinstance(client.spawn(ids, "true"), v1.Spawned)  # all of it was released


def test_too_many_pending_spawns(client: ResinClient) -> None:
    for id in range(v1.MAX_PENDING_SPAWNS):
        client.send(v1.SpawnPart(id, (b"a",)))
    client.send(v1.SpawnPart(1000, (b"b",)))
    assert client.recv() == v1.ErrorEvent(1000, (Atom("too_many_pending_spawns"),
                                                 v1.MAX_PENDING_SPAWNS))
    client.send(v1.Spawn(1000, b"echo", (), v1.SpawnOptions(), 1))
    assert answer(client, 1000) == v1.SpawnError(1000, (Atom("badarg"), Atom("parts")))
    client.send(v1.SpawnCancel(0))  # frees a slot
    client.send(v1.SpawnPart(1000, (b"c",)))
    client.send(v1.Spawn(1000, b"echo", (), v1.SpawnOptions(), 1))
    assert client.collect(1000).stdout == b"c\n"


def test_a_wrong_parts_count_starts_nothing(client: ResinClient) -> None:
    client.send(v1.SpawnPart(1, (b"a",)))
    client.send(v1.Spawn(1, b"echo", (), v1.SpawnOptions(), 2))
    assert answer(client, 1) == v1.SpawnError(1, (Atom("badarg"), Atom("parts")))
    # parts announced, none sent (or sent after the final spawn)
    client.send(v1.Spawn(2, b"echo", (), v1.SpawnOptions(), 1))
    assert answer(client, 2) == v1.SpawnError(2, (Atom("badarg"), Atom("parts")))
    # an assembly and a spawn that does not say `parts`
    client.send(v1.SpawnPart(3, (b"a",)))
    client.send(v1.Spawn(3, b"echo", (b"b",)))
    assert answer(client, 3) == v1.SpawnError(3, (Atom("badarg"), Atom("parts")))


def test_parts_after_the_final_spawn_start_a_new_assembly(client: ResinClient) -> None:
    client.send(v1.Spawn(1, b"sleep", (b"100",)))
    assert isinstance(answer(client, 1), v1.Spawned)
    client.send(v1.SpawnPart(1, (b"late",)))  # id 1 runs: its spawn will be refused
    client.send(v1.Spawn(1, b"echo", (), v1.SpawnOptions(), 1))
    assert answer(client, 1) == v1.SpawnError(1, Atom("id_in_use"))
    client.send(v1.Signal(1, 7, 9, True))
    client.collect(1)


def test_a_malformed_part_fails_its_spawn_once(client: ResinClient) -> None:
    client.send(v1.SpawnPart(1, (b"ok",)))
    client.send_packet(control((Atom("spawn_part"), 1, Atom("args"), [b"a", 5])))
    client.send(v1.SpawnPart(1, (b"more",)))  # not a new assembly: still the failed one
    client.send_packet(control((Atom("spawn_part"), 2, Atom("env"), [(b"A=B", b"c")])))
    client.send(v1.Spawn(1, b"echo", (), v1.SpawnOptions(), 3))
    client.send(v1.Spawn(2, b"echo", (), v1.SpawnOptions(), 1))
    assert answer(client, 1) == v1.SpawnError(1, (Atom("badarg"), Atom("args")))
    assert answer(client, 2) == v1.SpawnError(2, (Atom("badarg"), Atom("env")))
    client.send_packet(control((Atom("spawn_part"), 3, Atom("bogus"), [])))
    frame = client.recv()
    assert isinstance(frame, v1.ErrorEvent) and isinstance(frame.reason, tuple)
    assert frame.reason[0] == Atom("unknown_request")


def test_a_malformed_final_spawn_drops_the_assembly(client: ResinClient) -> None:
    client.send(v1.SpawnPart(1, (b"a",)))
    client.send_packet(control((Atom("spawn"), 1, b"", [], [(Atom("parts"), 1)])))
    assert answer(client, 1) == v1.SpawnError(1, (Atom("badarg"), Atom("exec")))
    assert client.run(1, "echo", ["b"]).stdout == b"b\n"  # nothing left of "a"


def test_cancel_drops_the_assembly(client: ResinClient) -> None:
    client.send(v1.SpawnPart(1, (b"a",)))
    client.send(v1.SpawnCancel(1))
    client.send(v1.SpawnCancel(99))  # unknown: nothing to drop, no answer
    assert client.run(1, "echo", ["b"]).stdout == b"b\n"


def test_nil_in_an_env_part_unsets(client: ResinClient) -> None:
    client.send_packet(control((Atom("spawn_part"), 1, Atom("env"),
                                [(b"HOME", NIL), (b"Q", b"1")])))
    client.send(v1.Spawn(1, b"sh", (b"-c", b'echo "${HOME-unset}" $Q'), v1.SpawnOptions(), 1))
    assert client.collect(1).stdout == b"unset 1\n"


def test_resin_exits_with_an_assembly_pending(client: ResinClient) -> None:
    client.send(v1.SpawnPart(1, (b"a" * 60000,)))
    client.close_resin_stdin()
    assert client.wait() == 0
    assert os.environ  # nothing else to see: the assembly lived in resin's memory


def send_long(c: ResinClient, id: int, value: bytes, piece: int = 60000) -> int:
    """All of `value` but its last `piece` bytes as pieces; their number."""
    cut = max(0, len(value) - piece)
    for start in range(0, cut, piece):
        c.send(v1.SpawnPart(id, piece=value[start:min(start + piece, cut)]))
    return -(-cut // piece)


def test_an_argument_and_a_value_longer_than_a_packet(client: ResinClient) -> None:
    long_arg = bytes(range(1, 256)) * 500  # 127,500 bytes: under MAX_ARG_STRLEN
    long_value = b"v" * 100_000
    client.send(v1.SpawnPart(1, (b"-c", b'printf %s "$1|$LONG|$2"', b"sh")))
    n = send_long(client, 1, long_arg)
    client.send(v1.SpawnPart(1, (long_arg[-60000:],)))
    n += send_long(client, 1, long_value)
    client.send(v1.SpawnPart(1, env=((b"LONG", long_value[-60000:]),)))
    client.send(v1.Spawn(1, b"sh", (b"short",), v1.SpawnOptions(), n + 3))
    assert isinstance(answer(client, 1), v1.Spawned)
    r = client.collect(1)
    assert r.exit == v1.Exit(1, "exit", 0)
    assert r.stdout == long_arg + b"|" + long_value + b"|short"


def test_an_argument_over_max_arg_strlen_fails_in_execve(client: ResinClient) -> None:
    n = send_long(client, 1, b"w" * 200_000)
    client.send(v1.SpawnPart(1, (b"w" * 60000,)))
    client.send(v1.Spawn(1, b"true", (), v1.SpawnOptions(), n + 1))
    assert answer(client, 1) == v1.SpawnError(1, Atom("e2big"))


def test_pieces_must_start_an_item(client: ResinClient) -> None:
    client.send(v1.SpawnPart(1, piece=b"dangling"))
    client.send(v1.Spawn(1, b"echo", (), v1.SpawnOptions(), 1))
    assert answer(client, 1) == v1.SpawnError(1, (Atom("badarg"), Atom("parts")))
    client.send(v1.SpawnPart(2, piece=b"x"))
    client.send(v1.SpawnPart(2, env=((b"X", None),)))
    client.send(v1.Spawn(2, b"echo", (), v1.SpawnOptions(), 2))
    assert answer(client, 2) == v1.SpawnError(2, (Atom("badarg"), Atom("parts")))
    client.send_packet(control((Atom("spawn_part"), 3, Atom("piece"), b"")))
    client.send(v1.Spawn(3, b"echo", (), v1.SpawnOptions(), 1))
    assert answer(client, 3) == v1.SpawnError(3, (Atom("badarg"), Atom("piece")))


def test_the_vectors_of_a_spawn_in_parts_run(client: ResinClient) -> None:
    """docs/protocol-vectors.txt's spawn_part_* and spawn_parts_final, sent as
    they are (the BEAM's bytes), make one process."""
    vectors = {}
    path = os.path.join(os.path.dirname(__file__), "..", "docs", "protocol-vectors.txt")
    with open(path) as f:
        for line in f:
            if line.startswith("v1 c2r spawn_part"):
                head, hexed, _ = line.split(" | ")
                vectors[head.split()[2]] = bytes.fromhex(hexed)
    for name in ("spawn_part_args", "spawn_part_args_more", "spawn_part_piece",
                 "spawn_part_env", "spawn_parts_final"):
        client.send_packet(vectors[name])
    r = client.collect(5)
    assert (r.stdout, r.exit) == (b"2 a1\n", v1.Exit(5, "exit", 0))
    client.send_packet(vectors["spawn_part_args"])
    client.send(v1.SpawnCancel(5))
    client.send_packet(bytes.fromhex("1083680264000c737061776e5f63616e63656c6105"))  # idem
    assert client.run(5, "echo", ["fresh"]).stdout == b"fresh\n"
