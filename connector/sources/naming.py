"""Names on the remote side: which are safe to take, how a moved file avoids a clash, and
how a name is shown on a terminal.

A listed name is a ``str``; bytes that are not UTF-8 arrive as lone surrogates
(``surrogateescape``, as Python decodes file names), so that no adapter fails on them and
``hostile`` can refuse them."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime

MAX_NAME_BYTES = 255
TEMPORARY_SUFFIXES = (".part", ".tmp", ".filepart")
# The reject reports the connector writes beside the files it was sent (`reject_report`):
# never taken as a file to ingest, whatever a source's patterns say.
REPORT_SUFFIX = ".rejects.csv"
# Line and paragraph separators: not control characters, but they break a log line too.
_SEPARATORS = ("\u2028", "\u2029")
_SHORT_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _encoded(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def hostile(name: str) -> str | None:
    """Why a listed name must not be used, or None. A server (or whoever writes to it)
    controls names; they must never steer a path of ours, reach a terminal raw, or fail a
    store that keeps text as UTF-8."""
    if name in ("", ".", "..") or ".." in name.split("/"):
        return "a path traversal"
    if "/" in name or "\\" in name:
        return "a path, not a name"
    if any("\udc80" <= c <= "\udcff" for c in name):
        return "not valid UTF-8"
    # Cc is exactly C0, DEL and C1: what terminals act on (ESC sequences, BEL, CSI).
    if any(unicodedata.category(c) == "Cc" or c in _SEPARATORS for c in name):
        return "a control character"
    if len(_encoded(name)) > MAX_NAME_BYTES:
        return f"longer than {MAX_NAME_BYTES} bytes"
    return None


def shown(name: str) -> str:
    """``name`` safe to print on a terminal or in a log line, and never like another name:
    a character that is not printable is escaped as in a Python literal (``\\n``, ``\\x1b``,
    ``\\u0085``, ``\\u2028``), a byte that is not UTF-8 as ``\\xff``, and a backslash as
    ``\\\\``."""
    if name.isprintable() and "\\" not in name:
        return name  # the usual case, at no cost
    out = []
    for c in name:
        code = ord(c)
        if c in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[c])
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif c.isprintable():
            out.append(c)
        elif code < 0x80:  # the same byte in UTF-8
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:  # not \x..: from \x80 up, that means a byte that is not UTF-8
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)


def temporary(name: str) -> bool:
    """Names of files still being written, by convention (docs/configuration.md, Sources),
    and of the connector's own reports: never files to take."""
    return name.startswith(".") or name.endswith((*TEMPORARY_SUFFIXES, REPORT_SUFFIX))


def clash_free_name(name: str, exists: Callable[[str], bool], now: datetime | None = None) -> str:
    """``name`` if free, else ``stem.<UTC timestamp>.ext`` (with a counter if even that
    is taken): a moved file never overwrites another.
    The stem is shortened when needed so that the new name fits MAX_NAME_BYTES: a name at
    the limit would otherwise never move."""
    if not exists(name):
        return name
    stem, dot, ext = name.rpartition(".")
    suffix = f".{ext}" if dot else ""
    if not dot or len(_encoded(suffix)) > MAX_NAME_BYTES // 2:
        # No extension, or a "suffix" too long to be one: the stamp goes at the end.
        stem, suffix = name, ""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    candidate = _fitted(stem, f".{stamp}{suffix}")
    counter = 1
    while exists(candidate):
        counter += 1
        candidate = _fitted(stem, f".{stamp}-{counter}{suffix}")
    return candidate


def _fitted(stem: str, tail: str) -> str:
    """``stem + tail``, the stem cut (on a character boundary) to fit MAX_NAME_BYTES."""
    budget = MAX_NAME_BYTES - len(_encoded(tail))
    if len(_encoded(stem)) > budget:
        kept, used = [], 0
        for c in stem:
            used += len(_encoded(c))
            if used > budget:
                break
            kept.append(c)
        stem = "".join(kept)
    return stem + tail
