"""Claims on one host: lock files beside the SQLite store, taken with flock.

The kernel drops a lock when its process dies, so a crash never leaves a claim held. Every
process that shares an SQLite store shares its host, so this is all the claiming it needs.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import BinaryIO

from connector.errors import Interrupted, PlaceBusy
from connector.localfs import faults, make_folder, open_private
from connector.store.port import Stop, never

POLL_SECONDS = 0.05  # how often a waiting claim asks again (and whether to stop)

# The lock slots this process holds, and for what, to say why a claim is busy: another
# process has the file, or (4096 slots) another file of ours shares its slot for a while.
_held_here: Counter[tuple[Path, str]] = Counter()
_held_lock = threading.Lock()


def _lock(slot: BinaryIO, wait: bool, stop: Stop) -> None:
    """flock, waiting (asking ``stop()`` in between: Interrupted) or not (BlockingIOError)."""
    while True:
        try:
            fcntl.flock(slot, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if not wait:
                raise
        if stop():
            raise Interrupted("stopped while waiting for a claim another run holds")
        time.sleep(POLL_SECONDS)


class FileLocks:
    """Claims (see ``Store.claim`` and ``Store.claim_place``) as lock files in ``folder``,
    made on first use (never by `check`, which claims nothing)."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._made = False

    def _locks(self) -> Path:
        if not self._made:
            make_folder(self._folder, "lock folder")  # 0700, like every folder of ours
            self._made = True
        return self._folder

    def claim(self, sha256: str, *, stop: Stop = never) -> AbstractContextManager[None]:
        return self._hold(sha256[:3], sha256, stop=stop)

    def claim_place(
        self, source: str, path: str, *, wait: bool = True
    ) -> AbstractContextManager[None]:
        place = hashlib.sha256(f"{source}\0{path}".encode("utf-8", "surrogateescape")).hexdigest()
        return self._hold("p" + place[:3], place, wait=wait)

    def confirm(self) -> None:
        """Nothing to do: the kernel holds a flock until its process lets go or dies, so a
        claim here cannot be lost while we live to act under it."""

    @contextmanager
    def _hold(
        self, slot_name: str, key: str, *, wait: bool = True, stop: Stop = never
    ) -> Iterator[None]:
        """4096 slots (of each kind) keep the folder small; two claims sharing a slot only
        wait for each other (or, not waiting, are busy). ``key``: what is claimed (to tell
        a busy place from a shared slot)."""
        path = self._locks() / slot_name
        with faults("lock file", path):
            # 0600 whatever the umask; read-only: flock needs no more, and a store whose
            # disk turned read-only is then what the error names
            fd = open_private(path, os.O_RDONLY)
        with open(fd, "rb", buffering=0) as slot:
            try:
                _lock(slot, wait, stop)
            except BlockingIOError:
                with _held_lock:
                    shared = any(p == path and k != key for p, k in _held_here)
                raise PlaceBusy(
                    "its lock slot is held for another file of this run"
                    if shared
                    else "in hand in another run (or a file sharing its lock slot)"
                ) from None
            with _held_lock:
                _held_here[path, key] += 1
            try:
                yield
            finally:
                with _held_lock:
                    _held_here[path, key] -= 1
                    if not _held_here[path, key]:
                        del _held_here[path, key]
                fcntl.flock(slot, fcntl.LOCK_UN)
