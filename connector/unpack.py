"""Compressed files (`.gz`, `.zip` holding one CSV) read as their content, into a private
temporary file, with limits against decompression bombs: the content may not pass
`[ingest] max_unpacked_mb`, nor be more than `max_unpack_ratio` times the bytes given. Past
either, the file is rejected whole, with the reason; nothing of it is stored.

The file's identity stays the SHA-256 of the bytes given (docs/guarantees.md): the archive
copy of a file is another file than the file itself.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from connector.config import IngestConfig
from connector.errors import FileRejected
from connector.localfs import make_folder

CHUNK = 1 << 20
SUFFIXES = (".gz", ".zip")


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class UnpackLimits:
    max_bytes: int  # content at most
    max_ratio: int  # content at most this many times the bytes given

    @classmethod
    def of(cls, ingest: IngestConfig) -> UnpackLimits:
        return cls(ingest.max_unpacked_mb * 1_000_000, ingest.max_unpack_ratio)


def packed(path: Path) -> bool:
    return path.suffix.lower() in SUFFIXES


@contextlib.contextmanager
def unpacked(path: Path, folder: Path, limits: UnpackLimits) -> Iterator[Path]:
    """The content of ``path`` in a temporary file under ``folder`` (removed afterwards);
    FileRejected when it cannot be read or passes a limit."""
    make_folder(folder, "staging folder")
    handle, name = tempfile.mkstemp(prefix=".unpacked-", suffix=".csv", dir=folder)
    target = Path(name)
    try:
        with os.fdopen(handle, "wb") as out, _content(path) as content:
            _copy(content, out, _ceiling(path, limits), limits)
        yield target
    finally:
        target.unlink(missing_ok=True)


@contextlib.contextmanager
def _content(path: Path) -> Iterator[Readable]:
    try:
        if path.suffix.lower() == ".gz":
            with gzip.GzipFile(path, "rb") as content:
                yield content
            return
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            if len(members) != 1:
                names = ", ".join(m.filename for m in members[:5]) or "none"
                raise FileRejected(
                    f"a .zip must hold one file, to be read as its CSV; it holds"
                    f" {len(members)} ({names})"
                )
            with archive.open(members[0]) as content:
                yield content
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile, NotImplementedError) as exc:
        raise FileRejected(f"not a readable {path.suffix.lower()} file: {exc}") from exc


def _ceiling(path: Path, limits: UnpackLimits) -> int:
    return min(limits.max_bytes, max(path.stat().st_size, 1) * limits.max_ratio)


def _copy(content: Readable, out: IO[bytes], ceiling: int, limits: UnpackLimits) -> None:
    written = 0
    while chunk := content.read(CHUNK):
        written += len(chunk)
        if written > ceiling:
            raise FileRejected(
                f"its content passes {ceiling:,} bytes (at most {limits.max_ratio} times the"
                f" bytes given and {limits.max_bytes:,} bytes: [ingest] max_unpack_ratio,"
                " max_unpacked_mb): refused as a decompression bomb"
            )
        out.write(chunk)
    out.flush()
