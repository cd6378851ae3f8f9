"""The Source port: a remote folder that is listed, read and tidied up.

Adapters (``sftp.py``, ``ftp.py``, ``local.py``) translate their library's exceptions here,
in one place each, into the project's errors:

* ``TransientError``: the network or the server had a bad moment (reset, timeout, 4xx FTP
  reply, SSH disconnect). Retried with backoff; a download resumes from its offset.
* ``SourceRefused``: we refused the server (unknown or changed host key, untrusted
  certificate) or it refused us (credentials). Retrying as-is cannot help; the message
  names the cause for the operator (and never a secret).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

from connector.actions import Action

CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """A file directly in the source's folder."""

    name: str  # a plain name, no folder part
    size: int
    mtime: float  # Unix seconds, UTC


class Source(Protocol):
    """A remote folder. A context manager: connected on enter, closed on exit.

    ``list``, ``read`` and ``complete`` raise TransientError or SourceRefused only. None of
    them is idempotent on the server, but each is safe to repeat after a failure: a read
    restarts at any offset, and ``complete`` of a file already gone raises TransientError.
    """

    def __enter__(self) -> Self: ...

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def list(self) -> list[RemoteFile]:
        """Every regular file in the folder (not folders, not links to folders)."""
        ...

    def read(self, name: str, offset: int = 0) -> Generator[bytes, None, None]:
        """The file's bytes from ``offset``, in chunks, as they arrive. A server that stops
        sending for the source's timeout raises TransientError, as does a broken
        connection: the chunks already yielded are valid and a new read can resume.
        Closing the generator early abandons the transfer cleanly."""
        ...

    def complete(self, name: str, action: Action, report: bytes | None = None) -> str | None:
        """Apply the ``after`` action to a file: ``leave``, ``delete``, or ``move:<folder>``
        (folder relative to the source's, created when missing; on a name clash the
        moved file gets a UTC timestamp suffix before its extension, never overwriting).
        Returns the file's new path for a move, else None.

        ``report`` (not with ``delete``): written as ``<name>.rejects.csv`` where the file
        ends up — beside its new name, before the move, so that a move redone after a
        failure rewrites the same report rather than leave the file without one."""
        ...

    def put(self, folder: str, name: str, data: bytes) -> str:
        """Write a small file of ours (a report, a probe) as ``folder/name`` (folder
        relative to the source's, "" for itself, created when missing), replacing one of
        that name. Returns its path."""
        ...

    def remove(self, folder: str, name: str) -> None:
        """Remove a file ``put`` wrote."""
        ...
