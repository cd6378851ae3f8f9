"""Passwords come from the environment, a private file, or systemd credentials; never from
the config file itself, and never into a log line or an error message."""

from __future__ import annotations

import os
from pathlib import Path

from connector.config import SourceConfig
from connector.errors import ConfigError
from connector.redaction import remember


class Secret(str):
    """A str whose repr never shows it, so it cannot leak through a log or a traceback;
    made, it is remembered, so that no text this process lets out can quote it."""

    def __new__(cls, value: str) -> Secret:
        remember(value)
        return super().__new__(cls, value)

    def __repr__(self) -> str:
        return "Secret('***')"


def source_password(source: SourceConfig) -> Secret | None:
    """The source's password: ``password_env``, else ``password_file``, else the systemd
    credential named after the source (``$CREDENTIALS_DIRECTORY/<name>``), else None."""
    if source.password_env is not None:
        value = os.environ.get(source.password_env)
        if value is None:
            raise ConfigError(
                [f"source {source.name}: environment variable {source.password_env} is not set"]
            )
        return Secret(value)
    path = source.password_file
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if path is None and credentials:
        candidate = Path(credentials) / source.name
        path = candidate if candidate.is_file() else None
    if path is None:
        return None
    try:
        return Secret(path.read_text(encoding="utf-8").rstrip("\r\n"))
    except OSError as exc:
        raise ConfigError([f"source {source.name}: cannot read {path}: {exc.strerror}"]) from None
