"""Alerts POSTed to a webhook (`[webhook]`): a file rejected whole, a source failing past
`metrics.max_missed_polls` polls in a row, and that source recovering.

Each alert is one JSON object, sent from a thread of its own so that a slow or absent
receiver never holds a poll up, and retried with backoff when the receiver fails (a
connection refused, a 5xx or 429 reply). The payload holds names, checksums, counts and
reasons, which never carry a secret; the URL, which often does (a token in its path), is
never logged."""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import structlog

from connector.config import WebhookConfig
from connector.errors import AlertRefused, ConfigError, ConnectorError, TransientError
from connector.redaction import cause_of
from connector.replica import identity
from connector.retries import retrying
from connector.secrets import webhook_url
from connector.status import Status
from connector.store.ledger import Entry, Ledger

ATTEMPTS = 6  # over about a minute, with the retries' backoff
_QUEUED = 1000  # alerts waiting at most; past it, new ones are dropped (and said so)
_STOP = object()


class Webhook:
    """Sends alerts to one URL. ``close`` sends what is queued, within a grace time."""

    def __init__(self, url: str, timeout: float) -> None:
        self._url = url
        self._timeout = timeout
        self._queue: queue.Queue[Any] = queue.Queue(_QUEUED)
        self._stopping = threading.Event()
        self._log = structlog.get_logger()
        self._thread = threading.Thread(target=self._send_all, name="webhook", daemon=True)
        self._thread.start()

    @classmethod
    def configured(cls, config: WebhookConfig) -> Webhook | None:
        """The configured webhook; None without one. ConfigError for a URL that is not
        http(s) (said without the URL)."""
        url = webhook_url(config)
        if url is None:
            return None
        key = "webhook.url_env" if config.url_env else "webhook.url_file"
        parts = urlsplit(url)
        # (a space or control character would make the request fail, quoting the URL)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or any(c.isspace() or not c.isprintable() for c in url)
        ):
            raise ConfigError([f"{key}: not an http:// or https:// URL"])
        return cls(url, config.timeout)

    def alert(self, event: str, **fields: Any) -> None:
        """Queue an alert: ``{"event", "at", "replica", **fields}``."""
        body = {
            "event": event,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "replica": identity(),
            **fields,
        }
        try:
            self._queue.put_nowait(body)
        except queue.Full:
            self._log.warning("webhook_dropped", alert=event, why=f"{_QUEUED} alerts queued")

    def rejected(self, entries: Iterable[Entry], ledger: Ledger) -> None:
        """Alert each of ``entries`` (a poll's) that was rejected whole, with its reason."""
        for entry in entries:
            if entry.status is Status.REJECTED:
                try:
                    first = ledger.first_reject(entry.id)
                except ConnectorError as exc:  # (the alert goes, without its reason)
                    self._log.warning("webhook_reason_unread", file=entry.path, cause=str(exc))
                    first = None
                self.alert(
                    "file_rejected",
                    source=entry.source,
                    tenant=entry.tenant,
                    file=entry.path,
                    sha256=entry.sha256,
                    reason=first.reason if first else None,
                )

    def close(self, grace: float = 10.0) -> None:
        """Send what is queued for at most ``grace`` seconds; what is left is said lost."""
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=grace)
        self._thread.join(grace)
        self._stopping.set()  # (no more retries: what is left is said lost)
        self._thread.join(self._timeout + 1)  # (an attempt in flight ends by its timeout)

    def _send_all(self) -> None:
        while (body := self._queue.get()) is not _STOP:
            if self._stopping.is_set():
                self._log.warning("webhook_failed", alert=body["event"], cause="stopping")
                continue
            try:
                for attempt in retrying(
                    self._stopping.wait, attempts=ATTEMPTS, worth=self._worth_retrying
                ):
                    with attempt:
                        self._post(body)
            except Exception as exc:  # the sender's boundary: an alert lost is said, once
                self._log.warning("webhook_failed", alert=body["event"], cause=cause_of(exc))
            else:
                self._log.debug("webhook_sent", alert=body["event"])
            if self._stopping.is_set() and self._queue.empty():
                return

    def _worth_retrying(self, exc: BaseException) -> bool:
        return isinstance(exc, TransientError) and not self._stopping.is_set()

    def _post(self, body: dict[str, Any]) -> None:
        request = urllib.request.Request(
            self._url,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "connector"},
        )
        try:  # (HTTPS_PROXY and NO_PROXY apply, as for any outgoing request)
            with urllib.request.urlopen(request, timeout=self._timeout) as reply:
                reply.read()
        except urllib.error.HTTPError as exc:
            exc.close()  # (it holds the reply, and with it the connection)
            if exc.code >= 500 or exc.code == 429:
                raise TransientError(f"the receiver answered {exc.code} {exc.reason}") from None
            raise AlertRefused(f"the receiver refused it: {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TransientError(f"cannot reach the receiver: {reason}") from None
        except Exception as exc:  # (a library's text may quote the URL, and its token)
            raise TransientError(f"cannot send to the receiver: {type(exc).__name__}") from None
