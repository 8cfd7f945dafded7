"""The pytest plugin resin_py installs (entry point pytest11): fixtures resin_v0, resin_v1."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from resin_py.protocol import v0, v1
from resin_py.testing import ResinClient

README = Path(__file__).resolve().parent.parent / "README.md"

pytest_plugins = ["pytester"]


def test_registered_through_the_entry_point(pytestconfig: pytest.Config) -> None:
    import resin_py.pytest_plugin

    assert pytestconfig.pluginmanager.get_plugin("resin_py") is resin_py.pytest_plugin


def test_resin_v1_is_after_the_handshake(resin_v1: ResinClient) -> None:
    assert resin_v1.protocol == "v1"
    result = resin_v1.run(1, "echo", ["hi"])
    assert (result.stdout, result.exit) == (b"hi\n", v1.Exit(1, "exit", 0))


def test_resin_v0_is_fresh(resin_v0: ResinClient) -> None:
    assert resin_v0.protocol is None
    resin_v0.v0_send(v0.StartProcess("echo", ("hi",)))
    assert resin_v0.v0_collect()[:3] == (b"hi\n", b"", v0.ExitStatus(0))


@pytest.mark.heavy
def test_in_another_project(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """A project's own tests get the fixtures with no configuration (the
    README's example), and every resin is gone after the run."""
    pids = tmp_path / "pids"
    pytester.makeconftest(f"""
        import pytest

        @pytest.fixture(autouse=True)
        def _record(request):
            for name in ("resin_v0", "resin_v1"):
                if name in request.fixturenames:
                    with open({str(pids)!r}, "a") as f:
                        f.write(f"{{request.getfixturevalue(name).pid}}\\n")
            yield
    """)
    section = README.read_text().split("## Driving resin from Python", 1)[1]
    example = next(b for b in re.findall(r"```python\n(.*?)```", section, re.S) if "def test_" in b)
    pytester.makepyfile(test_mytool=example)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    recorded = [int(p) for p in pids.read_text().split()]
    assert len(recorded) == 2
    for pid in recorded:  # resin was killed and reaped at teardown
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.heavy
def test_resin_command_can_be_overridden(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
        import sys
        import pytest

        @pytest.fixture
        def resin_command():
            return [sys.executable, "-c", "import sys; sys.exit(0)"]
    """)
    pytester.makepyfile(test_other="""
        def test_it(resin_v0, resin_command):
            assert resin_v0.proc.args == resin_command
    """)
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
