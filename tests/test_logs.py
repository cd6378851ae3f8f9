"""Tests for connector/logs.py: JSON lines off a terminal, the console renderer on a real
pseudo-terminal, the standard library's records routed through both, tracebacks, and
control characters kept off the terminal."""

from __future__ import annotations

import json
import logging
import os
import re
import select
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import structlog

from connector import logs
from connector.scheduler import Scheduler
from connector.secrets import Secret
from tests.helpers import wait_until

# A file name as a hostile server could send it: OSC "set window title", BEL, DEL, C1 CSI.
HOSTILE = "ev_\x1b]0;PWNED\x07.csv\x7f\x9b2J"
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """configure() sets a root handler and level: later tests must not inherit them."""
    yield
    logs.reset()


def json_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    # (a line read while a thread is still writing it ends up whole in one of two reads)
    return [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]


def test_a_library_record_is_one_json_event(capsys: pytest.CaptureFixture[str]) -> None:
    """A record on the apscheduler logger is one JSON line: its text, level, logger, time."""
    logs.configure("info")
    logging.getLogger("apscheduler.scheduler").warning(
        'Execution of job "%s" skipped: maximum number of running instances reached (%d)',
        "drop",
        1,
    )
    structlog.get_logger().info("poll_done", source="drop")
    library, ours = json_lines(capsys)
    assert library["event"] == (
        'Execution of job "drop" skipped: maximum number of running instances reached (1)'
    )
    assert library["level"] == "warning" and library["logger"] == "apscheduler.scheduler"
    assert library["timestamp"].endswith("Z")
    assert (ours["event"], ours["level"], ours["source"]) == ("poll_done", "info", "drop")


@pytest.mark.slow
def test_apschedulers_own_skip_warning_is_json(capsys: pytest.CaptureFixture[str]) -> None:
    """A poll outlasting its interval: APScheduler's "skipped" warning is JSON, no INFO."""
    logs.configure("info")
    scheduler = Scheduler()
    scheduler.add("slow", lambda: time.sleep(0.6), interval=0.05)
    lines: list[dict[str, Any]] = []

    def skipped_yet() -> bool:
        lines.extend(json_lines(capsys))
        return any("skipped" in e["event"] for e in lines)

    scheduler.start()
    try:
        assert wait_until(skipped_yet)
    finally:
        scheduler.stop()
    lines += json_lines(capsys)
    skipped = next(e for e in lines if "skipped" in e["event"])
    assert "maximum number of running instances reached" in skipped["event"]
    assert skipped["level"] == "warning" and skipped["logger"].startswith("apscheduler")
    assert all(e["level"] != "info" for e in lines), lines  # "Running job …", "Added job …"


@pytest.mark.parametrize(
    ("logger", "level"),
    [
        ("paramiko.transport", logging.INFO),
        ("apscheduler.executors.default", logging.INFO),
        ("connector.sources.sftp.paramiko.transport", logging.ERROR),
    ],
)
def test_library_chatter_shows_only_at_debug(
    capsys: pytest.CaptureFixture[str], logger: str, level: int
) -> None:
    """Routine library records are dropped at info and shown at debug."""
    logs.configure("info")
    logging.getLogger(logger).log(level, "Connected (version 2.0)")
    logging.getLogger("some.other.library").info("worth a line")
    assert [e["event"] for e in json_lines(capsys)] == ["worth a line"]
    logs.configure("debug")
    logging.getLogger(logger).log(level, "Connected (version 2.0)")
    [shown] = json_lines(capsys)
    assert shown["logger"] == logger and shown["level"] == logging.getLevelName(level).lower()


def test_exceptions_are_in_the_json_log_in_full(capsys: pytest.CaptureFixture[str]) -> None:
    """log.exception() and a library's exc_info put the whole traceback in "exception"."""
    logs.configure("info")

    def crash() -> None:
        raise ValueError("the listing was garbled")

    try:
        crash()
    except ValueError:
        structlog.get_logger().exception("poll_crashed", source="drop")
        logging.getLogger("watchdog.observers").error("emitter died", exc_info=True)
    ours, library = json_lines(capsys)
    for event in (ours, library):
        assert "exc_info" not in event
        assert event["exception"].startswith("Traceback (most recent call last):\n")
        assert 'in crash\n    raise ValueError("the listing was garbled")' in event["exception"]
        assert event["exception"].endswith("ValueError: the listing was garbled")
        assert event["level"] == "error"
    assert (ours["event"], ours["source"]) == ("poll_crashed", "drop")
    assert (library["event"], library["logger"]) == ("emitter died", "watchdog.observers")


