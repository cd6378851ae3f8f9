"""Local copies of processed files: gzip, named by SHA-256, written atomically. The same
bytes are archived once, however many times and names they arrive under."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from isal import isal_zlib


def archive(staged: Path, sha256: str, folder: Path) -> Path:
    """Copy ``staged`` to ``folder/<sha256>.csv.gz`` unless it is already there."""
    target = folder / f"{sha256}.csv.gz"
    if target.exists():
        os.utime(target)  # these bytes came again: `archive_keep` counts from now
        return target
    folder.mkdir(parents=True, exist_ok=True)
    # A name of its own (two sources may archive the same bytes at once). Crash while
    # writing: the .part remains, unused (housekeeping removes it a day later); the next
    # copy of these bytes has a new one.
    with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{sha256}.", suffix=".part",
                                     delete=False) as out:  # fmt: skip
        partial = Path(out.name)
        try:
            # ISA-L's deflate: the gzip format at about 5x zlib's speed and a smaller size
            # (measured on the bench file: 0.28 s vs 1.33 s, 34 MB vs 37 MB). wbits 31: gzip.
            compressor = isal_zlib.compressobj(1, isal_zlib.DEFLATED, 31)
            with staged.open("rb") as src:
                while chunk := src.read(1 << 20):
                    out.write(compressor.compress(chunk))
            out.write(compressor.flush())
            out.flush()
            os.fsync(out.fileno())
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    os.replace(partial, target)
    # The rename itself must survive a power cut before the remote side deletes the file.
    folder_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(folder_fd)
    finally:
        os.close(folder_fd)
    return target
