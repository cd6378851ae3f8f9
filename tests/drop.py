"""A config with one `file://` source named "drop" on `root/inbox`, for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
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


def crash_then_rerun(config: Path, step: str) -> list[int]:
    """`connector once` SIGKILLed at ``step``, then run again: the event lines stored."""
    argv = [sys.executable, "-m", "connector", "--config", str(config)]
    env = {**os.environ, "CONNECTOR_CRASH_AT": step}
    crashed = subprocess.run([*argv, "once"], env=env, capture_output=True, check=False)
    assert crashed.returncode == -signal.SIGKILL
    env.pop("CONNECTOR_CRASH_AT")
    rerun = subprocess.run([*argv, "once"], env=env, capture_output=True, text=True, check=False)
    assert rerun.returncode == 0, rerun.stderr
    dump = subprocess.run([*argv, "dump", "events"], capture_output=True, text=True, check=True)
    return sorted(json.loads(line)["line"] for line in dump.stdout.splitlines())
