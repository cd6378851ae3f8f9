"""Passwords come from the environment, a private file, or systemd credentials; never from
the config file itself, and never into a log line or an error message."""

from __future__ import annotations

import os
from pathlib import Path

from connector.config import STORE_CREDENTIAL, SourceConfig, StoreConfig
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
    return _password(
        source.password_env, source.password_file, source.name, f"source {source.name}: "
    )


def store_password(store: StoreConfig) -> Secret | None:
    """The store's password: ``password_env``, else ``password_file``, else the systemd
    credential ``store``; else None, and libpq finds one its own way (PGPASSWORD,
    ~/.pgpass) if the server asks."""
    return _password(store.password_env, store.password_file, STORE_CREDENTIAL, "store.")


def _password(env: str | None, file: Path | None, credential: str, keys: str) -> Secret | None:
    """The variable ``env``'s value, else the file's text, else the systemd credential's
    (``$CREDENTIALS_DIRECTORY/<credential>``), else None. An error names the setting,
    after ``keys`` (how the config names what it belongs to)."""
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise ConfigError([f"{keys}password_env: environment variable {env} is not set"])
        return Secret(value)
    where, path = f"{keys}password_file", file
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if path is None and credentials:
        candidate = Path(credentials) / credential
        where, path = f"credential {credential}", candidate if candidate.is_file() else None
    if path is None:
        return None
    try:
        return Secret(path.read_text(encoding="utf-8").rstrip("\r\n"))
    except OSError as exc:
        raise ConfigError([f"{where}: cannot read {path}: {exc.strerror}"]) from None
