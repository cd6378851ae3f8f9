"""Alerts to a webhook: a real HTTP receiver on loopback, which may fail before it
accepts; the payload holds no secret, the URL is never logged."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from connector.cli import main
from connector.config import WebhookConfig, load_config
from connector.errors import ConfigError
from connector.pipeline import Poller
from connector.service import Service
from connector.store import open_store
from connector.webhook import Webhook
from tests.helpers import drop_config

TOKEN = "T0KEN-7c1e55e0b9"  # the secret part of the URL
EVENTS = [{"kind": "events", "pattern": "*.csv", "event_name": "buy"}]


class Receiver:
    """An HTTP server taking POSTs; it answers each with the next of ``replies`` (then
    200), and keeps what it was sent."""

    def __init__(self, replies: list[int]) -> None:
        self.replies = replies
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.got = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                code = receiver.replies.pop(0) if receiver.replies else 200
                with receiver.got:  # (before the reply: the sender may look at once)
                    receiver.paths.append(self.path)
                    if code == 200:
                        receiver.bodies.append(json.loads(body))
                    receiver.got.notify_all()
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/{TOKEN}"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        with self.got:
            assert self.got.wait_for(lambda: len(self.bodies) >= count, timeout)
            return list(self.bodies)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def receiver_with(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    receiver = Receiver(list(getattr(request, "param", [])))
    yield receiver
    receiver.close()


@pytest.mark.slow
@pytest.mark.parametrize("receiver_with", [[503, 500, 429]], indirect=True)
def test_an_alert_is_retried_until_the_receiver_takes_it(
    receiver_with: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three failures (5xx, 429), then accepted: one alert arrives, whole; the URL and its
    token appear in no log line."""
    monkeypatch.setenv("HOOK_URL", receiver_with.url)
    hook = Webhook.configured(WebhookConfig(url_env="HOOK_URL"))
    assert hook is not None
    with capture_logs() as logs:
        hook.alert(
            "file_rejected",
            source="acme",
            tenant="t",
            file="/in/a.csv",
            sha256="ab" * 32,
            reason="header: no identifier column 'email'",
        )
        [body] = receiver_with.wait_for(1)
        hook.close()
    assert len(receiver_with.paths) == 4
    assert set(body) == {"event", "at", "replica", "source", "tenant", "file", "sha256", "reason"}
    assert (body["event"], body["file"]) == ("file_rejected", "/in/a.csv")
    assert TOKEN not in json.dumps(body) and TOKEN not in repr(logs)
    assert [entry["event"] for entry in logs] == ["webhook_sent"]


