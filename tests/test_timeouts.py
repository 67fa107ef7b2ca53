"""The tests' wall-clock limits are hang guards scaled for a slow machine (tests/support/timeouts.py).
The cause of a load-dependent failure (issue 15, item 10): a fixed limit sized on an idle machine --
the session pipeline's 900 s -- killed the run at ~50 % CPU steal and errored every test reading it."""

from __future__ import annotations

import subprocess

import pytest

from support import workflow
from support.timeouts import DEFAULT_SCALE, SCALE_ENV, hang_guard


def test_limits_are_scaled_for_a_slow_machine(monkeypatch):
    monkeypatch.delenv(SCALE_ENV, raising=False)
    assert DEFAULT_SCALE >= 4 and hang_guard(900) == 900 * DEFAULT_SCALE
    monkeypatch.setenv(SCALE_ENV, "10")
    assert hang_guard(120) == 1200
    for bad in ("fast", "0", "-1"):
        monkeypatch.setenv(SCALE_ENV, bad)
        with pytest.raises(ValueError, match=SCALE_ENV):
            hang_guard(1)


def test_run_snakemake_passes_the_scaled_limit(monkeypatch, tmp_path):
    """The pipeline fixture's run: its 900 s idle-machine limit reaches subprocess scaled."""
    seen = {}

    def fake_run(cmd, **kw):
        seen.update(kw)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.delenv(SCALE_ENV, raising=False)
    monkeypatch.setattr(workflow.subprocess, "run", fake_run)
    workflow.run_snakemake(tmp_path, {"actors": {}}, "-n")
    assert seen["timeout"] == 900 * DEFAULT_SCALE
