"""A short seeded slice of `make fuzz` (bench/fuzz.py): hostile frames of both
protocols at real resins while canary `cat`s echo checked payloads."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

FUZZ = Path(__file__).resolve().parent.parent / "bench" / "fuzz.py"


def load_fuzzer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("resin_fuzz", FUZZ)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["resin_fuzz"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.heavy
def test_fuzz_slice(tmp_path: Path) -> None:
    fuzz = load_fuzzer()
    opts = fuzz.Options(seed=8, frames=4000, v0_share=0.25, out_dir=str(tmp_path),
                        measure=False, verbose=False)
    stats = fuzz.run(opts)
    summary = fuzz.report(stats)
    assert stats.frames >= 4000, summary
    assert stats.deaths == 0 and stats.hangs == 0, summary
    assert stats.mismatches == 0 and stats.canary_exits == 0, summary
    assert stats.canary_rounds >= 10, summary  # the canaries answered, round after round
    assert stats.v0_bad_lifecycle == 0 and stats.internal_errors == 0, summary
    assert stats.bad_packets == 0, summary
    assert stats.v0_resins >= 1 and stats.v1_frames > 2000, summary
