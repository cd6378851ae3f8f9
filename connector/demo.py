"""``connector demo``: sample files through the real rules, ledger and store, end to end.

Everything lands under ``var/demo`` (made afresh each time), with a config file there so
that the next commands it suggests work as printed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from connector.config import load_config
from connector.csvrules.rules import Kind
from connector.ingest import Ingestor, Outcome
from connector.store.db import Database

ROOT = Path("var/demo")

SAMPLES: dict[str, tuple[Kind, str]] = {
    "contacts_2026-11-01.csv": (
        "contacts",
        "email;firstName;plan;unsubscribed;language\n"
        "ada@example.com;Ada;pro;false;en\n"
        "grace@example.com;Grace;free;;fr\n"
        "not-an-email;Nobody;free;false;en\n"  # rejected: email is not an address
        "linus@example.com;Linus;;TRUE;\n",
    ),
    "purchases_2026-11-01.csv": (
        "events",
        "email,timestamp,idempotencyKey,data.total,currency,items\n"
        "ada@example.com,2026-11-01T09:15:00Z,order-1001,129.90,EUR,3\n"
        "grace@example.com,1761988500,order-1002,15,EUR,1\n"
        "ada@example.com,1761988800,order-1001,129.90,EUR,3\n"  # duplicate key: skipped
        "linus@example.com,yesterday,order-1003,7.5,EUR,1\n"  # rejected: bad timestamp
        'margaret@example.com,,order-1004,42,USD,"[1,2]"\n',  # unknown contact: created
    ),
    "purchases_2026-11-02.csv": (
        "events",
        "email,timestamp,idempotencyKey,data.total,currency,items\n"
        "grace@example.com,1762074000,order-1005,99.99,EUR,2\n"
        "ada@example.com,1762074600,order-1001,129.90,EUR,3\n",  # key used < 24 h ago
    ),
}
# The same bytes as a file already taken, under another name: recorded as a duplicate.
RE_UPLOAD = ("purchases_2026-11-01.csv", "purchases_2026-11-01 (copy).csv")

CONFIG = """\
[store]
path = "{root}/connector.db"

[paths]
staging = "{root}/staging"
archive = "{root}/archive"

[[sources]]
name = "import"
url = "file://{inbox}"
identifier = "email"

[[sources.files]]
kind = "contacts"
pattern = "contacts_*.csv"

[[sources.files]]
kind = "events"
pattern = "purchases_*.csv"
event_name = "purchase"
"""


def _prepare() -> tuple[Path, list[tuple[Path, Kind]]]:
    shutil.rmtree(ROOT, ignore_errors=True)
    inbox = ROOT / "inbox"
    inbox.mkdir(parents=True)
    files = []
    for name, (kind, text) in SAMPLES.items():
        (inbox / name).write_text(text, encoding="utf-8")
        files.append((inbox / name, kind))
    original, copy = RE_UPLOAD
    shutil.copyfile(inbox / original, inbox / copy)
    files.append((inbox / copy, "events"))
    config = ROOT / "connector.toml"
    config.write_text(CONFIG.format(root=ROOT.resolve(), inbox=inbox.resolve()))
    return config, files


def _table(results: list[tuple[Path, Outcome]]) -> str:
    head = f"{'file':34} {'status':10} {'rows':>5} {'rejected':>8} {'duplicates':>10}"
    lines = [head, "-" * len(head)]
    for path, outcome in results:
        e = outcome.entry
        lines.append(f"{path.name:34} {e.status:10} {e.rows:>5} {e.rejected:>8} {e.duplicates:>10}")
    return "\n".join(lines)


def run_demo() -> int:
    config_path, files = _prepare()
    config = load_config(config_path)
    source = config.source("import")
    assert source is not None
    results = []
    with Database(config.store.path) as db:
        ingestor = Ingestor(db)
        for path, kind in files:
            rules = source.rules_for(kind, path.name)
            results.append((path, ingestor.ingest(path, rules, source="import", name=path.name)))
    print()
    print(_table(results))
    print()
    print("Next steps:")
    for table in ("events", "contacts", "rejects", "files"):
        print(f"  .venv/bin/connector --config {config_path} dump {table}")
    return 0
