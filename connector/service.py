"""``connector run``: every source on its schedule until SIGTERM or SIGINT, then stop
taking files, commit or abandon (resumably) the one in hand, and exit 0."""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import structlog

from connector.config import Config, SourceConfig, parse_duration
from connector.errors import ConnectorError, Interrupted, StorageError, StoreBusy
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

JITTER_SHARE, JITTER_CAP = 0.1, 30.0
LISTING_SHARE = 0.8


class Service:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.stopping = threading.Event()
        self.metrics = Metrics(config.metrics.max_missed_polls)
        self.metrics.register_sources(s.name for s in config.sources)
        self.log = structlog.get_logger()
        self.started = time.time()  # (a source with no file yet is awaited from here)
        self._overdue: set[str] = set()  # sources said to be overdue, until a file comes

    def run(self) -> int:
        with ExitStack() as stack:
            stack.enter_context(stop_on_signals(self.stopping))
            if self.config.metrics.listen:
                stack.enter_context(self.metrics.serve(self.config.metrics.listen))
            store = stack.enter_context(open_store(self.config.store))
            scheduler = Scheduler(workers=len(self.config.sources) + 1)
            for source in self.config.sources:
                self._schedule(stack, scheduler, store, source)
            # (an id no source can take: names are letters, digits, "_", "." and "-")
            scheduler.add("(housekeeping)", lambda: tidy(self.config, store),
                          interval=3600)  # fmt: skip
            notify("READY=1")  # before the first poll can send a STATUS line
            scheduler.start()
            self.metrics.scheduler_running(True)
            stack.callback(self.metrics.scheduler_running, False)
            stack.callback(scheduler.stop)
            self.log.info("service_started", sources=[s.name for s in self.config.sources])
            ping = watchdog_interval()
            while not self.stopping.wait(ping or 3600):
                notify("WATCHDOG=1")
            notify("STOPPING=1")
            self.log.info("service_stopping")
        self.log.info("service_stopped")
        return 0

    def _schedule(
        self, stack: ExitStack, scheduler: Scheduler, store: Store, source: SourceConfig
    ) -> None:
        ingestor = Ingestor.configured(store, self.config, stop=self.stopping.is_set)
        interval = parse_duration(source.interval) if source.interval else None
        # Replicas take turns listing a source, about once a poll period between them all:
        # a turn is taken only after 80% of it, which the jitter cannot undercut. A local
        # folder is listed at every poll (its watch asks for polls): listing it loads no
        # server, and it is this host's.
        every = 0.0 if source.scheme == "file" else LISTING_SHARE * period(interval, source.cron)
        poller = Poller(self.config, source, store, ingestor=ingestor, every=every,
                        sleep=self.stopping.wait,
                        received=partial(self.metrics.received, source.name))  # fmt: skip
        scheduler.add(
            source.name, partial(self._poll, poller), interval=interval, cron=source.cron,
            jitter=min(JITTER_CAP, (interval or 0) * JITTER_SHARE),
        )  # fmt: skip
        if source.scheme == "file":
            watch = FolderWatch(Path(source.remote_path), partial(scheduler.poll_now, source.name))
            stack.enter_context(watch)

    def _expecting(self, poller: Poller) -> None:
        """After a poll: whether the source is past its `expect_every`, said once when it
        becomes so (`file_overdue`), and as a metric at every poll."""
        source = poller.source
        late = overdue(source, poller.store.ledger, time.time(), self.started)
        self.metrics.source_overdue(source.name, late is not None)
        if late is None:
            self._overdue.discard(source.name)
        elif source.name not in self._overdue:
            self._overdue.add(source.name)
            self.log.warning("file_overdue", source=source.name, why=late.text(source))

    def _poll(self, poller: Poller) -> float | None:
        """One scheduled poll; returns a backoff delay after a failure."""
        name = poller.source.name
        started = time.monotonic()
        try:
            summary = poller.poll(stop=self.stopping.is_set)
        except Interrupted:
            return None
        except Exception as exc:  # the service loop is an error boundary: log, back off
            failures = self.metrics.poll_finished(
                name, time.monotonic() - started, ok=False,
                store_failed=isinstance(exc, StorageError | StoreBusy),
            )  # fmt: skip
            if not isinstance(exc, ConnectorError):
                self.log.exception("poll_crashed", source=name)
            delay = backoff_delay(failures)
            retry_at = datetime.now(UTC) + timedelta(seconds=delay)
            self.log.warning(
                "poll_failed", source=name, cause=cause_of(exc), failures=failures,
                next_retry=retry_at.isoformat(timespec="seconds"),
            )  # fmt: skip
            return delay
        seconds = time.monotonic() - started
        self.metrics.poll_finished(name, seconds, ok=True)
        for entry in summary.taken.values():
            self.metrics.file_finished(entry)
        self._expecting(poller)
        self.log.info(
            "poll_done", source=name, taken=len(summary.taken), pending=len(summary.pending),
            seconds=round(seconds, 3),
        )  # fmt: skip
        notify(f"STATUS=last poll: {name}, {len(summary.taken)} file(s) taken")
        return None
