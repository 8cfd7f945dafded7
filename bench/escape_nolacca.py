"""The "resin SIGKILL, no lacca" row of bench/escape_table.exs: N processes
with every kind of escapee (tests/test_escape.py's script) in one resin, then
resin SIGKILLed with no lacca around; processes before and 2 s after.

    .venv/bin/python bench/escape_nolacca.py [N]        (cgroups where available)
    RESIN_CGROUPS=0 .venv/bin/python bench/escape_nolacca.py [N]

Nothing is asserted (tests/test_escape.py asserts the same for one process).
"""

from __future__ import annotations

import os
import signal
import sys
import time

from resin_py.protocol import v1
from resin_py.runtime.tree import holders
from resin_py.testing import ResinClient

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from test_escape import KINDS, SCRIPT, _alive, cookie_prefix


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    client = ResinClient()
    client.hello()
    pids: list[int] = []
    for i in range(1, n + 1):
        spawned = client.spawn(i, "sh", ["-c", SCRIPT])
        assert isinstance(spawned, v1.Spawned)
        pids.append(spawned.os_pid)
    buf: dict[int, bytes] = {i: b"" for i in range(1, n + 1)}
    while sum(b.count(b"\n") for b in buf.values()) < n * KINDS:
        frame = client.recv()
        if isinstance(frame, v1.Stdout):
            buf[frame.id] += frame.data
    pids += [int(p) for b in buf.values() for p in b.split()]
    prefix = cookie_prefix(client)

    def count() -> int:
        return len({p for p in pids if _alive(p)} | set(holders(prefix)))

    before = count()
    t0 = time.monotonic()
    os.kill(client.pid, signal.SIGKILL)
    while count() and time.monotonic() - t0 < 2.0:
        time.sleep(0.05)
    left = count()
    took = f"{(time.monotonic() - t0) * 1000:.0f} ms" if not left else "> 2 s"
    mode = "process tree" if os.environ.get("RESIN_CGROUPS") == "0" else "cgroups if available"
    print(f"| resin SIGKILL, no lacca ({mode}) | {before} → {left} | {took} |")


if __name__ == "__main__":
    main()
