"""``connector demo --replicas N``: N daemons (`connector run`) on loopback, sharing one
throwaway PostgreSQL store and one SFTP server full of files; one replica is killed half-way
and the others take its work over once its lease runs out.

PostgreSQL comes from this machine's server programs (`initdb`, `pg_ctl`), as in the tests;
everything else under ``var/demo-replicas`` (made afresh each time). The store goes with
the demo's end: the summary is printed before.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

from connector.config import StoreConfig
from connector.store import open_store
from connector.testing import EmbeddedSFTPServer
from connector.testing.postgres import EmbeddedPostgres, PostgresUnavailable
from connector.testing.replicas import Replicas

ROOT = Path("var/demo-replicas")
FILES = 120
LEASE = "3s"


def _fill(outbox: Path) -> None:
    outbox.mkdir(parents=True)
    for i in range(FILES):
        rows = "".join(f"user{i}-{r}@example.com,{i}.{r}\n" for r in range(50))
        (outbox / f"purchases_{i:03d}.csv").write_text("email,data.total\n" + rows)


def _replicas(root: Path, sftp: EmbeddedSFTPServer, store_url: str) -> Replicas:
    secret = root / "sftp.password"
    secret.write_text(sftp.password)
    secret.chmod(0o600)
    source = {
        "name": "acme",
        "url": sftp.url + "outbox",
        "password_file": str(secret.resolve()),
        "known_hosts": str(sftp.write_known_hosts(root / "known_hosts").resolve()),
        "identifier": "email",
        "interval": "1s",
        "min_age": "0s",
        "after": "move:processed",
        "files": [{"kind": "events", "pattern": "purchases_*.csv", "event_name": "purchase"}],
    }
    return Replicas(root.resolve(), {"url": store_url, "lease": LEASE}, source)


def _taken(replicas: Replicas, name: str) -> int:
    return sum(
        1 for e in replicas.events(name) if e["event"] in ("file_ingested", "file_duplicate")
    )


def _wait_for(done: int, store_url: str, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    with open_store(StoreConfig(url=store_url)) as store:
        while time.monotonic() < deadline:
            if sum(1 for _ in store.records("files")) >= done:
                return True
            time.sleep(0.2)
    return False


def run_replicas_demo(count: int) -> int:
    try:
        postgres = EmbeddedPostgres()
    except PostgresUnavailable as exc:
        print(f"connector: demo --replicas needs PostgreSQL's server programs: {exc}")
        return 1
    shutil.rmtree(ROOT, ignore_errors=True)
    ROOT.mkdir(parents=True)
    names = [f"r{i}" for i in range(1, count + 1)]
    with ExitStack() as stack:
        server = stack.enter_context(postgres)
        sftp = stack.enter_context(EmbeddedSFTPServer(ROOT / "sftp-server"))
        _fill(sftp.root / "outbox")
        url = server.create_database("connector")
        print(f"PostgreSQL on {url}; SFTP on {sftp.url} with {FILES} files in outbox/")
        replicas = stack.enter_context(_replicas(ROOT, sftp, url))
        for name in names:
            replicas.start(name)
        print(
            f"{count} replicas started ({', '.join(names)}), lease {LEASE}; their logs are"
            f" in {ROOT}/<name>.log\n"
        )
        if count > 1 and _wait_for(FILES // 4, url):
            replicas.kill(names[0])
            print(
                f">>> {names[0]} is killed (SIGKILL) half-way: the others take over its file"
                f" once its lease ({LEASE}) runs out\n"
            )
        finished = _wait_for(FILES, url)
        stopped = replicas.stop_all()
        with open_store(StoreConfig(url=url)) as store:
            files = Counter(f["status"] for f in store.records("files"))
            events = sum(1 for _ in store.records("events"))
        print(f"{'replica':10} {'files taken':>12}  exit")
        for name in names:
            code = stopped.get(name, ("killed", 0.0))[0]
            print(f"{name:10} {_taken(replicas, name):>12}  {code}")
        print(f"\nledger: {dict(files)}; {events} events stored (expected {FILES * 50})")
        print(
            "every file ingested once:" if finished else "not every file was taken in time:",
            f"{files['ingested']} of {FILES}",
        )
    return 0 if finished and files["ingested"] == FILES and events == FILES * 50 else 1
