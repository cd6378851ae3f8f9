"""One exception hierarchy, arranged by how the caller must react. Every error the
project raises on purpose is here.

They are caught at three boundaries only:

- the command line (``cli.main``): ConfigError exits 78, any other ConnectorError exits 1
  with its one line (a command's own outcomes, such as a file rejected, are exit codes);
- the service loop (``Service._polled``, one poll of one source): Interrupted ends the
  poll quietly; any other error fails the poll, which is retried with backoff;
- the poll's boundary for one file (``Poller._claimed``): SourceRefused, StorageError,
  PlaceBusy and Interrupted end the poll (every other file would meet them); anything
  else fails that file only, TransientError without counting against it, the others
  counted until ``max_tries`` sets it aside.

The steps below never swallow them, except the ledger's best-effort notes of a failure,
which log that they could not be written and keep the original error.
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


class FileChanged(TransientError):
    """The bytes received do not match the listing: the file is still being written."""


class SourceRefused(ConnectorError):
    """Connecting is refused for a reason only the operator can fix: we refused the server
    (an unknown or changed host key, an untrusted certificate), or it refused us
    (credentials). Retrying as it is cannot help: the poll ends, the source backs off."""


class FileRejected(ConnectorError):
    """The file as a whole is refused; the reason is recorded and the file set aside."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class TooManyRejects(FileRejected):
    """More rows of a file were rejected than `[ingest].max_rejects`: it is refused whole
    (the wrong file, or the wrong settings), and what was stored of it is taken back."""


class ParseFailed(ConnectorError):
    """The parse of one file did not finish: its parser process died (memory, a signal)
    or was abandoned. That file fails, and counts towards its ``max_tries``; the other
    files of the poll go on."""


class FatalError(ConnectorError):
    """Cannot go on: the store's schema is not this connector's. Met when the store is
    opened, before any poll: the daemon, like any command, exits 1 saying so."""


class UnknownChecksum(ConnectorError):
    """`forget` or `replay` of bytes the tenant's ledger does not know."""


class UnknownCursor(ConnectorError):
    """A cursor this store never gave (or whose records retention has removed since)."""


class AlertRefused(ConnectorError):
    """The webhook's receiver answered 4xx (but 429): sending the same again cannot help."""


class Interrupted(ConnectorError):
    """A stop was asked for: work in hand was committed or left resumable, then abandoned."""
