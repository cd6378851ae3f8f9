"""The plain streaming importer `connector import` is measured against.

    python bench/baseline_stream.py CSV DB

What a competent engineer writes in an afternoon with the stdlib alone: DictReader, a regex
per cell, json.dumps, one INSERT per row. It does less than connector (no validation, line
numbers, contacts or ledger), so beating it is the floor, not the goal.
"""

import csv
import json
import re
import sqlite3
import sys

INT = re.compile(r"-?(0|[1-9][0-9]*)")
DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)\.[0-9]+")
RESERVED = ("identifier", "name", "timestamp", "idempotencyKey")


def typed(cell: str) -> object:
    if cell.lower() in ("true", "false"):
        return cell.lower() == "true"
    if INT.fullmatch(cell):
        return int(cell)
    if DECIMAL.fullmatch(cell):
        return float(cell)
    return cell


def main(csv_path: str, db_path: str) -> None:
    db = sqlite3.connect(db_path)
    db.execute(
        "CREATE TABLE IF NOT EXISTS events (identifier TEXT, name TEXT, timestamp INTEGER,"
        " idempotency_key TEXT, data TEXT)"
    )
    db.execute("CREATE TABLE IF NOT EXISTS idempotency_keys (key TEXT UNIQUE)")
    with open(csv_path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
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
    # One commit at the end: sqlite3 opens the transaction implicitly at the first INSERT, so
    # the whole file lands at once, the same all-or-nothing promise connector makes per file.
    db.commit()
    db.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
