"""``file://`` sources: a local folder, read like any remote one."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Generator
from pathlib import Path
from types import TracebackType
from typing import Self

from connector.actions import Action, Delete, Leave
from connector.config import SourceConfig
from connector.errors import TransientError
from connector.sources.base import CHUNK, RemoteFile
from connector.sources.naming import REPORT_SUFFIX, clash_free_name


class LocalSource:
    """A folder on this machine (or a mounted share). No connection, but the same
    guarantees: reads resume at an offset, completion never overwrites."""

    def __init__(self, config: SourceConfig, password: str | None = None) -> None:
        del password  # a local folder has none; the signature is the registry's
        self.folder = Path(config.remote_path)

    def __enter__(self) -> Self:
        if not self.folder.is_dir():
            raise TransientError(f"folder {self.folder} does not exist (yet)")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def list(self) -> list[RemoteFile]:
        files = []
        try:
            with os.scandir(self.folder) as entries:
                for entry in entries:
                    info = entry.stat(follow_symlinks=False)
                    if stat.S_ISREG(info.st_mode):
                        files.append(RemoteFile(entry.name, info.st_size, info.st_mtime))
        except OSError as exc:
            raise TransientError(f"cannot list {self.folder}: {exc.strerror}") from exc
        return files

    def read(self, name: str, offset: int = 0) -> Generator[bytes, None, None]:
        try:
            with (self.folder / name).open("rb") as f:
                f.seek(offset)
                while chunk := f.read(CHUNK):
                    yield chunk
        except OSError as exc:
            raise TransientError(f"cannot read {name}: {exc.strerror}") from exc

    def complete(self, name: str, action: Action, report: bytes | None = None) -> str | None:
        path = self.folder / name
        try:  # (put raises TransientError itself, which passes through)
            if isinstance(action, Leave):
                if report is not None:
                    self.put("", name + REPORT_SUFFIX, report)
                return None
            if isinstance(action, Delete):
                path.unlink()
                return None
            folder = action.folder
            target_dir = self.folder / folder
            target_dir.mkdir(parents=True, exist_ok=True)
            target = target_dir / clash_free_name(name, lambda n: (target_dir / n).exists())
            if report is not None:
                self.put(folder, target.name + REPORT_SUFFIX, report)
            _move(path, target)
            return str(target)
        except OSError as exc:
            raise TransientError(f"cannot {action} {name}: {exc.strerror}") from exc

    def put(self, folder: str, name: str, data: bytes) -> str:
        target = self.folder / folder / name
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        except OSError as exc:
            raise TransientError(f"cannot write {target}: {exc.strerror}") from exc
        return str(target)

    def remove(self, folder: str, name: str) -> None:
        path = self.folder / folder / name
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise TransientError(f"cannot remove {path}: {exc.strerror}") from exc


_NO_HARD_LINKS = (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS)  # FAT, some SMB and FUSE mounts


def _move(path: Path, target: Path) -> None:
    """Move a file to a free name, never over a file that appeared there since the name was
    chosen. A folder on another file system gets a copy, hidden (a name of its own) and
    synced until complete, so that a crash or a full disk leaves no half file under the
    name; then the original goes."""
    try:
        _place(path, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        hidden = Path(name)
        try:
            with os.fdopen(fd, "wb") as copy, path.open("rb") as source:
                shutil.copyfileobj(source, copy, CHUNK)
                os.fsync(copy.fileno())
            with contextlib.suppress(OSError):  # (times are a courtesy some mounts refuse)
                shutil.copystat(path, hidden)
            _place(hidden, target)
        except BaseException:
            hidden.unlink(missing_ok=True)
            raise
        path.unlink()


def _place(path: Path, target: Path) -> None:
    """Rename within one file system, never over a file: link, then unlink (a link fails
    rather than overwrite). Where hard links are refused, a rename after a check, with the
    small race that FTP has."""
    try:
        os.link(path, target)
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        if target.exists():
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST)) from exc
        os.rename(path, target)
        return
    path.unlink()
