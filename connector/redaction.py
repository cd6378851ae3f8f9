"""The secrets this process has read (source passwords), so that no text leaving it (a log
line, a traceback, an error's message, a reason stored in the ledger) can carry one, even
text that a library wrote with a password it was given."""

from __future__ import annotations

import threading

_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()


def remember(secret: str) -> None:
    """``secret`` is never to be shown from now on."""
    global _secrets
    if secret:
        with _lock:
            _secrets = _secrets | {secret}


def scrub(text: str) -> str:
    """``text`` with every remembered secret replaced by ``***``."""
    for secret in _secrets:  # (a handful at most: one per source)
        if secret in text:
            text = text.replace(secret, "***")
    return text
