"""One retry policy for talking to a source: connecting and listing back off exactly as a
download does (a reset is a reset, whichever step it hits)."""

from __future__ import annotations

from collections.abc import Callable

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from connector.errors import TransientError

ATTEMPTS = 5
MAX_WAIT = 30.0  # seconds between two attempts, at most


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
