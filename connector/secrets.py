"""Passwords come from the environment, a private file, or systemd credentials; never from
the config file itself, and never into a log line or an error message."""

from __future__ import annotations

import os
from pathlib import Path

from connector.config import (
    STORE_CREDENTIAL,
    WEBHOOK_CREDENTIAL,
    SourceConfig,
    StoreConfig,
    WebhookConfig,
)
from connector.errors import ConfigError
from connector.redaction import remember


class Secret(str):
    """A str whose repr never shows it, so it cannot leak through a log or a traceback;
    made, it is remembered, for redaction's last resort (a long one: see there)."""

    def __new__(cls, value: str) -> Secret:
        remember(value)
        return super().__new__(cls, value)

    def __repr__(self) -> str:
        return "Secret('***')"


def source_password(source: SourceConfig) -> Secret | None:
    """The source's password: ``password_env``, else ``password_file``, else the systemd
    credential named after the source (``$CREDENTIALS_DIRECTORY/<name>``), else None."""
    return _secret(
        source.password_env, source.password_file, source.name, f"source {source.name}: password"
    )


def store_password(store: StoreConfig) -> Secret | None:
    """The store's password: ``password_env``, else ``password_file``, else the systemd
    credential ``store``; else None, and libpq finds one its own way (PGPASSWORD,
    ~/.pgpass) if the server asks."""
    return _secret(store.password_env, store.password_file, STORE_CREDENTIAL, "store.password")


def webhook_url(webhook: WebhookConfig) -> Secret | None:
    """The webhook's URL: ``url_env``, else ``url_file``, else the systemd credential
    ``webhook``; else None (no webhook)."""
    return _secret(webhook.url_env, webhook.url_file, WEBHOOK_CREDENTIAL, "webhook.url")


def _secret(env: str | None, file: Path | None, credential: str, key: str) -> Secret | None:
    """The variable ``env``'s value, else the file's text, else the systemd credential's
    (``$CREDENTIALS_DIRECTORY/<credential>``), else None. An error names the setting:
    ``key`` is how the config names it, without its ``_env`` or ``_file``."""
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise ConfigError([f"{key}_env: environment variable {env} is not set"])
        return Secret(value)
    where, path = f"{key}_file", file
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
