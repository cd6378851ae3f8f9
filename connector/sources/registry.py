"""URL scheme → Source adapter. Adapters are imported only when a config asks for them, so
a deployment without SFTP sources never imports paramiko."""

from __future__ import annotations

import importlib
import sys
import threading
from types import ModuleType
from typing import Any

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
    """An unconnected Source for ``config`` (enter it to connect), that knows nothing yet of
    its server."""
    return SourceOpener()(config)


_IMPORTING = threading.Lock()  # (polls of several sources open them at once)


def _imported(module: str) -> ModuleType:
    """An adapter's module. paramiko imports invoke, and PyYAML with it (7 MB), only for
    ssh_config's `Match exec`, which connector never reads: unless something imported it
    already, it is kept out while an adapter loads (paramiko then does without it)."""
    loaded = sys.modules.get(module)
    if loaded is not None:  # (every poll but the first)
        return loaded
    with _IMPORTING:
        if "invoke" in sys.modules:
            return importlib.import_module(module)
        sys.modules["invoke"] = None  # type: ignore[assignment]  # (an import of it fails)
        try:
            return importlib.import_module(module)
        finally:
            sys.modules.pop("invoke", None)


class SourceOpener:
    """Opens one source anew for each of its polls, and carries from one to the next what
    the last one learnt of the server: an FTP server that lacks MLSD or MDTM is not asked
    again at every poll. One opener serves one source (one Poller)."""

    def __init__(self) -> None:
        self._ftp_capabilities: Any = None  # made once the FTP adapter is imported

    def __call__(self, config: SourceConfig) -> Source:
        module_name, name = ADAPTERS[config.scheme]
        module = _imported(module_name)
        password = source_password(config)
        if config.scheme not in ("ftp", "ftps"):
            source: Source = getattr(module, name)(config, password)
            return source
        if self._ftp_capabilities is None:
            self._ftp_capabilities = module.Capabilities()
        ftp: Source = module.FTPSource(config, password, self._ftp_capabilities)
        return ftp
