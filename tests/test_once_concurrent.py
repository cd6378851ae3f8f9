"""`connector once` polls its sources at once: one source waiting for a file to settle
(`min_age`) does not hold the others up; the lines still come in the config's order, and
a stop ends every poll."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import drop_config

# Slow (pyproject's `slow` marker): concurrent `connector once` subprocesses.
pytestmark = pytest.mark.slow

EVENTS = [{"kind": "events", "pattern": "*.csv", "event_name": "visit"}]


def _two_sources(root: Path) -> Path:
    """Sources "drop" (root/inbox) then "quick" (root/quick), both waiting an hour for new
    files and moving those taken to processed/."""
    config = drop_config(root, files=EVENTS, min_age="1h", after="move:processed")
    text = config.read_text()
    quick = text[text.index("[[sources]]") :].replace('name = "drop"', 'name = "quick"')
    config.write_text(text + quick.replace(str(root / "inbox"), str(root / "quick")))
    (root / "quick").mkdir()
    return config


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_source_waiting_for_a_file_does_not_hold_up_the_next(
    tmp_path: Path, stop: signal.Signals
) -> None:
    """Source "drop" has a file written just now: its poll waits its min_age (an hour).
    Meanwhile "quick", listed after it, takes its file (modified two hours ago: settled).
    A stop then ends drop's poll: both lines, in the config's order, and exit 0."""
    config = _two_sources(tmp_path)
    (tmp_path / "inbox" / "new.csv").write_text("identifier\nu1\n")
    old = tmp_path / "quick" / "old.csv"
    old.write_text("identifier\nu2\n")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    argv = [sys.executable, "-m", "connector", "--config", str(config), "once"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as once:
        try:
            moved = tmp_path / "quick" / "processed" / "old.csv"
            deadline = time.monotonic() + 60
            while not moved.exists() and once.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert moved.exists(), "quick's file was not taken while drop waited"
            once.send_signal(stop)
            out, err = once.communicate(timeout=60)
        finally:
            once.kill()
    assert once.returncode == 0, err
    assert out.splitlines() == [
        "drop: stopped; the file in hand resumes next time",
        "quick: 1 ingested",
    ]
    assert (tmp_path / "inbox" / "new.csv").exists()
