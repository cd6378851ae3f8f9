"""The plain streaming importer `connector import` is measured against.

    python bench/baseline_stream.py CSV DB [--kind events|contacts]

What a competent engineer writes in an afternoon with the stdlib alone: DictReader, a regex
per cell, json.dumps, one INSERT per row (for contacts, one upsert per row). It does less than
connector (no validation, line numbers, ledger, nor the contacts an events file implies), so
beating it is the floor, not the goal.
"""

import argparse
import csv
import json
import re
import sqlite3

INT = re.compile(r"-?(0|[1-9][0-9]*)")
DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)\.[0-9]+")
RESERVED = ("identifier", "name", "timestamp", "idempotencyKey")
UNTYPED = ("email", "phone", "externalId")  # contact attributes that always stay strings


def typed(cell: str) -> object:
    if cell.lower() in ("true", "false"):
        return cell.lower() == "true"
    if INT.fullmatch(cell):
        return int(cell)
    if DECIMAL.fullmatch(cell):
        return float(cell)
    return cell


def import_events(db: sqlite3.Connection, rows: csv.DictReader) -> None:
    db.execute(
        "CREATE TABLE IF NOT EXISTS events (identifier TEXT, name TEXT, timestamp INTEGER,"
        " idempotency_key TEXT, data TEXT)"
    )
    db.execute("CREATE TABLE IF NOT EXISTS idempotency_keys (key TEXT UNIQUE)")
    for row in rows:
        key = row["idempotencyKey"] or None
        if key:
            cur = db.execute("INSERT OR IGNORE INTO idempotency_keys VALUES (?)", (key,))
            if cur.rowcount == 0:
                continue  # the key was already taken: a duplicate event, skip it
        data = {k: typed(v) for k, v in row.items() if k not in RESERVED and v != ""}
        db.execute(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?)",
            (row["identifier"], row["name"], int(row["timestamp"]), key, json.dumps(data)),
        )


def import_contacts(db: sqlite3.Connection, rows: csv.DictReader) -> None:
    db.execute("CREATE TABLE IF NOT EXISTS contacts (identifier TEXT PRIMARY KEY, attributes TEXT)")
    for row in rows:
        identifier = row.pop("identifier")
        # An empty cell leaves the attribute as it was: it is left out, and json_patch keeps
        # the stored value of every key the row does not name.
        attributes = {k: v if k in UNTYPED else typed(v) for k, v in row.items() if v != ""}
        db.execute(
            "INSERT INTO contacts VALUES (?, ?) ON CONFLICT(identifier) DO UPDATE"
            " SET attributes = json_patch(attributes, excluded.attributes)",
            (identifier, json.dumps(attributes)),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv")
    parser.add_argument("db")
    parser.add_argument("--kind", choices=("events", "contacts"), default="events")
    args = parser.parse_args()
    db = sqlite3.connect(args.db)
    with open(args.csv, newline="", encoding="utf-8") as f:
        rows = csv.DictReader(f)
        (import_contacts if args.kind == "contacts" else import_events)(db, rows)
    # One commit at the end: sqlite3 opens the transaction implicitly at the first INSERT, so
    # the whole file lands at once, the same all-or-nothing promise connector makes per file.
    db.commit()
    db.close()


if __name__ == "__main__":
    main()
