"""Real file-system faults for tests: a small disk that fills up, a read-only folder.
Mounting needs root: where it is not allowed, the test asking for it is skipped."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _mount(*args: str) -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a test file system needs root")
    done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if done.returncode:
        pytest.skip(f"cannot mount here: {done.stderr.strip()}")


def _unmount(folder: Path) -> None:
    # Lazy: a process of the test that still holds a file there cannot keep it mounted.
    subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)


@contextmanager
def small_disk(folder: Path, size: str = "1m") -> Iterator[Path]:
    """A real file system of ``size`` at ``folder`` (tmpfs), to fill up."""
    folder.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(folder))
    try:
        yield folder
    finally:
        _unmount(folder)


def grow(folder: Path) -> None:
    """Space freed: the small disk is made large."""
    subprocess.run(["mount", "-o", "remount,size=64m", str(folder)], check=True)


@contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """``folder`` as a read-only file system (a bind mount over itself)."""
    _mount("--bind", str(folder), str(folder))
    try:
        remounted = subprocess.run(
            ["mount", "-o", "remount,ro,bind", str(folder)],
            capture_output=True,
            text=True,
            check=False,
        )
        if remounted.returncode:
            pytest.skip(f"cannot remount read-only here: {remounted.stderr.strip()}")
        yield folder
    finally:
        _unmount(folder)
