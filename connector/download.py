"""Streaming download into the staging folder, inspected (SHA-256, size, decodability) as
the bytes arrive, resumed from its offset after a transient failure.

Staging names are never built from remote names: a file is staged as
``<digest of source, name, size, mtime>.part`` and renamed (atomically, same folder) to
``.csv`` when complete. Because the name depends on the listed size and mtime, a partial
file left by a crash is resumed only for the very same listing; it is re-hashed from disk
first, since a hash state cannot be saved.

Staged files hold customer data: 0600 in a 0700 folder, whatever the umask. A local fault
(a full disk, a read-only folder) is a StorageError naming the staged path: it is not
retried here (the network is not at fault), and the next poll resumes from the bytes on
disk.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import structlog

from connector import crashpoints
from connector.csvrules.reader import Inspector
from connector.errors import FileChanged, Interrupted, StorageError, TransientError
from connector.localfs import cause, faults, make_folder, open_private
from connector.retries import Retries
from connector.sources.base import RemoteFile, Source


def _worth_retrying(exc: BaseException) -> bool:
    # A changing file is left for a later poll rather than chased now; a local fault is
    # not the connection's, and a retry would append after bytes that may be half-written.
    return isinstance(exc, TransientError) and not isinstance(exc, FileChanged | StorageError)


@dataclass(frozen=True)
class Staged:
    path: Path
    inspector: Inspector


def _write_all(out: io.FileIO, chunk: bytes) -> None:
    """An unbuffered write may take part of a chunk (a disk filling up): the rest follows,
    or the error that stopped it is raised."""
    view = memoryview(chunk)
    while view:
        written = out.write(view)
        if not written:  # (a file says why rather than take nothing; no endless loop)
            raise OSError(errno.EIO, "a write took no bytes")
        view = view[written:]


def staging_name(source: str, file: RemoteFile) -> str:
    key = f"{source}\0{file.name}\0{file.size}\0{file.mtime!r}"
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:40]


@dataclass(frozen=True)
class Watch:
    """Who follows a download as it goes. ``on_part(path, inspector)`` is called once the
    partial file holds only bytes of this file, before more are appended: a reader may
    follow it from then on (its bytes never change, only grow), and the inspector hashes
    them as they come. ``received(size)`` is told of each piece that arrives."""

    on_part: Callable[[Path, Inspector], object] = lambda part, inspector: None
    received: Callable[[int], object] = lambda size: None


UNWATCHED = Watch()
DEFAULT_RETRIES = Retries()


def download(
    source_name: str,
    connect: Callable[[bool], Source],
    file: RemoteFile,
    staging: Path,
    encoding: str,
    *,
    label: str | None = None,
    stop: Callable[[], bool] = lambda: False,
    retries: Retries = DEFAULT_RETRIES,
    watch: Watch = UNWATCHED,
) -> Staged:
    """Fetch ``file`` into ``staging``. ``connect(broken)`` returns a usable source; after
    a failed attempt ``broken`` is True and it should reconnect. Raises TransientError
    (after ``retries``; FileChanged at once: a changing file is left for a later poll).
    ``label`` names the file in logs (its remote path); ``stop()`` is asked between
    pieces. A write that fails ends the download (a StorageError, never retried), so each
    chunk may be hashed before it is written."""
    log = structlog.get_logger().bind(source=source_name, file=label or file.name)
    make_folder(staging, "staging")
    stem = staging / staging_name(source_name, file)
    part, done = stem.with_suffix(".part"), stem.with_suffix(".csv")
    local = partial(faults, "staging", part)  # around each local step, not the source's
    with local():
        if done.exists() and not part.exists():
            # A crash after the download, before its file was done with: it is resumed
            # (the rows stored from it, if any, came from these bytes), not fetched again.
            os.replace(done, part)
        # Unbuffered: a write that fails leaves nothing pending for close to fail on.
        out = open(open_private(part, os.O_RDWR | os.O_APPEND), "rb+", buffering=0)  # noqa: SIM115
    inspector = Inspector(encoding)
    try:
        with out:
            with local():
                os.utime(out.fileno())  # in use: housekeeping removes only untouched ones
                # Crash while downloading: the .part stays; the next poll resumes it here.
                out.seek(0)
                inspector.feed_from(out)
                if inspector.size > file.size:
                    out.truncate(0)
                    inspector = Inspector(encoding)
            watch.on_part(part, inspector)
            for attempt in retries.attempts_for(_worth_retrying):
                with attempt:
                    retry = attempt.retry_state.attempt_number > 1
                    if retry:
                        log.info("download_resumed", offset=inspector.size)
                    for chunk in connect(retry).read(file.name, inspector.size):
                        if stop():
                            raise Interrupted("stopped mid-download; the .part is resumed later")
                        if inspector.size + len(chunk) > file.size:
                            raise FileChanged(f"{file.name} grew while downloading")
                        # Hashed before it is written: what a parser following the
                        # staged file has read is always inside ``inspector.prefix()``.
                        inspector.feed(chunk)
                        with local():
                            _write_all(out, chunk)
                        watch.received(len(chunk))
                        crashpoints.reached("mid_download")
                    if inspector.size < file.size:
                        # A transfer may end early without an error (a TLS stream cut
                        # without its close_notify reads as a clean end): the bytes so far
                        # are valid, the rest is read on from there. A file that truly
                        # shrank ends short every time and fails this poll; the next
                        # listing gives its new size.
                        raise TransientError(
                            f"{file.name}: the transfer ended at byte {inspector.size:,} of"
                            f" {file.size:,}"
                        )
            with local():
                os.fsync(out.fileno())
    except FileChanged:
        part.unlink(missing_ok=True)  # a changed file gets a new staging name: this is waste
        raise
    inspector.finish()
    try:
        os.replace(part, done)
    except FileNotFoundError as exc:  # removed meanwhile (by hand, or housekeeping's race)
        raise TransientError(f"the staged copy of {file.name} was removed meanwhile") from exc
    except OSError as exc:
        raise StorageError("staging", part, cause(exc)) from exc
    # Crash after the rename: the staged file is complete; the ledger has not seen it, so
    # the next poll takes it again: the staged file is reused (re-hashed, not fetched).
    log.info("file_downloaded", size=file.size, sha256=inspector.hexdigest())
    return Staged(done, inspector)
