"""Names on the remote side: which are safe to take, and how a moved file avoids a clash."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

MAX_NAME_BYTES = 255
TEMPORARY_SUFFIXES = (".part", ".tmp", ".filepart")


def hostile(name: str) -> str | None:
    """Why a listed name must not be used, or None. A server (or whoever writes to it)
    controls names; they must never steer a path of ours."""
    if name in ("", ".", "..") or ".." in name.split("/"):
        return "a path traversal"
    if "/" in name or "\\" in name:
        return "a path, not a name"
    if any(c in name for c in "\x00\r\n"):
        return "a control character"
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        return f"longer than {MAX_NAME_BYTES} bytes"
    return None


def temporary(name: str) -> bool:
    """Names of files still being written, by convention (CONTRACT §5)."""
    return name.startswith(".") or name.endswith(TEMPORARY_SUFFIXES)


def clash_free_name(name: str, exists: Callable[[str], bool], now: datetime | None = None) -> str:
    """``name`` if free, else ``stem.<UTC timestamp>.ext`` (with a counter if even that
    is taken): a moved file never overwrites another."""
    if not exists(name):
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    suffix = f".{ext}" if dot else ""
    candidate = f"{stem}.{stamp}{suffix}"
    counter = 1
    while exists(candidate):
        counter += 1
        candidate = f"{stem}.{stamp}-{counter}{suffix}"
    return candidate
