"""What the tests share: config builders (TOML files and config objects), the test doubles
(a source whose reads break, a clock moved by hand), waiting for a condition, and running
the daemon. One copy of each, so that a change of the config or of the Source port is
made here once. Fixtures are in conftest.py."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import pytest

from connector.cli import main
from connector.config import Config, SourceConfig, parse_duration
from connector.errors import TransientError
from connector.ingest import Ingestor
from connector.pipeline import Poller
from connector.sources.base import RemoteFile, Source
from connector.sources.local import LocalSource
from connector.store.port import Store
from connector.testing import EmbeddedFTPServer, EmbeddedSFTPServer

# File entries most tests need: all contacts files, or events files with a fallback name
# (so that the files need no `name` column).
CONTACTS = [{"kind": "contacts", "pattern": "*.csv"}]
EVENTS = [{"kind": "events", "pattern": "*.csv", "event_name": "e"}]

# --- config files (TOML) ------------------------------------------------------------------


def toml_value(value: Any) -> str:
    """A TOML literal for the small subset of values the tests use."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value), ensure_ascii=False)  # JSON strings are TOML strings
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        items = ", ".join(f"{toml_value(str(k))} = {toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }"
    raise TypeError(f"no TOML for {value!r}")


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _is_tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else toml_value(name)


def _write_table(lines: list[str], name: str, value: Mapping[str, Any] | list[Any]) -> None:
    """``value`` as ``[name]`` (a mapping) or as ``[[name]]`` tables (a list of mappings);
    a list of mappings inside becomes its own ``[[name.key]]`` tables (``sources.files``),
    a mapping inside an inline table (``columns``)."""
    for table, header in (
        [(item, f"[[{name}]]") for item in value]
        if isinstance(value, list)
        else [(value, f"[{name}]")]
    ):
        lines.append(header)
        lines += [f"{_key(k)} = {toml_value(v)}" for k, v in table.items() if not _is_tables(v)]
        for key, sub in table.items():  # after the keys: a header ends the table's own keys
            if _is_tables(sub):
                _write_table(lines, f"{name}.{key}", sub)


def toml_document(tables: Mapping[str, Mapping[str, Any] | list[Any]]) -> str:
    """TOML text of ``tables``: each a table (a mapping) or an array of tables."""
    lines: list[str] = []
    for name, value in tables.items():
        _write_table(lines, name, value)
    return "\n".join(lines) + "\n"


def local_source(
    root: Path,
    name: str,
    *,
    files: Sequence[Mapping[str, Any]] = EVENTS,
    folder: str | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """A `[[sources]]` table: a file:// source ``name`` on ``root/folder`` (by default
    ``root/name``), the folder made. A setting given as None is left out: its default
    applies."""
    inbox = root / (folder or name)
    inbox.mkdir(parents=True, exist_ok=True)
    given = {k: v for k, v in settings.items() if v is not None}
    return {"name": name, "url": f"file://{inbox}", **given, "files": list(files)}


def write_config(
    root: Path,
    *sources: Mapping[str, Any],
    store: Mapping[str, Any] | None = None,
    ingest: Mapping[str, Any] | None = None,
    **tables: Mapping[str, Any],
) -> Path:
    """Write and return ``root/connector.toml``: the store (by default an SQLite file,
    ``root/store/c.db``), staging and archive under ``root``, ``[ingest]`` and other
    ``tables`` (``webhook``, ``metrics``) where given, then the ``sources``."""
    document: dict[str, Any] = {
        "store": store or {"path": str(root / "store" / "c.db")},
        "paths": {"staging": str(root / "staging"), "archive": str(root / "archive")},
    }
    if ingest:
        document["ingest"] = ingest
    document.update(tables)
    if sources:
        document["sources"] = list(sources)
    path = root / "connector.toml"
    path.write_text(toml_document(document), encoding="utf-8")
    return path


def drop_config(
    root: Path,
    *,
    files: Sequence[Mapping[str, Any]],
    ingest: Mapping[str, Any] | None = None,
    tables: Mapping[str, Mapping[str, Any]] | None = None,
    **source: Any,
) -> Path:
    """A config (``write_config``, with ``ingest`` and other ``tables``) with one file://
    source named "drop" on ``root/inbox``: the usual end-to-end setup."""
    drop = local_source(root, "drop", files=files, folder="inbox", **source)
    return write_config(root, drop, ingest=ingest, **(tables or {}))


# --- config objects -------------------------------------------------------------------------


def source_config(
    url: str, *, name: str = "acme", files: Sequence[Mapping[str, Any]] = CONTACTS, **settings: Any
) -> SourceConfig:
    """A validated source ``name`` at ``url``, with these file entries and settings."""
    return SourceConfig.model_validate({"name": name, "url": url, "files": list(files), **settings})


def server_config(
    server: EmbeddedFTPServer | EmbeddedSFTPServer,
    path: str = "",
    *,
    port: int | None = None,
    **settings: Any,
) -> SourceConfig:
    """A source (``source_config``) on the folder ``path`` of an embedded ``server``,
    reached on ``port`` (a fault proxy's) or the server's own, with a 5 s timeout; on an
    FTP server, plain FTP allowed and, with TLS, the server's CA trusted."""
    scheme = server.url.split("://", 1)[0]
    url = f"{scheme}://{server.user}@{server.host}:{port or server.port}/{path}"
    given: dict[str, Any] = {"url": url, "timeout": "5s"}
    if isinstance(server, EmbeddedFTPServer):
        given |= {"allow_plaintext": True, "ca_file": server.ca_file if server.tls else None}
    return source_config(**(given | settings))


def configs(root: Path, **source: Any) -> tuple[Config, SourceConfig]:
    """The config of a store and paths under ``root``, and a source "s" on ``root/inbox``
    taking events files at once (``min_age`` 0s); ``source`` overrides its settings."""
    config = Config.model_validate(
        {
            "store": {"path": str(root / "store" / "c.db")},
            "paths": {"staging": str(root / "staging"), "archive": str(root / "archive")},
        }
    )
    settings: dict[str, Any] = {"name": "s", "min_age": "0s", "files": EVENTS} | source
    return config, source_config(settings.pop("url", f"file://{root / 'inbox'}"), **settings)


def local(folder: Path) -> LocalSource:
    """A file:// source on ``folder``, unopened."""
    return LocalSource(source_config(f"file://{folder}"))


def remote_file(folder: Path, name: str, data: bytes) -> RemoteFile:
    """``data`` written as ``folder/name``, and the file as a listing gives it."""
    (folder / name).write_bytes(data)
    info = (folder / name).stat()
    return RemoteFile(name, info.st_size, info.st_mtime)


# --- test doubles ---------------------------------------------------------------------------


class Flaky:
    """A real source (any adapter: ``connect`` makes one, unopened) whose reads break:
    ``failures`` times, each read that reaches ``cut`` bytes stops there, with a reset
    connection (TransientError) or, ``silent``, with no error at all (a TLS stream cut
    without its close_notify); the reads after those are whole. Each read's offset is
    kept in ``offsets``.

    Opened as a context manager (the Poller's ``opener``), it opens a new connection each
    time, as a connection re-made after a failure is; the count of failures carries over,
    so that one break is one break whatever connection it fell on. Used as is (download's
    ``connect``), it reads through one connection made at the start. ``broken = True``
    breaks every read, at once, until ``broken = False``."""

    def __init__(
        self,
        connect: Callable[[], Source],
        *,
        cut: int = 0,
        failures: int = 1,
        silent: bool = False,
    ) -> None:
        self.connect, self.cut, self.failures, self.silent = connect, cut, failures, silent
        self.offsets: list[int] = []
        self._opened: Source | None = None
        self.source = connect()

    @classmethod
    def at(cls, folder: Path, **faults: Any) -> Self:
        """One on the local folder ``folder``."""
        return cls(lambda: local(folder), **faults)

    @property
    def broken(self) -> bool:
        return self.failures > 0

    @broken.setter
    def broken(self, value: bool) -> None:
        self.cut, self.failures = 0, sys.maxsize if value else 0

    def __enter__(self) -> Self:
        self._opened = self.connect()
        self.source = self._opened.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._opened is not None:
            self._opened.__exit__(*exc)
            self._opened = None

    def __getattr__(self, name: str) -> Any:
        # list, complete, put, remove and whatever the port grows: the real source's own.
        return getattr(self.source, name)

    def read(self, name: str, offset: int = 0) -> Iterator[bytes]:
        self.offsets.append(offset)
        sent = 0
        for chunk in self.source.read(name, offset):
            if self.failures and sent + len(chunk) > self.cut:
                self.failures -= 1
                if self.cut > sent:
                    yield chunk[: self.cut - sent]
                if self.silent:
                    return
                raise TransientError("connection reset (test)")
            sent += len(chunk)
            yield chunk


POLLED_ROWS = 5_000


def broken_poller(root: Path, store: Store) -> tuple[Poller, Flaky]:
    """A Poller of source "s" (``configs``) into ``store``, batches of 1,000, no wait
    between tries; ``root/inbox`` holds events.csv: POLLED_ROWS rows, a bad one (no
    identifier) in every 1,000. Its reads go through the Flaky returned, broken until told
    otherwise."""
    inbox = root / "inbox"
    inbox.mkdir()
    (inbox / "events.csv").write_text(
        "identifier,n\n"
        + "".join(f"{'' if i % 1000 == 7 else f'u{i}'},{i}\n" for i in range(POLLED_ROWS))
    )
    config, source = configs(root)
    flaky = Flaky.at(inbox)
    flaky.broken = True
    poller = Poller(
        config,
        source,
        store,
        ingestor=Ingestor(store, batch_records=1_000),
        sleep=lambda _: None,
        opener=lambda _: flaky,
    )
    return poller, flaky


# The processing time the tests' clocks start at (2025-11-24T16:00:00Z).
T0 = 1_764_000_000.0


class Clock:
    """A clock (wall or monotonic) that says ``now``, moved by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- waiting, the CLI, the daemon ------------------------------------------------------------


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Whether ``predicate`` came true within ``timeout`` seconds (asked every 20 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def dump(
    config: Path, table: str, capsys: pytest.CaptureFixture[str], *options: str
) -> list[dict[str, Any]]:
    """`connector dump TABLE [options]`, run in-process, its records."""
    capsys.readouterr()
    assert main(["--config", str(config), "dump", table, *options]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def crash_then_rerun(
    config: Path, step: str, timeout: float = 60.0, lease: str | None = None
) -> list[int]:
    """The daemon (`connector run`) SIGKILLed at ``step``, then started again without the
    hook and stopped with SIGTERM after its first poll: the event lines stored.

    With a store ``lease`` (PostgreSQL) the restart comes once the killed daemon's lease is
    over: until then the claims it held are still its own (docs/scaling.md), and the
    restarted daemon's first poll would find the file in hand (`file_busy`) and leave it
    to a later poll."""
    argv = [sys.executable, "-m", "connector", "--config", str(config)]
    env = {**os.environ, "CONNECTOR_CRASH_AT": step}
    crashed = subprocess.run(
        [*argv, "run"], env=env, capture_output=True, timeout=timeout, check=False
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    if lease is not None:
        time.sleep(parse_duration(lease) + 0.2)
    env.pop("CONNECTOR_CRASH_AT")
    events = [line["event"] for line in first_poll_then_stop([*argv, "run"], env, timeout)]
    assert "poll_done" in events, events
    done = subprocess.run([*argv, "dump", "events"], capture_output=True, text=True, check=True)
    return sorted(json.loads(line)["line"] for line in done.stdout.splitlines())


def first_poll_then_stop(
    argv: list[str], env: dict[str, str], timeout: float = 60.0
) -> list[dict[str, Any]]:
    """Run the daemon until its first poll ends, SIGTERM it, expect exit 0; its log lines
    (a line that is not JSON, a traceback say, as its "event")."""
    events: list[dict[str, Any]] = []
    with subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    ) as daemon:
        watchdog = threading.Timer(timeout, daemon.kill)  # a daemon that never polls fails
        watchdog.start()
        try:
            assert daemon.stderr is not None
            for line in daemon.stderr:
                event = json.loads(line) if line.startswith("{") else {"event": line}
                events.append(event)
                if event["event"] in ("poll_done", "poll_failed", "poll_crashed"):
                    break
            daemon.send_signal(signal.SIGTERM)
            daemon.stderr.read()
            assert daemon.wait() == 0, events
        finally:
            watchdog.cancel()
            daemon.kill()
    return events
