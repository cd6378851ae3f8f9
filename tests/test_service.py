"""`connector run` and `connector check` as a user runs them: a real subprocess, a watched
folder, signals (SIGTERM stops, SIGHUP reloads the config)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import apsw
import pytest

from connector.scheduler import backoff_delay
from tests.helpers import drop_config, first_poll_then_stop, local_source, wait_until, write_config

# Slow (pyproject's `slow` marker): the daemon as a subprocess, signalled and waited for.
pytestmark = pytest.mark.slow


def _config(root: Path, *, interval: str = "1h", rows_per_batch: int = 20000) -> Path:
    return drop_config(
        root,
        ingest={"batch_records": rows_per_batch},
        interval=interval,
        min_age="0s",
        after="move:processed",
        files=[{"kind": "events", "pattern": "*.csv", "event_name": "visit"}],
    )


def _connector(config: Path, *argv: str) -> list[str]:
    return [sys.executable, "-m", "connector", "--config", str(config), *argv]


def _events(config: Path) -> list[dict[str, object]]:
    out = subprocess.run(
        _connector(config, "dump", "events"), capture_output=True, text=True, check=True
    ).stdout
    return [json.loads(line) for line in out.splitlines()]


def _start(config: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "CONNECTOR_CRASH_AT")}
    return subprocess.Popen(
        _connector(config, "run"),
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _stop(proc: subprocess.Popen[str], within: float = 10.0) -> tuple[int, float, str]:
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=within + 5)
    return proc.returncode, time.monotonic() - started, err


def test_run_ingests_at_start_and_on_new_files_then_stops_cleanly(tmp_path: Path) -> None:
    """Files present are taken at start, a new one at once (watchdog), SIGTERM exits 0;
    housekeeping runs at start too (a download abandoned a day ago goes)."""
    config = _config(tmp_path)
    (tmp_path / "inbox" / "a.csv").write_text("identifier\nu1\n")
    abandoned = tmp_path / "staging" / "gone" / f"{'0' * 40}.part"
    abandoned.parent.mkdir(parents=True)
    abandoned.write_bytes(b"x")
    os.utime(abandoned, (time.time() - 2 * 86400,) * 2)
    proc = _start(config)
    try:
        assert wait_until(lambda: (tmp_path / "inbox" / "processed" / "a.csv").exists(), 20)
        assert wait_until(lambda: not abandoned.exists(), 10)
        (tmp_path / "inbox" / "b.csv").write_text("identifier\nu2\n")
        # the interval is an hour: only the folder watch can explain a prompt pickup
        assert wait_until(lambda: (tmp_path / "inbox" / "processed" / "b.csv").exists(), 20)
    finally:
        code, seconds, err = _stop(proc)
    assert code == 0, err
    assert seconds < 10
    assert sorted(e["identifier"] for e in _events(config)) == ["u1", "u2"]
    assert '"service_stopped"' in err


ROWS_BIG = 150_000


def _big_file(path: Path) -> None:
    path.write_text(
        "identifier,note\n" + "".join(f"user{i}@example.com,{'x' * 40}\n" for i in range(ROWS_BIG))
    )


def _stop_mid_file_then_finish(proc: subprocess.Popen[str], tmp_path: Path, config: Path) -> None:
    """SIGTERM once ingestion has begun: exit 0 in < 10 s; a later `once` stores each row
    exactly once."""
    try:
        assert wait_until(lambda: (tmp_path / "store" / "c.db-wal").exists(), 10)
        time.sleep(0.2)  # into the file, well before its end (~1 s of work)
    finally:
        code, seconds, err = _stop(proc)
    assert code == 0, err
    assert seconds < 10
    again = subprocess.run(_connector(config, "once"), capture_output=True, text=True, check=False)
    assert again.returncode == 0, again.stderr
    events = _events(config)
    assert len(events) == ROWS_BIG
    assert len({e["line"] for e in events}) == ROWS_BIG


def test_sigterm_during_a_large_file_then_restart_stores_it_once(tmp_path: Path) -> None:
    """A stop mid-file commits what is done and exits 0 quickly; the next run finishes it."""
    config = _config(tmp_path, rows_per_batch=2000)
    upload = tmp_path / "big.csv.part"
    _big_file(upload)
    proc = _start(config)
    time.sleep(1.0)
    upload.rename(tmp_path / "inbox" / "big.csv")
    _stop_mid_file_then_finish(proc, tmp_path, config)


def test_sigterm_stops_once_cleanly_and_the_next_once_finishes(tmp_path: Path) -> None:
    """`once` on SIGTERM commits what it has, exits 0 at once; the next `once` resumes."""
    config = _config(tmp_path, rows_per_batch=2000)
    _big_file(tmp_path / "inbox" / "big.csv")
    proc = subprocess.Popen(
        _connector(config, "once"), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    _stop_mid_file_then_finish(proc, tmp_path, config)


def test_backoff_grows_to_a_cap() -> None:
    """A failing source waits 5 s, 10 s, 20 s … at most 15 minutes between tries."""
    assert [backoff_delay(n) for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert backoff_delay(50) == 15 * 60


def test_check_reports_what_would_happen(tmp_path: Path) -> None:
    """check lists each file with its fate and changes nothing."""
    config = _config(tmp_path)
    (tmp_path / "inbox" / "a.csv").write_text("identifier\nu1\n")
    (tmp_path / "inbox" / "a.csv.part").write_text("identifier\nu1\n")
    result = subprocess.run(
        _connector(config, "check"), capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "drop: connected, 2 file(s) listed, 1 match" in result.stdout
    assert "a.csv (14 bytes): would take as events" in result.stdout
    assert (tmp_path / "inbox" / "a.csv").exists()
    assert not (tmp_path / "store").exists()  # not even an empty store is created


def test_check_fails_on_an_unreachable_source(tmp_path: Path) -> None:
    """A source that cannot be listed makes check exit 1, saying why."""
    config = _config(tmp_path)
    (tmp_path / "inbox").rmdir()
    result = subprocess.run(
        _connector(config, "check"), capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert "drop: FAILED: folder" in result.stdout


@pytest.mark.parametrize("command", ["check", "once"])
def test_bad_config_exit_status(tmp_path: Path, command: str) -> None:
    """A bad config exits 78 on every command, `check` included: one line, no traceback."""
    config = tmp_path / "c.toml"
    config.write_text("[store]\npaht = 1\n")
    result = subprocess.run(
        _connector(config, command), capture_output=True, text=True, check=False
    )
    assert result.returncode == 78
    assert result.stderr == "connector: config: store.paht: unknown key (did you mean path?)\n"


def test_run_serves_metrics_and_health(tmp_path: Path) -> None:
    """With [metrics] listen, /healthz says 200 while running and /metrics counts files
    and the bytes downloaded."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = _config(tmp_path)
    config.write_text(config.read_text() + f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
    (tmp_path / "inbox" / "a.csv").write_text("identifier\nu1\n")
    proc = _start(config)
    base = f"http://127.0.0.1:{port}"

    def get(path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(base + path, timeout=2) as response:
                return response.status, response.read().decode()
        except OSError:
            return 0, ""

    try:
        assert wait_until(lambda: (tmp_path / "inbox" / "processed" / "a.csv").exists(), 20)
        assert wait_until(lambda: get("/healthz")[0] == 200, 10)
        counted = 'connector_files_total{source="drop",status="ingested",tenant="default"} 1.0'
        assert wait_until(lambda: counted in get("/metrics")[1], 10)
        assert 'connector_downloaded_bytes_total{source="drop"} 14.0' in get("/metrics")[1]
    finally:
        code, _, err = _stop(proc)
    assert code == 0, err


def test_run_speaks_sd_notify(tmp_path: Path) -> None:
    """Under systemd (NOTIFY_SOCKET set) `run` says READY=1 once started, a STATUS line
    after each poll, RELOADING=1 then READY=1 on SIGHUP, STOPPING=1 on SIGTERM, and pings
    WATCHDOG=1 when asked to."""
    config = _config(tmp_path)
    with tempfile.TemporaryDirectory(dir="/tmp") as short:  # AF_UNIX paths are short
        address = str(Path(short) / "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
            listener.bind(address)
            listener.settimeout(20)
            env = {**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"}
            proc = subprocess.Popen(
                _connector(config, "run"),
                env=env,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            try:
                heard = [listener.recv(4096).decode()]
                while "WATCHDOG=1" not in heard or not any(h.startswith("STATUS=") for h in heard):
                    heard.append(listener.recv(4096).decode())
                assert heard[0] == "READY=1"
                assert "STATUS=last poll: drop, 0 file(s) taken" in heard
                proc.send_signal(signal.SIGHUP)  # a reload: said, then ready again
                while not heard[-1].startswith("RELOADING=1\nMONOTONIC_USEC="):
                    heard.append(listener.recv(4096).decode())
                while heard[-1] != "READY=1":
                    heard.append(listener.recv(4096).decode())
            finally:
                code, _, err = _stop(proc)
            while heard[-1] != "STOPPING=1":
                heard.append(listener.recv(4096).decode())
    assert code == 0, err


def test_check_says_which_files_are_known_and_which_not_ready(tmp_path: Path) -> None:
    """After a `once`: its file is skipped as known; a file modified just now, under a
    min_age of an hour, is not ready yet."""
    config = drop_config(
        tmp_path,
        min_age="0s",
        after="leave",
        files=[{"kind": "events", "pattern": "*.csv", "event_name": "visit"}],
    )
    (tmp_path / "inbox" / "old.csv").write_text("identifier\nu1\n")
    once = subprocess.run(_connector(config, "once"), capture_output=True, text=True, check=False)
    assert once.returncode == 0, once.stderr
    config.write_text(config.read_text().replace('min_age = "0s"', 'min_age = "1h"'))
    (tmp_path / "inbox" / "new.csv").write_text("identifier\nu2\n")
    out = subprocess.run(
        _connector(config, "check"), capture_output=True, text=True, check=True
    ).stdout
    assert "old.csv (14 bytes): skip: already ingested" in out
    assert "new.csv (14 bytes): not ready yet: modified 0s ago (min_age 1h)" in out
    with apsw.Connection(str(tmp_path / "store" / "c.db")) as store:  # as if killed before it
        store.execute("UPDATE files SET completed_at = NULL")
    out = subprocess.run(
        _connector(config, "check"), capture_output=True, text=True, check=True
    ).stdout
    assert "skip: already ingested (its remote action, leave, is redone at the next poll)" in out


def test_log_lines_are_json_events_with_their_context(tmp_path: Path) -> None:
    """Off a TTY each log line is a JSON object: one `file_ingested` per file with its
    source, path, checksum, counts and speed; a failing poll says `poll_failed` with the
    cause and the next retry time."""
    config = _config(tmp_path)
    (tmp_path / "inbox" / "a.csv").write_text("identifier,timestamp\nu1,1700000000\nu2,soon\n")
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "CONNECTOR_CRASH_AT")}

    lines = first_poll_then_stop(_connector(config, "run"), env)
    assert all({"event", "level", "timestamp"} <= line.keys() for line in lines), lines
    [ingested] = [line for line in lines if line["event"] == "file_ingested"]
    assert ingested["source"] == "drop" and ingested["file"].endswith("/inbox/a.csv")
    assert len(ingested["sha256"]) == 64
    assert (ingested["rows"], ingested["rejected"], ingested["duplicates"]) == (1, 1, 0)
    assert {"seconds", "mb_per_s"} <= ingested.keys()

    os.rename(tmp_path / "inbox", tmp_path / "gone")  # the next run cannot list it
    lines = first_poll_then_stop(_connector(config, "run"), env)
    [failed] = [line for line in lines if line["event"] == "poll_failed"]
    assert failed["source"] == "drop" and failed["level"] == "warning"
    assert "does not exist" in failed["cause"] and failed["failures"] == 1
    assert datetime.fromisoformat(failed["next_retry"]) > datetime.now(UTC)


def _follow(proc: subprocess.Popen[str]) -> tuple[list[dict[str, Any]], threading.Thread]:
    """The daemon's log lines (JSON on stderr) as they come, read by a thread."""
    lines: list[dict[str, Any]] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(json.loads(line) if line.startswith("{") else {"event": line})

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return lines, reader


def _polled(root: Path, folder: str, event_name: str, interval: str = "1s") -> dict[str, Any]:
    """A source on ``root/folder`` polled every second, its files taken at once; "drop"
    on the inbox, else named after its folder."""
    name = "drop" if folder == "inbox" else folder
    files = [{"kind": "events", "pattern": "*.csv", "event_name": event_name}]
    return local_source(
        root,
        name,
        folder=folder,
        files=files,
        interval=interval,
        min_age="0s",
        after="move:processed",
    )


def test_sighup_reloads_the_sources_and_keeps_the_config_when_the_new_one_is_bad(
    tmp_path: Path,
) -> None:
    """SIGHUP reads the config file again: a source added is polled, one changed polls
    with its new settings, one removed is polled no more and leaves no metric; a key that
    needs a restart is said and kept; a config that is not valid is said and changes
    nothing. SIGTERM then exits 0 as ever."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inbox, second = tmp_path / "inbox", tmp_path / "second"
    listen = {"listen": f"127.0.0.1:{port}"}
    config = write_config(tmp_path, _polled(tmp_path, "inbox", "visit"), metrics=listen)
    with _start(config) as proc:  # (its pipes closed on leaving)
        log, reader = _follow(proc)

        def said(event: str) -> list[dict[str, Any]]:
            return [line for line in list(log) if line["event"] == event]

        def taken(folder: Path, name: str) -> bool:
            return (folder / "processed" / name).exists()

        def metrics() -> str:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as page:
                    return str(page.read().decode())
            except OSError:
                return ""

        try:
            (inbox / "a.csv").write_text("identifier\nu1\n")
            assert wait_until(lambda: taken(inbox, "a.csv"), 20)

            write_config(
                tmp_path,
                _polled(tmp_path, "inbox", "sale"),
                _polled(tmp_path, "second", "visit"),
                ingest={"batch_records": 500},
                metrics=listen,
            )
            proc.send_signal(signal.SIGHUP)
            assert wait_until(lambda: said("config_reloaded"), 10)
            [reloaded] = said("config_reloaded")
            assert reloaded["added"] == ["second"] and reloaded["changed"] == ["drop"]
            assert reloaded["removed"] == []
            [restart] = said("config_reload_needs_restart")
            assert restart["keys"] == ["ingest.batch_records"]
            (second / "b.csv").write_text("identifier\nu2\n")
            assert wait_until(lambda: taken(second, "b.csv"), 10)

            write_config(
                tmp_path,
                _polled(tmp_path, "inbox", "sale", interval="1"),  # no unit
                _polled(tmp_path, "second", "visit", interval="1"),
                metrics=listen,
            )
            proc.send_signal(signal.SIGHUP)
            assert wait_until(lambda: said("config_reload_failed"), 10)
            [failed] = said("config_reload_failed")
            assert failed["level"] == "error"
            assert failed["cause"].startswith("sources[0].interval: not a duration: '1'")
            (inbox / "c.csv").write_text("identifier\nu3\n")  # the sources as they were
            assert wait_until(lambda: taken(inbox, "c.csv"), 10)
            assert proc.poll() is None

            write_config(tmp_path, _polled(tmp_path, "inbox", "sale"), metrics=listen)
            proc.send_signal(signal.SIGHUP)
            assert wait_until(lambda: len(said("config_reloaded")) == 2, 10)
            reloaded = said("config_reloaded")[1]
            assert reloaded["removed"] == ["second"] and reloaded["changed"] == []
            assert wait_until(lambda: 'source="second"' not in metrics(), 10)
            assert 'connector_files_total{source="drop",status="ingested"' in metrics()
            (second / "d.csv").write_text("identifier\nu4\n")
            mark = len(log)

            def drop_polls() -> int:
                return sum(e["event"] == "poll_done" and e["source"] == "drop" for e in log[mark:])

            assert wait_until(lambda: drop_polls() >= 3, 10)  # two intervals of the removed one
            assert not taken(second, "d.csv")
            assert not any(e.get("source") == "second" for e in log[mark:])
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(15)
            reader.join(5)
    assert code == 0, log
    assert said("service_stopped")
    assert sorted((e["identifier"], e["name"]) for e in _events(config)) == [
        ("u1", "visit"),
        ("u2", "visit"),
        ("u3", "sale"),
    ]
