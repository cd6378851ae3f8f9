"""One exception hierarchy, arranged by how the caller must react.

They are caught at three boundaries only: the CLI and the service loop (a command or a
poll), and the poll's boundary for one file (``Poller._claimed``: the file fails, the poll
goes on). The steps below never swallow them, except the ledger's best-effort notes of a
failure, which log that they could not be written and keep the original error.
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(ConnectorError):
    """The configuration is unusable: fix it and start again (exit status 78)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class TransientError(ConnectorError):
    """Worth retrying later: a network hiccup, a busy server, a file still changing."""


class StorageError(TransientError):
    """A file or folder of ours on the local disk (the store, staging, the archive, the lock
    folder) cannot be made, read or written: a full disk, a read-only file system, missing
    permissions, a file where a folder should be, a damaged store. No fault of the file in
    hand, and every other file would meet it too: the poll ends (the daemon backs off and
    tries again later; /healthz turns red past the missed polls), and a command stops
    with this one line, naming the path and the cause."""

    def __init__(self, what: str, path: object, cause: str) -> None:
        self.path, self.cause = str(path), cause
        super().__init__(f"{what} {path}: {cause}")


class StoreError(StorageError):
    """The store (its SQLite file, or its PostgreSQL database) cannot be opened or
    reached, read or written."""

    def __init__(self, path: object, cause: str) -> None:
        super().__init__("store", path, cause)


class StoreRefused(StoreError):
    """The store's server refused us: a wrong password, a role or database that does not
    exist. At start-up a mistake in the config (exit 78); met later (a password changed
    under a running daemon), a fault like any other, retried."""


class StoreBusy(TransientError):
    """Another writer held the store longer than we wait: the file is tried again later."""


class ClaimLost(StoreBusy):
    """A claim this run held on a shared store (a PostgreSQL lease) ran out and may be
    another run's now: its transactions are refused before they write, so what it covered
    is not written by this run any more (the new holder resumes it from the last commit)."""


class PlaceBusy(TransientError):
    """Another run (a second process given the same source) has this file in hand."""


class FileRejected(ConnectorError):
    """The file as a whole is refused; the reason is recorded and the file set aside."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class FatalError(ConnectorError):
    """Cannot go on (e.g. the store is unusable): stop and let the supervisor restart us."""


class Interrupted(ConnectorError):
    """A stop was asked for: work in hand was committed or left resumable, then abandoned."""
