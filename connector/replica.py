"""This process's name among the processes (replicas) that share a store: in its logs, its
metrics, the claims it holds and the listing turns it takes."""

from __future__ import annotations

import os
import socket

_named: str | None = None


def name_as(replica: str | None) -> None:
    """Use ``replica`` (`[store] replica`) rather than the default, host:pid."""
    global _named
    _named = replica


def identity() -> str:
    """The configured name, else host:pid (asked each time: a child has its own pid)."""
    return _named or f"{socket.gethostname()}:{os.getpid()}"