def test_no_password_read_by_this_process_reaches_the_log(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A password once read (a Secret) is masked in every value, tracebacks and library
    records included, even where a library quotes it in its own message."""
    logs.configure("info")
    password = Secret("pw-SENTINEL-logs-93c1")
    try:
        raise RuntimeError(f"login refused for ingest:{password}@host")
    except RuntimeError:
        structlog.get_logger().exception("poll_crashed", cause=f"said {password}")
        logging.getLogger("paramiko.transport").error("auth %s failed", password, exc_info=True)
    err = capsys.readouterr().err
    assert "SENTINEL" not in err
    ours, library = (json.loads(line) for line in err.splitlines())
    assert ours["cause"] == "said ***"
    assert ours["exception"].endswith("RuntimeError: login refused for ingest:***@host")
    assert library["event"] == "auth *** failed"


def test_python_warnings_become_events(capsys: pytest.CaptureFixture[str]) -> None:
    """A displayed warnings.warn() is a JSON event, not raw text."""
    logs.configure("info")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("old option", DeprecationWarning, stacklevel=1)
    [event] = json_lines(capsys)
    assert "DeprecationWarning: old option" in event["event"]
    assert (event["level"], event["logger"]) == ("warning", "py.warnings")


def test_json_lines_are_printable_ascii(capsys: pytest.CaptureFixture[str]) -> None:
    """C0, DEL and C1 are escaped in JSON lines (printable ASCII) and decode back intact."""
    logs.configure("info")
    structlog.get_logger().info("file_rejected", file=HOSTILE, names=[HOSTILE])
    logging.getLogger("pyftpdlib").warning("odd name %s", HOSTILE)
    try:
        raise OSError(f"cannot read {HOSTILE}")
    except OSError:
        structlog.get_logger().exception(HOSTILE)
    err = capsys.readouterr().err
    assert not CONTROL.search(err.replace("\n", "")), repr(err)
    assert err.isascii()
    ours, library, crashed = (json.loads(line) for line in err.splitlines())
    assert ours["file"] == HOSTILE and ours["names"] == [HOSTILE]
    assert library["event"] == f"odd name {HOSTILE}"
    assert crashed["event"] == HOSTILE and crashed["exception"].endswith(f"cannot read {HOSTILE}")


@contextmanager
def stderr_on_a_terminal() -> Iterator[int]:
    """sys.stderr on the slave side of a real pseudo-terminal; yields the master's fd.
    (Set in the test itself: pytest puts its own capture back between fixture and test.)"""
    master, slave = os.openpty()
    stream = open(slave, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
    saved, sys.stderr = sys.stderr, stream
    try:
        yield master
    finally:
        sys.stderr = saved
        stream.close()
        os.close(master)


def read_terminal(master: int) -> str:
    chunks = []
    while select.select([master], [], [], 0.2)[0]:
        chunks.append(os.read(master, 65536))
    return b"".join(chunks).decode("utf-8")


def test_console_escapes_control_characters() -> None:
    """On a terminal, values, events, library records and tracebacks show controls escaped."""
    with stderr_on_a_terminal() as terminal:
        logs.configure("info")
        log = structlog.get_logger()
        log.info("file_rejected", file=HOSTILE, names=[HOSTILE], rows=3)
        log.info(HOSTILE)
        logging.getLogger("paramiko.sftp").warning("odd name %s", HOSTILE)
        try:
            raise ValueError(f"bad name {HOSTILE}\nsecond line")
        except ValueError:
            log.exception("poll_crashed", source="drop")
        shown = read_terminal(terminal)
    colourless = re.sub("\x1b\\[[0-9;]*m", "", shown)
    assert not CONTROL.search(colourless.replace("\r\n", "")), repr(shown)
    escaped = r"ev_\x1b]0;PWNED\x07.csv\x7f\x9b2J"
    assert f"file='{escaped}'" in colourless
    assert f"names=['{escaped}']" in colourless and "rows=3" in colourless
    assert f"'{escaped}'" in colourless.splitlines()[1]  # the event itself
    assert f"'odd name {escaped}'" in colourless and "paramiko.sftp" in colourless
    # The traceback keeps its lines; only the control characters in it are escaped.
    assert f"\r\nValueError: bad name {escaped}\r\nsecond line" in colourless
    assert "poll_crashed" in colourless and "source=drop" in colourless


def test_console_leaves_ordinary_values_alone() -> None:
    """escape_controls leaves printable values as they are."""
    event = {
        "event": "file_ingested",
        "file": "/inbox/a b.csv",
        "rows": 3,
        "ok": True,
        "names": ["x"],
        "exception": "Traceback …\n  line\nValueError: x",
    }
    assert logs.escape_controls(None, "info", dict(event)) == event
