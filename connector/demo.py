"""``connector demo``: embedded SFTP and FTPS servers on loopback, with sample files (a few
bad rows, a repeated idempotency key, a re-upload under another name), ingested end to end
through the real sources, rules, ledger, store, archive and remote actions.

Everything lands under ``var/demo`` (made afresh each time), with a config file there so
that the commands it suggests afterwards work as printed.
"""

from __future__ import annotations

import shutil
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from connector.config import load_config
from connector.service import Service
from connector.store import open_store
from connector.store.port import Store
from connector.testing import EmbeddedFTPServer, EmbeddedSFTPServer

ROOT = Path("var/demo")

CONTACTS = (
    "email;firstName;plan;unsubscribed;language\n"
    "ada@example.com;Ada;pro;false;en\n"
    "grace@example.com;Grace;free;;fr\n"
    "not-an-email;Nobody;free;false;en\n"  # rejected: email is not an address
    "linus@example.com;Linus;;TRUE;\n"
)
PURCHASES_1 = (
    "email,timestamp,idempotencyKey,data.total,currency,items\n"
    "ada@example.com,2026-11-01T09:15:00Z,order-1001,129.90,EUR,3\n"
    "grace@example.com,1761988500,order-1002,15,EUR,1\n"
    "ada@example.com,1761988800,order-1001,129.90,EUR,3\n"  # same key: skipped as duplicate
    "linus@example.com,yesterday,order-1003,7.5,EUR,1\n"  # rejected: bad timestamp
    'margaret@example.com,,order-1004,42,USD,"[1,2]"\n'  # unknown contact: created
)
PURCHASES_2 = (
    "email,timestamp,idempotencyKey,data.total,currency,items\n"
    "grace@example.com,1762074000,order-1005,99.99,EUR,2\n"
    "ada@example.com,1762074600,order-1001,129.90,EUR,3\n"  # key used < 24 h ago
)
LATE = "email,timestamp,idempotencyKey,data.total\nlinus@example.com,1762160400,order-1006,5\n"

SOURCE = """
[[sources]]
name = "{name}"
url = "{url}outbox"
password_file = "{password_file}"
{trust}
identifier = "email"
min_age = "0s"
interval = "2s"
after = "{after}"

[[sources.files]]
kind = "contacts"
pattern = "contacts_*.csv"

[[sources.files]]
kind = "events"
pattern = "purchases_*.csv"
event_name = "purchase"
"""


def _source_toml(name: str, url: str, password: str, trust: str, after: str) -> str:
    secret = ROOT / f"{name}.password"
    secret.write_text(password)
    secret.chmod(0o600)
    return SOURCE.format(
        name=name, url=url, password_file=secret.resolve(), trust=trust, after=after
    )


def _write_config(sftp: EmbeddedSFTPServer, ftps: EmbeddedFTPServer) -> Path:
    known_hosts = sftp.write_known_hosts(ROOT / "known_hosts")
    config = ROOT / "connector.toml"
    root = ROOT.resolve()
    config.write_text(
        f'[store]\npath = "{root}/connector.db"\n'
        f'[paths]\nstaging = "{root}/staging"\narchive = "{root}/archive"\n'
        + _source_toml(
            "acme",
            sftp.url,
            sftp.password,
            f'known_hosts = "{known_hosts.resolve()}"',
            "move:processed",
        )
        + _source_toml("globex", ftps.url, ftps.password, f'ca_file = "{ftps.ca_file}"', "delete")
    )
    return config


def _drop(folder: Path, name: str, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")


def _wait_for(count: int, store: Store, service: Service, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not service.stopping.is_set():
        if sum(1 for _ in store.records("files")) >= count:
            return True
        time.sleep(0.2)
    return False


def _script(service: Service, store: Store, acme: Path) -> None:
    """Runs beside the daemon: waits for the first files, drops one more, then stops it."""
    if _wait_for(4, store, service):
        print("\n>>> a new file arrives on the SFTP server while the daemon runs\n", flush=True)
        _drop(acme, "purchases_2026-11-03.csv", LATE)
        _wait_for(5, store, service)
    service.stopping.set()  # what SIGTERM does


def _table(store: Store) -> str:
    head = f"{'source':8} {'file':40} {'status':10} {'rows':>5} {'rejected':>8} {'dups':>5}"
    lines = [head, "-" * len(head)]
    for f in store.records("files"):
        lines.append(
            f"{f['source']:8} {f['path']!s:40} {f['status']:10} {f['rows']:>5}"
            f" {f['rejected']:>8} {f['duplicates']:>5}"
        )
    return "\n".join(lines)


def run_demo() -> int:
    shutil.rmtree(ROOT, ignore_errors=True)
    ROOT.mkdir(parents=True)
    with ExitStack() as stack:
        sftp = stack.enter_context(EmbeddedSFTPServer(ROOT / "sftp-server"))
        ftps = stack.enter_context(EmbeddedFTPServer(ROOT / "ftps-server", tls=True))
        print(f"SFTP server on {sftp.url}  (host key {sftp.fingerprint})")
        print(f"FTPS server on {ftps.url}  (TLS, certificate from a throwaway CA)")
        acme, globex = sftp.root / "outbox", ftps.root / "outbox"
        _drop(acme, "contacts_2026-11-01.csv", CONTACTS)
        _drop(acme, "purchases_2026-11-01.csv", PURCHASES_1)
        _drop(globex, "purchases_2026-11-02.csv", PURCHASES_2)
        _drop(globex, "purchases_resent.csv", PURCHASES_1)  # the same bytes as acme's
        config = load_config(_write_config(sftp, ftps))
        print("\nThe daemon (`connector run`) starts; its logs follow.\n", flush=True)
        service = Service(config)
        store = stack.enter_context(open_store(config.store))
        threading.Thread(target=_script, args=(service, store, acme), daemon=True).start()
        service.run()
        print("\n" + _table(store))
        moved = sorted(p.name for p in (acme / "processed").iterdir())
        print(f"\nacme (after = move:processed) moved to outbox/processed: {', '.join(moved)}")
        left = sorted(p.name for p in globex.iterdir())
        print(f"globex (after = delete) has left in outbox: {', '.join(left) or 'nothing'}")
    print("\nNext steps:")
    for table in ("events", "contacts", "rejects", "files"):
        print(f"  .venv/bin/connector --config {ROOT}/connector.toml dump {table}")
    return 0
