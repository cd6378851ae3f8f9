"""Our own files on the local disk: the store, staged downloads, archive copies, lock files.

They hold customer data, so each is made private to the service's user whatever the umask
(files 0600, folders 0700), and a fault with one is told in one line naming the path and
the cause (``StorageError``), never as a traceback.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from connector.errors import StorageError

FILE_MODE = 0o600
FOLDER_MODE = 0o700

_CAUSES = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "the file is too large for this file system (or a file size limit)",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "is a folder, not a file",
    errno.EIO: "input/output error (the disk may be failing)",
}


def cause(exc: OSError) -> str:
    """What went wrong, in words that do not need the errno table."""
    if exc.errno in _CAUSES:
        return _CAUSES[exc.errno]
    text = exc.strerror or str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]


def errno_cause(number: int) -> str:
    """``cause`` for a bare errno (SQLite reports the one behind its I/O errors)."""
    return cause(OSError(number, os.strerror(number)))


@contextmanager
def faults(what: str, path: Path | str) -> Iterator[None]:
    """An OSError inside is raised as StorageError naming ``what`` and ``path``."""
    try:
        yield
    except OSError as exc:
        raise StorageError(what, path, cause(exc)) from exc


def make_folder(folder: Path, what: str) -> None:
    """Make ``folder`` and its missing parents, each 0700 whatever the umask. An existing
    folder is left as it is (its owner may have opened it on purpose). StorageError if it
    cannot be made: a file in the way, a read-only file system, permissions."""
    missing = []
    for level in (folder, *folder.parents):
        if level.is_dir():
            break
        missing.append(level)
    with faults(what, folder):
        for level in reversed(missing):
            try:
                os.mkdir(level, FOLDER_MODE)
            except FileExistsError:
                if level.is_dir():
                    continue  # made meanwhile, by another process
                problem = "not a folder" if level == folder else f"{level} is not a folder"
                raise StorageError(what, folder, problem) from None
            # mkdir's mode is cut by the umask; a stricter one would leave us a folder we
            # cannot use, a looser one cannot widen it.
            os.chmod(level, FOLDER_MODE)


def open_private(path: Path, flags: int) -> int:
    """Open ``path`` (``os.open`` flags, without O_CREAT), creating it 0600 whatever the
    umask if it does not exist; a file descriptor. OSError as ``os.open``."""
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return os.open(path, flags)
    try:
        os.fchmod(fd, FILE_MODE)  # (the umask may have cut the owner's own bits)
    except BaseException:
        os.close(fd)
        raise
    return fd
