"""scheduler.py with the real APScheduler: no overlapping polls of a source, a poll asked
for during a poll runs right after it, a failing source waits its backoff, and a source
removed or replaced (a reload) ends the poll in progress before anything else."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest

from connector.scheduler import (
    DEFAULT_INTERVAL,
    Scheduler,
    cron_trigger,
    period,
    validate_cron,
)
from tests.helpers import wait_until


@contextmanager
def _started(name: str, poll: Callable[[], float | None], **schedule: Any) -> Iterator[Scheduler]:
    """A running scheduler polling ``name`` with ``poll``; stopped on leaving."""
    scheduler = Scheduler()
    scheduler.add(name, poll, **schedule)
    scheduler.start()
    try:
        yield scheduler
    finally:
        scheduler.stop()


@pytest.mark.slow
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

    with _started("s", poll, interval=3600) as scheduler:
        assert wait_until(lambda: len(runs) == 1, 5)
        scheduler.poll_now("s")
        scheduler.poll_now("s")
        time.sleep(0.3)
        assert len(runs) == 1  # still in the first poll: nothing started beside it
        release.set()
        assert wait_until(lambda: len(runs) == 2, 5)  # the wish to poll again, once
        time.sleep(0.3)
        assert len(runs) == 2 and overlaps == []


@pytest.mark.slow
def test_a_failing_poll_waits_its_backoff() -> None:
    """The delay a poll returns postpones the next run; the other sources go on."""
    failing, healthy = [], []

    def fail() -> float | None:
        failing.append(time.monotonic())
        return 0.5

    def ok() -> float | None:
        healthy.append(time.monotonic())
        return None

    with _started("bad", fail, interval=3600) as scheduler:
        scheduler.add("good", ok, interval=0.2)
        assert wait_until(lambda: len(failing) >= 2, 5)
        assert failing[1] - failing[0] >= 0.45  # retried after its backoff, not its hour
        assert len(healthy) >= 2  # the healthy source kept its own schedule meanwhile


@pytest.mark.slow
def test_a_source_removed_mid_poll_ends_that_poll_and_polls_no_more() -> None:
    runs, ended = [], []
    release = threading.Event()

    def poll() -> float | None:
        runs.append(time.monotonic())
        release.wait(5)
        ended.append(time.monotonic())
        return 0.05  # a backoff: no job to postpone any more

    with _started("s", poll, interval=0.1) as scheduler:
        assert wait_until(lambda: len(runs) == 1, 5)
        scheduler.remove("s")
        scheduler.poll_now("s")  # (its folder watch, not stopped yet: nothing to poll)
        release.set()
        assert wait_until(lambda: len(ended) == 1, 5)  # the poll went on to its end
        scheduler.poll_now("s")
        time.sleep(0.5)  # five of its intervals
        assert len(runs) == 1


@pytest.mark.slow
def test_a_replaced_source_polls_anew_right_after_the_old_poll() -> None:
    """New settings for a source polling: the new poll waits for the old one to end, then
    runs at once, without the old poll's backoff."""
    old_runs, new_runs = [], []
    release = threading.Event()

    def old() -> float | None:
        old_runs.append(time.monotonic())
        release.wait(5)
        return 900.0  # the old settings failed: their backoff is not the new ones'

    def new() -> float | None:
        new_runs.append(time.monotonic())
        return None

    with _started("s", old, interval=3600) as scheduler:
        assert wait_until(lambda: len(old_runs) == 1, 5)
        scheduler.remove("s")
        scheduler.add("s", new, interval=3600)
        time.sleep(0.3)
        assert new_runs == []  # never beside the old poll
        released = time.monotonic()
        release.set()
        assert wait_until(lambda: len(new_runs) == 1, 5)
        assert new_runs[0] >= released and len(old_runs) == 1


@pytest.mark.slow
def test_jitter_spreads_the_polls_of_a_source() -> None:
    """With a jitter, each run comes up to that much after its interval: sources on the
    same schedule do not hit their servers in step."""
    runs: list[float] = []

    def poll() -> float | None:
        runs.append(time.monotonic())
        return None

    with _started("s", poll, interval=0.1, jitter=0.3):
        assert wait_until(lambda: len(runs) >= 8, 10)
    gaps = [later - earlier for earlier, later in pairwise(runs)]
    assert max(gaps) - min(gaps) > 0.05, gaps  # 8 draws from 0-0.3 s are never that close


@pytest.mark.parametrize(
    ("expression", "weekdays"),
    [
        ("0 9 * * 1-5", {"Mon", "Tue", "Wed", "Thu", "Fri"}),
        ("0 9 * * 0", {"Sun"}),
        ("0 9 * * 7", {"Sun"}),
        ("0 9 * * 5-7", {"Fri", "Sat", "Sun"}),
        ("0 9 * * 0-6", {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"}),
        ("0 9 * * */2", {"Sun", "Tue", "Thu", "Sat"}),
        ("0 9 * * 1,3", {"Mon", "Wed"}),
        ("0 9 * * mon-fri", {"Mon", "Tue", "Wed", "Thu", "Fri"}),
    ],
)
def test_cron_weekday_numbers_count_from_sunday_as_crontab_does(
    expression: str, weekdays: set[str]
) -> None:
    """Day-of-week numbers mean what crontab(5) says (0 and 7 are Sunday), not
    APScheduler's Monday-first numbering."""
    trigger, moment = cron_trigger(expression), datetime(2026, 12, 6, tzinfo=UTC)
    fired = set()
    for _ in range(14):
        moment = trigger.get_next_fire_time(None, moment + timedelta(seconds=1))
        fired.add(moment.strftime("%a"))
    assert fired == weekdays


@pytest.mark.parametrize("expression", ["0 9 * * 8", "0 9 * * 5-1", "0 9 * * 1-fri", "0 9 * * */0"])
def test_a_weekday_out_of_range_is_refused_saying_so(expression: str) -> None:
    """A day of week crontab would not accept is a config error naming the field."""
    with pytest.raises(ValueError, match="day of week"):
        validate_cron(expression)


@pytest.mark.parametrize(
    ("cron", "hours"),
    [("0 9 * * 1-5", 24), ("0 9,17 * * *", 8), ("*/5 * * * *", 5 / 60), ("0 0 1 * *", 28 * 24)],
)
def test_a_crons_period_is_its_shortest_gap(cron: str, hours: float) -> None:
    """Replicas take turns listing about once a period: a weekday cron's period is a day
    (its weekend gap would skip the weekday polls), twice a day is the shorter gap."""
    assert period(None, cron) == hours * 3600


def test_an_intervals_period_is_the_interval() -> None:
    assert period(90.0, None) == 90.0
    assert period(None, None) == DEFAULT_INTERVAL
