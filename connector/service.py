"""``connector run``: every source on its schedule until SIGTERM or SIGINT, then stop
taking files, commit or abandon (resumably) the one in hand, and exit 0. SIGHUP reads the
config file again and applies what changed in its sources (``Service._reload``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import structlog

from connector.config import Config, SourceConfig
from connector.errors import (
    ConfigError,
    ConnectorError,
    Interrupted,
    StorageError,
    StoreBusy,
)
from connector.expected import overdue
from connector.housekeeping import tidy
from connector.ingest import Ingestor
from connector.metrics import Metrics
from connector.notify import notify, watchdog_interval
from connector.pipeline import Poller
from connector.redaction import cause_of
from connector.scheduler import Scheduler, backoff_delay, period
from connector.signals import stop_on_signals
from connector.sources.watch import FolderWatch
from connector.store import open_store
from connector.store.port import Store
from connector.webhook import Webhook

JITTER_SHARE, JITTER_CAP = 0.1, 30.0
LISTING_SHARE = 0.8


class _Waking(threading.Event):
    """An event that also sets ``wake`` when set: the service's loop waits on that one
    for a stop and a reload request alike."""

    def __init__(self, wake: threading.Event) -> None:
        super().__init__()
        self._wake = wake

    def set(self) -> None:
        super().set()
        self._wake.set()


class Service:
    def __init__(self, config: Config, load: Callable[[], Config] | None = None) -> None:
        """``load`` reads the config again as it was read at start-up, for SIGHUP; without
        it, SIGHUP keeps its default action (the process ends)."""
        self.config = config
        self.load = load
        self._woken = threading.Event()  # a stop or a reload asked for
        self.stopping: threading.Event = _Waking(self._woken)
        self.metrics = Metrics(config.metrics.max_missed_polls)
        self.metrics.register_sources(s.name for s in config.sources)
        self.log = structlog.get_logger()
        self.started = time.time()  # (a source with no file yet is awaited from here)
        self._added: dict[str, float] = {}  # ...or from when a reload added it
        self._overdue: set[str] = set()  # sources said to be overdue, until a file comes
        self._watches: dict[str, ExitStack] = {}  # each file:// source's folder watch
        self.webhook: Webhook | None = None
        self._failing: set[str] = set()  # sources the webhook was told are failing
        # Held while a reload replaces the sources, and while a poll's end checks that its
        # source is still configured: a source removed meanwhile leaves no metric behind.
        self._lock = threading.Lock()

    def run(self) -> int:
        with ExitStack() as stack:
            reload = None if self.load is None else self._woken.set
            stack.enter_context(stop_on_signals(self.stopping, reload))
            if self.config.metrics.listen:
                stack.enter_context(self.metrics.serve(self.config.metrics.listen))
            store = stack.enter_context(open_store(self.config.store))
            self.webhook = Webhook.configured(self.config.webhook)
            if self.webhook is not None:  # (closed after the scheduler: the last polls' too)
                stack.callback(self.webhook.close)
            scheduler = Scheduler()
            stack.callback(self._unwatch, self._watches)
            for source in self.config.sources:
                self._schedule(scheduler, store, source)
            # (an id no source can take: names are letters, digits, "_", "." and "-")
            scheduler.add("(housekeeping)", lambda: tidy(self.config, store), interval=3600)
            notify("READY=1")  # before the first poll can send a STATUS line
            scheduler.start()
            self.metrics.scheduler_running(True)
            stack.callback(self.metrics.scheduler_running, False)
            stack.callback(scheduler.stop)
            self.log.info("service_started", sources=[s.name for s in self.config.sources])
            ping = watchdog_interval()
            while True:
                woken = self._woken.wait(ping or 3600)
                self._woken.clear()
                if self.stopping.is_set():
                    break
                if woken and self.load is not None:  # (then a reload was asked for)
                    notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
                    self._reload(self.load, scheduler, store)
                    notify("READY=1")
                notify("WATCHDOG=1")
            notify("STOPPING=1")
            self.log.info("service_stopping")
        self.log.info("service_stopped")
        return 0

    def _reload(self, load: Callable[[], Config], scheduler: Scheduler, store: Store) -> None:
        """Read the config again and apply the changes to its sources: those added are
        scheduled, those removed unscheduled, those changed scheduled anew (a poll in
        progress goes on to its end, with what it had). What lies outside the sources
        changes only with a restart: the running values are kept, the keys logged. A
        config that cannot be read or is not valid changes nothing."""
        try:
            read = load()
        except (ConfigError, OSError) as exc:
            # (a key and what is wrong with it, as at start-up: never its value)
            self.log.error("config_reload_failed", cause=str(exc))
            return
        restart = _restart_only(self.config, read)
        if restart:
            self.log.warning("config_reload_needs_restart", keys=restart)
        before = {s.name: s for s in self.config.sources}
        after = {s.name: s for s in read.sources}
        added = [name for name in after if name not in before]
        removed = [name for name in before if name not in after]
        changed = [name for name in after if name in before and after[name] != before[name]]
        with self._lock:
            self.config = self.config.model_copy(update={"sources": read.sources})
            self._added.update(dict.fromkeys(added, time.time()))
            self.metrics.register_sources(added)
        self._forget(removed)
        for name in removed + changed:
            scheduler.remove(name)
            self._unwatch([name])
        for name in changed + added:
            self._schedule(scheduler, store, after[name])
        self.log.info("config_reloaded", added=added, removed=removed, changed=changed)

    def _forget(self, names: Iterable[str]) -> None:
        """Of these sources, those no longer configured are no longer reported."""
        with self._lock:
            gone = [name for name in names if self.config.source(name) is None]
            self.metrics.forget_sources(gone)
            self._overdue.difference_update(gone)
            for name in gone:
                self._added.pop(name, None)

    def _schedule(self, scheduler: Scheduler, store: Store, source: SourceConfig) -> None:
        ingestor = Ingestor.configured(store, self.config, stop=self.stopping.is_set)
        interval = source.interval
        # Replicas take turns listing a source, about once a poll period between them all:
        # a turn is taken only after 80% of it, which the jitter cannot undercut. A local
        # folder is listed at every poll (its watch asks for polls): listing it loads no
        # server, and it is this host's.
        every = 0.0 if source.scheme == "file" else LISTING_SHARE * period(interval, source.cron)
        poller = Poller(
            self.config,
            source,
            store,
            ingestor=ingestor,
            every=every,
            sleep=self.stopping.wait,
            received=partial(self.metrics.received, source.name),
            action_failed=partial(self.metrics.action_failed, source.name),
        )
        scheduler.add(
            source.name,
            partial(self._poll, poller),
            interval=interval,
            cron=source.cron,
            jitter=min(JITTER_CAP, (interval or 0) * JITTER_SHARE),
        )
        if source.scheme == "file":
            watch = ExitStack()
            watch.enter_context(
                FolderWatch(Path(source.remote_path), partial(scheduler.poll_now, source.name))
            )
            self._watches[source.name] = watch

    def _unwatch(self, names: Iterable[str]) -> None:
        """Stop the folder watches of these sources (those that have one)."""
        for name in list(names):
            watch = self._watches.pop(name, None)
            if watch is not None:
                watch.close()

    def _alert_failing(self, source: SourceConfig, failures: int, exc: Exception) -> None:
        """The webhook hears of a source once it failed past `max_missed_polls` polls in a
        row (once per run of failures; its recovery is said too)."""
        if self.webhook is None or failures <= self.config.metrics.max_missed_polls:
            return
        if source.name not in self._failing:
            self._failing.add(source.name)
            self.webhook.alert(
                "source_failing",
                source=source.name,
                tenant=source.tenant,
                failures=failures,
                cause=cause_of(exc),
            )

    def _expecting(self, poller: Poller) -> None:
        """After a poll: whether the source is past its `expect_every`, said once when it
        becomes so (`file_overdue`), and as a metric at every poll."""
        source = poller.source
        since = self._added.get(source.name, self.started)
        late = overdue(source, poller.store.ledger, time.time(), since)
        self.metrics.source_overdue(source.name, late is not None)
        if late is None:
            self._overdue.discard(source.name)
        elif source.name not in self._overdue:
            self._overdue.add(source.name)
            self.log.warning("file_overdue", source=source.name, why=late.text(source))

    def _poll(self, poller: Poller) -> float | None:
        """One scheduled poll; returns a backoff delay after a failure."""
        try:
            return self._polled(poller)
        finally:
            # Its source removed by a reload meanwhile: what it just reported goes too.
            self._forget([poller.source.name])

    def _polled(self, poller: Poller) -> float | None:
        name = poller.source.name
        started = time.monotonic()
        try:
            summary = poller.poll(stop=self.stopping.is_set)
        except Interrupted:
            return None
        except Exception as exc:  # the service loop is an error boundary: log, back off
            failures = self.metrics.poll_finished(
                name,
                time.monotonic() - started,
                ok=False,
                store_failed=isinstance(exc, StorageError | StoreBusy),
            )
            if not isinstance(exc, ConnectorError):
                self.log.exception("poll_crashed", source=name)
            self._alert_failing(poller.source, failures, exc)
            delay = backoff_delay(failures)
            retry_at = datetime.now(UTC) + timedelta(seconds=delay)
            self.log.warning(
                "poll_failed",
                source=name,
                cause=cause_of(exc),
                failures=failures,
                next_retry=retry_at.isoformat(timespec="seconds"),
            )
            return delay
        seconds = time.monotonic() - started
        self.metrics.poll_finished(name, seconds, ok=True)
        for entry in summary.taken.values():
            self.metrics.file_finished(entry)
        if self.webhook is not None:
            self.webhook.rejected(summary.taken.values(), poller.store.ledger)
            if name in self._failing:
                self._failing.discard(name)
                self.webhook.alert("source_recovered", source=name, tenant=poller.source.tenant)
        self._expecting(poller)
        self.log.info(
            "poll_done",
            source=name,
            taken=len(summary.taken),
            pending=len(summary.pending),
            seconds=round(seconds, 3),
        )
        notify(f"STATUS=last poll: {name}, {len(summary.taken)} file(s) taken")
        return None


def _restart_only(running: Config, read: Config) -> list[str]:
    """The keys outside the sources whose value ``read`` changes (``store.path``, ...):
    the store, folders, listener and ingest settings are taken at start-up only."""
    keys = []
    for table in Config.model_fields:
        was, now = getattr(running, table), getattr(read, table)
        if table != "sources" and was != now:
            keys += [
                f"{table}.{key}"
                for key in type(was).model_fields
                if getattr(was, key) != getattr(now, key)
            ]
    return keys
