"""scheduler.py with the real APScheduler: no overlapping polls of a source, a poll asked
for during a poll runs right after it, and a failing source waits its backoff."""

from __future__ import annotations

import threading
import time
from itertools import pairwise

from connector.scheduler import Scheduler
from tests.source_contract import wait_until


def test_polls_of_one_source_never_overlap_and_poll_now_runs_after() -> None:
    """poll_now during a running poll does not start a second one; it runs right after."""
    running, overlaps, runs = threading.Event(), [], []
    release = threading.Event()

    def poll() -> float | None:
        if running.is_set():
            overlaps.append(time.monotonic())
        running.set()
        runs.append(time.monotonic())
        if len(runs) == 1:
            release.wait(5)
        running.clear()
        return None

    scheduler = Scheduler(workers=4)
    scheduler.add("s", poll, interval=3600)
    scheduler.start()
    try:
        assert wait_until(lambda: len(runs) == 1, 5)
        scheduler.poll_now("s")
        scheduler.poll_now("s")
        time.sleep(0.3)
        assert len(runs) == 1  # still in the first poll: nothing started beside it
        release.set()
        assert wait_until(lambda: len(runs) == 2, 5)  # the wish to poll again, once
        time.sleep(0.3)
        assert len(runs) == 2 and overlaps == []
    finally:
        scheduler.stop()


def test_a_failing_poll_waits_its_backoff() -> None:
    """The delay a poll returns postpones the next run; the other sources go on."""
    failing, healthy = [], []

    def fail() -> float | None:
        failing.append(time.monotonic())
        return 0.5

    def ok() -> float | None:
        healthy.append(time.monotonic())
        return None

    scheduler = Scheduler(workers=2)
    scheduler.add("bad", fail, interval=3600)
    scheduler.add("good", ok, interval=0.2)
    scheduler.start()
    try:
        assert wait_until(lambda: len(failing) >= 2, 5)
        assert failing[1] - failing[0] >= 0.45  # retried after its backoff, not its hour
        assert len(healthy) >= 2  # the healthy source kept its own schedule meanwhile
    finally:
        scheduler.stop()


def test_jitter_spreads_the_polls_of_a_source() -> None:
    """With a jitter, each run comes up to that much after its interval: sources on the
    same schedule do not hit their servers in step."""
    runs: list[float] = []

    def poll() -> float | None:
        runs.append(time.monotonic())
        return None

    scheduler = Scheduler(workers=1)
    scheduler.add("s", poll, interval=0.1, jitter=0.3)
    scheduler.start()
    try:
        assert wait_until(lambda: len(runs) >= 8, 10)
    finally:
        scheduler.stop()
    gaps = [later - earlier for earlier, later in pairwise(runs)]
    assert max(gaps) - min(gaps) > 0.05, gaps  # 8 draws from 0-0.3 s are never that close
