"""One retry policy for talking to a source: connecting and listing back off exactly as a
download does (a reset is a reset, whichever step it hits)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from connector.errors import TransientError

ATTEMPTS = 5
MAX_WAIT = 30.0  # seconds between two attempts, at most


@dataclass(frozen=True)
class Retries:
    """How often, and how patiently, a step is tried again: ``attempts`` in all, the
    waits between them growing up to ``max_wait`` seconds, spent in ``sleep`` (the
    service's wakes up on a stop request, cutting the wait short)."""

    attempts: int = ATTEMPTS
    max_wait: float = MAX_WAIT
    sleep: Callable[[float], object] = time.sleep

    def attempts_for(self, worth: Callable[[BaseException], bool]) -> Retrying:
        """``retrying`` by this policy, for the errors ``worth`` retrying."""
        return retrying(self.sleep, attempts=self.attempts, max_wait=self.max_wait, worth=worth)


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, TransientError)


def retrying(
    sleep: Callable[[float], object],
    *,
    attempts: int = ATTEMPTS,
    max_wait: float = MAX_WAIT,
    worth: Callable[[BaseException], bool] = _transient,
) -> Retrying:
    """Attempts with exponential backoff and jitter, for the errors ``worth`` retrying,
    re-raising the last one. ``sleep`` waits between attempts (the service's wakes up on a
    stop request, cutting the wait short)."""

    def wait(seconds: float) -> None:
        sleep(seconds)  # (tenacity wants a sleep returning None; the service's returns a flag)

    return Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential_jitter(multiplier=0.2, max=max_wait, jitter=0.2),
        retry=retry_if_exception(worth),
        sleep=wait,
        reraise=True,
    )
