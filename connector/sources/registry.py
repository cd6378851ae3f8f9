"""URL scheme → Source adapter. Adapters are imported only when a config asks for them, so
a deployment without SFTP sources never imports paramiko."""

from __future__ import annotations

import importlib

from connector.config import SourceConfig
from connector.secrets import source_password
from connector.sources.base import Source

ADAPTERS = {
    "sftp": ("connector.sources.sftp", "SFTPSource"),
    "ftps": ("connector.sources.ftp", "FTPSource"),
    "ftp": ("connector.sources.ftp", "FTPSource"),
    "file": ("connector.sources.local", "LocalSource"),
}


def open_source(config: SourceConfig) -> Source:
    """An unconnected Source for ``config`` (enter it to connect)."""
    module, name = ADAPTERS[config.scheme]
    adapter = getattr(importlib.import_module(module), name)
    source: Source = adapter(config, source_password(config))
    return source