@pytest.mark.slow
@pytest.mark.parametrize("receiver_with", [[404]], indirect=True)
def test_an_alert_the_receiver_refuses_is_said_lost_once(
    receiver_with: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 4xx is not retried: one warning, without the URL; the next alert goes on."""
    monkeypatch.setenv("HOOK_URL", receiver_with.url)
    hook = Webhook.configured(WebhookConfig(url_env="HOOK_URL"))
    assert hook is not None
    with capture_logs() as logs:
        hook.alert("source_failing", source="acme", tenant="t", failures=4, cause="refused")
        hook.alert("source_recovered", source="acme", tenant="t")
        [body] = receiver_with.wait_for(1)
        hook.close()
    assert body["event"] == "source_recovered"
    failed = [entry for entry in logs if entry["event"] == "webhook_failed"]
    assert failed == [
        {
            "event": "webhook_failed",
            "alert": "source_failing",
            "cause": "the receiver refused it: 404 Not Found",
            "log_level": "warning",
        }
    ]
    assert TOKEN not in repr(logs)


@pytest.mark.slow
def test_an_unreachable_receiver_does_not_hold_up_the_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing listens: the alert is retried until ``close``'s grace time, then said lost."""
    import socket

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    monkeypatch.setenv("HOOK_URL", f"http://127.0.0.1:{port}/{TOKEN}")
    hook = Webhook.configured(WebhookConfig(url_env="HOOK_URL", timeout="1s"))
    assert hook is not None
    with capture_logs() as logs:
        hook.alert("file_rejected", source="acme")
        began = time.monotonic()
        hook.close(grace=0.5)
        # (the retries stop with the grace time: no attempt but the one in flight)
        assert time.monotonic() - began < 0.5 + 1 + 2.5
    [failed] = [entry for entry in logs if entry["event"] == "webhook_failed"]
    assert failed["cause"].startswith("cannot reach the receiver: ")
    assert TOKEN not in repr(logs)


def test_alerts_past_the_queue_are_dropped_and_said(monkeypatch: pytest.MonkeyPatch) -> None:
    """A receiver that does not answer holds its alerts back; past the queue's room (here
    1 besides the one in flight) new ones are dropped, each said once, never blocking."""
    monkeypatch.setattr("connector.webhook._QUEUED", 1)
    monkeypatch.setenv("HOOK_URL", f"http://127.0.0.1:9/{TOKEN}")  # (discard: refused)
    hook = Webhook.configured(WebhookConfig(url_env="HOOK_URL", timeout="1s"))
    assert hook is not None
    with capture_logs() as logs:
        for n in range(3):
            hook.alert("file_rejected", source="acme", n=n)
        hook.close(grace=0.2)
    dropped = [entry for entry in logs if entry["event"] == "webhook_dropped"]
    assert dropped and all(entry["why"] == "1 alerts queued" for entry in dropped)


@pytest.mark.parametrize(
    "url", ["ftp://host/x", "hooks.example.com/x", "http:///x", f"http://h/x {TOKEN}"]
)
def test_a_url_that_is_not_http_is_refused_without_being_shown(
    url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOOK_URL", url)
    with pytest.raises(ConfigError) as refused:
        Webhook.configured(WebhookConfig(url_env="HOOK_URL"))
    assert str(refused.value) == "webhook.url_env: not an http:// or https:// URL"
    assert Webhook.configured(WebhookConfig()) is None  # (none configured)


@pytest.mark.slow
def test_once_alerts_a_file_rejected_whole_with_its_reason(
    receiver_with: Receiver, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`once` sends its alerts before it ends: a file rejected whole, one alert; a file
    ingested with rejected rows, none."""
    monkeypatch.setenv("HOOK_URL", receiver_with.url)
    config = drop_config(
        tmp_path, files=EVENTS, min_age="0s", tables={"webhook": {"url_env": "HOOK_URL"}}
    )
    (tmp_path / "inbox" / "bad.csv").write_text("email\nada@example.com\n")
    (tmp_path / "inbox" / "good.csv").write_text("identifier,timestamp\nu1,1\nu2,x\n")
    assert main(["--config", str(config), "once"]) == 0
    [body] = receiver_with.bodies  # (sent already: `once` waited for it)
    assert (body["event"], body["source"], body["tenant"]) == ("file_rejected", "drop", "default")
    assert body["file"].endswith("/inbox/bad.csv") and len(body["sha256"]) == 64
    assert body["reason"].startswith("header: no identifier column 'identifier'")


@pytest.mark.slow
def test_the_daemon_alerts_a_source_failing_past_max_missed_polls_and_its_recovery(
    receiver_with: Receiver, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With max_missed_polls = 2: the third failure in a row alerts, once, with its cause;
    the next poll that succeeds says the source recovered."""
    monkeypatch.setenv("HOOK_URL", receiver_with.url)
    path = drop_config(
        tmp_path,
        files=EVENTS,
        min_age="0s",
        tables={
            "metrics": {"max_missed_polls": 2},
            "webhook": {"url_env": "HOOK_URL"},
        },
    )
    config = load_config(path)
    service = Service(config)
    hook = service.webhook = Webhook.configured(config.webhook)
    assert hook is not None
    (tmp_path / "inbox").rename(tmp_path / "away")
    with open_store(config.store) as store:
        poller = Poller(config, config.sources[0], store, sleep=lambda _: None)
        for _ in range(4):
            assert service._poll(poller) is not None  # (a backoff: it failed)
        (tmp_path / "away").rename(tmp_path / "inbox")
        assert service._poll(poller) is None
        failing, recovered = receiver_with.wait_for(2)
        hook.close()
    assert (failing["event"], failing["failures"]) == ("source_failing", 3)
    assert failing["cause"].endswith("/inbox does not exist (yet)")
    assert (recovered["event"], recovered["source"]) == ("source_recovered", "drop")
