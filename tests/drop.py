"""A config with one `file://` source named "drop" on `root/inbox`, for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.golden import toml_value


def drop_config(
    root: Path,
    *,
    files: Sequence[Mapping[str, Any]],
    ingest: Mapping[str, Any] | None = None,
    **source: Any,
) -> Path:
    """Write `root/connector.toml` (store in `root/store`) and return its path."""
    inbox = root / "inbox"
    inbox.mkdir(exist_ok=True)
    lines = [
        "[store]", f"path = {toml_value(str(root / 'store' / 'c.db'))}",
        "[paths]", f"staging = {toml_value(str(root / 'staging'))}",
        f"archive = {toml_value(str(root / 'archive'))}",
    ]  # fmt: skip
    if ingest:
        lines += ["[ingest]", *(f"{k} = {toml_value(v)}" for k, v in ingest.items())]
    table = {"name": "drop", "url": f"file://{inbox}", **source}
    lines += ["[[sources]]", *(f"{k} = {toml_value(v)}" for k, v in table.items())]
    for entry in files:
        lines += ["[[sources.files]]", *(f"{k} = {toml_value(v)}" for k, v in entry.items())]
    path = root / "connector.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def crash_then_rerun(config: Path, step: str, timeout: float = 60.0) -> list[int]:
    """The daemon (`connector run`) SIGKILLed at ``step``, then started again without the
    hook and stopped with SIGTERM after its first poll: the event lines stored."""
    argv = [sys.executable, "-m", "connector", "--config", str(config)]
    env = {**os.environ, "CONNECTOR_CRASH_AT": step}
    crashed = subprocess.run([*argv, "run"], env=env, capture_output=True, timeout=timeout,
                             check=False)  # fmt: skip
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    env.pop("CONNECTOR_CRASH_AT")
    events = [line["event"] for line in first_poll_then_stop([*argv, "run"], env, timeout)]
    assert "poll_done" in events, events
    dump = subprocess.run([*argv, "dump", "events"], capture_output=True, text=True, check=True)
    return sorted(json.loads(line)["line"] for line in dump.stdout.splitlines())


def first_poll_then_stop(
    argv: list[str], env: dict[str, str], timeout: float = 60.0
) -> list[dict[str, Any]]:
    """Run the daemon until its first poll ends, SIGTERM it, expect exit 0; its log lines
    (a line that is not JSON, a traceback say, as its "event")."""
    events: list[dict[str, Any]] = []
    with subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True) as daemon:  # fmt: skip
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
