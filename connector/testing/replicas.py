"""Several `connector run` processes (replicas) sharing one store and one source, each with
its own config, staging and archive folders, as on hosts of their own.

    with Replicas(root, {"url": store_url, "lease": "2s"}, source) as replicas:
        replicas.start("r1"); replicas.start("r2")
        replicas.freeze("r2"); ...; replicas.thaw("r2")
        codes = replicas.stop_all()

For the replica tests, the replica benchmarks and `connector demo --replicas`. Each
replica's log (JSON lines) is kept in `root/<name>.log`; `events(name)` reads it back.
Every process still running is killed on exit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["Replicas", "toml_value"]


def toml_value(value: Any) -> str:
    """A TOML literal for the values a config here holds (JSON strings are TOML strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        return (
            "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
        )
    raise TypeError(f"no TOML for {value!r}")


class Replicas:
    """``source``: the `[[sources]]` table (its `files` entries as a list of tables);
    ``store``: the `[store]` table every replica shares (its `replica` name is added)."""

    def __init__(
        self,
        root: Path,
        store: Mapping[str, Any],
        source: Mapping[str, Any],
        *,
        ingest: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.root = root
        self.store = dict(store)
        self.source = dict(source)
        self.ingest = dict(ingest or {})
        self.env = {**os.environ, **(env or {})}
        self.env.pop("NOTIFY_SOCKET", None)  # (not the test runner's systemd)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def config(self, name: str) -> Path:
        """The config file of replica ``name`` (written on first use)."""
        path = self.root / name / "connector.toml"
        if path.exists():
            return path
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        files: Sequence[Mapping[str, Any]] = self.source.get("files", ())
        paths = {"staging": str(folder / "staging"), "archive": str(folder / "archive")}
        lines = [
            "[store]",
            *_pairs({**self.store, "replica": name}),
            "[paths]",
            *_pairs(paths),
            "[ingest]",
            *_pairs(self.ingest),
            "[[sources]]",
            *_pairs({k: v for k, v in self.source.items() if k != "files"}),
        ]
        for entry in files:
            lines += ["[[sources.files]]", *_pairs(entry)]
        path.write_text("\n".join(lines) + "\n")
        return path

    def command(self, name: str, *argv: str) -> list[str]:
        return [sys.executable, "-m", "connector", "--config", str(self.config(name)), *argv]

    def start(self, name: str) -> subprocess.Popen[bytes]:
        """Start replica ``name`` (`connector run`), its log appended to `<name>.log`."""
        argv = self.command(name, "run")  # (writes its config, and makes the folder)
        with open(self.root / f"{name}.log", "ab") as log:
            process = subprocess.Popen(
                argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        self.processes[name] = process
        return process

    def kill(self, name: str) -> None:
        """SIGKILL: nothing gets to clean up, as in a crash or a host gone."""
        process = self.processes[name]
        process.kill()
        process.wait()

    def freeze(self, name: str) -> None:
        """SIGSTOP: alive to the kernel (its connections stay open), silent to the store."""
        self.processes[name].send_signal(signal.SIGSTOP)

    def thaw(self, name: str) -> None:
        self.processes[name].send_signal(signal.SIGCONT)

    def stop(self, name: str, within: float = 10.0) -> tuple[int | None, float]:
        """SIGTERM, then wait up to ``within`` seconds: (exit status, seconds taken); the
        status is None if it had not stopped by then (it is then killed)."""
        return self.stop_all(within, only=(name,))[name]

    def stop_all(
        self, within: float = 10.0, *, only: Sequence[str] | None = None
    ) -> dict[str, tuple[int | None, float]]:
        """SIGTERM to every running replica (or those named) at once, then wait for each:
        its (status, seconds) as ``stop`` gives them."""
        running = {
            n: p
            for n, p in self.processes.items()
            if p.poll() is None and (only is None or n in only)
        }
        started = time.monotonic()
        for process in running.values():
            process.send_signal(signal.SIGTERM)
        stopped: dict[str, tuple[int | None, float]] = {}
        while len(stopped) < len(running) and time.monotonic() - started < within:
            for name, process in running.items():
                if name not in stopped and process.poll() is not None:
                    stopped[name] = (process.returncode, time.monotonic() - started)
            time.sleep(0.02)
        for name, process in running.items():
            if name not in stopped:  # (still running: killed, as a supervisor would)
                process.kill()
                process.wait()
                stopped[name] = (None, time.monotonic() - started)
        return stopped

    def events(self, name: str) -> list[dict[str, Any]]:
        """Replica ``name``'s log lines (a line that is not JSON, as its "event")."""
        path = self.root / f"{name}.log"
        if not path.exists():
            return []
        lines = path.read_text(errors="replace").splitlines()
        return [json.loads(line) if line.startswith("{") else {"event": line} for line in lines]

    def __enter__(self) -> Replicas:
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()  # (a frozen one too: SIGKILL needs no cooperation)
                process.wait()


def _pairs(table: Mapping[str, Any]) -> list[str]:
    return [f"{key} = {toml_value(value)}" for key, value in table.items()]
