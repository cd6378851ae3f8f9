"""Polling schedules, behind one small API so that APScheduler stays in this module alone.

Each source is one job: never two polls of a source at once (``max_instances=1``), missed
runs coalesced into one, a jitter so that many sources do not hit their servers in step.
A source that fails backs off exponentially (up to a cap) while the others go on; a
watchdog signal or a wish to poll again runs a job now, or right after its current run.
Sources come and go while it runs (a reload): a poll in progress is never cut short.
"""

from __future__ import annotations

import itertools
import sys
import threading
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

BACKOFF_START = 5.0
BACKOFF_CAP = 15 * 60.0
DEFAULT_INTERVAL = 300.0
_PERIOD_FIRES = 50  # a cron's next fires looked at for its period (a month of daily ones)


# crontab(5) counts weekdays from Sunday (0, and 7 too); APScheduler from Monday (0). Days
# given by number are therefore handed over by name, which both read alike.
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _weekday_names(field: str) -> str:
    """A crontab day-of-week field with its numbers as day names (`1-5` → `mon,...,fri`);
    ranges are spelled out, since a range may wrap past Saturday in names (`0-6`)."""
    if not any(c.isdigit() for c in field):
        return field  # `*`, names: the same in both
    days: list[str] = []
    for part in field.split(","):
        span, _, step = part.partition("/")
        first, _, last = span.partition("-")
        if span == "*":
            first, last = "0", "6"
        elif not last:
            last = "7" if step else first  # `1/2`: from Monday on, every other day
        if not (first.isdigit() and last.isdigit() and (not step or step.isdigit())):
            raise ValueError(f"day of week {part!r}: use numbers 0-7 or names, not both")
        low, high = int(first), int(last)
        if high > 7 or low > high or step == "0":
            raise ValueError(f"day of week {part!r} is out of range (0-7, Sunday is 0 or 7)")
        days += [_WEEKDAYS[day % 7] for day in range(low, high + 1, int(step or 1))]
    return ",".join(dict.fromkeys(days))


def cron_trigger(expression: str) -> CronTrigger:
    fields = expression.split()
    if len(fields) == 5:
        fields[4] = _weekday_names(fields[4])
    return CronTrigger.from_crontab(" ".join(fields), timezone=UTC)


def validate_cron(expression: str) -> None:
    """Refuse (ValueError, saying why) a cron expression that ``Scheduler.add`` could not
    run: not five fields, a value out of range, or a date that never comes (Feb 30). For
    the config, so that `check` and every command see it at start-up, not `run` alone."""
    try:
        trigger = cron_trigger(expression)
    except ValueError as exc:
        raise ValueError(f"not a cron expression ({exc}); e.g. '*/5 * * * *'") from None
    if trigger.get_next_fire_time(None, datetime.now(UTC)) is None:
        raise ValueError(f"{expression!r} never fires")


def period(interval: float | None, cron: str | None) -> float:
    """Seconds between two polls of a source: its interval, or the shortest gap between
    its cron's next fires (a weekday cron's is a day, not the weekend's three)."""
    if cron is None:
        return interval or DEFAULT_INTERVAL
    trigger = cron_trigger(cron)
    fires: list[datetime] = []
    moment = datetime.now(UTC)
    while len(fires) < _PERIOD_FIRES:
        moment = trigger.get_next_fire_time(fires[-1] if fires else None, moment)
        if moment is None:  # (validated: it fires; so many more times is not promised)
            break
        fires.append(moment)
        moment += timedelta(seconds=1)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(fires)]
    return float(min(gaps)) if gaps else DEFAULT_INTERVAL


def backoff_delay(failures: int, start: float = BACKOFF_START, cap: float = BACKOFF_CAP) -> float:
    """Seconds before retrying a source after ``failures`` consecutive failed polls."""
    return float(min(cap, start * 2 ** max(0, failures - 1)))


class Scheduler:
    """Runs ``poll()`` for each source on its schedule, in a thread pool."""

    def __init__(self) -> None:
        # A thread is made only when a poll starts while every other one is busy, and a
        # source is never polled twice at once: the pool holds a thread a source at most
        # (housekeeping counts as one), however many sources a reload adds.
        self._scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=sys.maxsize)},
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
            timezone=UTC,
        )
        self._lock = threading.Lock()
        self._polls: dict[str, Callable[[], float | None]] = {}  # each source's current one
        self._running: set[str] = set()
        self._again: set[str] = set()

    def add(
        self,
        name: str,
        poll: Callable[[], float | None],
        *,
        interval: float | None = None,
        cron: str | None = None,
        jitter: float = 0.0,
    ) -> None:
        """Schedule ``poll`` for source ``name``, first run at once (or, when it replaces a
        removed source of that name still polling, as soon as that poll ends). ``poll``
        returns None when all went well, else the seconds to wait before the next try
        (a backoff)."""
        trigger: BaseTrigger
        if cron is not None:
            trigger = cron_trigger(cron)
        else:
            trigger = IntervalTrigger(seconds=interval or DEFAULT_INTERVAL, jitter=jitter or None)
        now = datetime.now(UTC)
        with self._lock:  # (so that the poll in progress, ending, finds this one to run)
            self._polls[name] = poll
            first = trigger.get_next_fire_time(None, now) if name in self._running else now
            self._scheduler.add_job(
                self._run, trigger, args=(name, poll), id=name, name=name, next_run_time=first
            )

    def remove(self, name: str) -> None:
        """No more polls of ``name``; one in progress goes on to its end."""
        with self._lock:
            del self._polls[name]
            self._scheduler.remove_job(name)

    def _run(self, name: str, poll: Callable[[], float | None]) -> None:
        with self._lock:
            self._running.add(name)
        try:
            retry_in = poll()
        finally:
            with self._lock:
                self._running.discard(name)
                again = name in self._again
                self._again.discard(name)
                successor = self._polls.get(name)
        if successor is not poll:
            # Removed, or replaced by new settings: its outcome is no backoff of theirs,
            # and a replacement, held back until now, runs at once.
            retry_in, again = None, successor is not None
        if retry_in is not None:
            self._at(name, datetime.now(UTC) + timedelta(seconds=retry_in))
        elif again:
            self._at(name, datetime.now(UTC))

    def poll_now(self, name: str) -> None:
        """Poll ``name`` at once, or as soon as its current poll ends."""
        with self._lock:
            if name in self._running:
                self._again.add(name)
                return
        self._at(name, datetime.now(UTC))

    def _at(self, name: str, when: datetime) -> None:
        if self._scheduler.running:
            with suppress(JobLookupError):  # (its source removed meanwhile: none to poll)
                self._scheduler.modify_job(name, next_run_time=when)

    def start(self) -> None:
        self._scheduler.start()

    def stop(self) -> None:
        """No new polls; wait for those in progress (they stop between files)."""
        self._scheduler.shutdown(wait=True)
