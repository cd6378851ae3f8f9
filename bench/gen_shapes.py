"""Write the deterministic CSV shapes of the import benchmark beyond gen_events.py's file.

    python bench/gen_shapes.py SHAPE --rows 1000000 --out bench/out/shape.csv [--seed 42]

SHAPE is one of:
  new-ids          events; about 65% of rows name a contact never seen earlier in the file,
                   the rest repeat one seen before; no quotes, LF line ends
  quoted-1pct      new-ids's rows, but one row in 100 has its coupon quoted (RFC 4180) because
                   it holds a comma, some with a doubled quote too
  all-quoted-crlf  new-ids's rows with every field quoted (csv.QUOTE_ALL, as spreadsheets and
                   pandas export) and CRLF line ends
  contacts         one contact per row, all distinct: identifier + 8 attributes (strings,
                   numbers, booleans, some empty cells)

The events shapes share gen_events.py's columns and value sets, and the same --rows and --seed
give the same rows in all three, so their timings differ by the CSV syntax alone. Rows are
written in batches and a contact is 4 bytes of memory, so 5M rows take ~30 s and little RAM.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path

from gen_events import BATCH, COUPONS, EVENT_NAMES, GIFTS, HEADER, PLANS, key_and_total

NEW_CONTACT = 0.65  # the share of rows that introduce a contact (the goal: at least 60%)
# One row in 100 gets one of these as its coupon: each holds the delimiter, so it must be
# quoted; the last holds quotes as well, written doubled.
COMMA_COUPONS = ("SALE,2024", "Smith, John", "10% off, first order", 'the "BIG" sale, 2024')
QUOTED_EVERY = 100

CONTACTS_HEADER = (
    "identifier,email,firstName,lastName,phone,language,age,lifetimeValue,unsubscribed\n"
)
FIRST_NAMES = ("Ada", "Grace", "Alan", "Zoë", "José", "Linus", "Margaret", "Dennis", "Chloé")
LAST_NAMES = ("Lovelace", "Hopper", "Turing", "Müller", "García", "Torvalds", "Ritchie", "")
# Reserved attributes (CSV rules §6.4) hold valid values or nothing: a reject would make the
# run store fewer rows than it read.
LANGUAGES = ("en", "fr", "nl", "de", "es", "")
UNSUBSCRIBED = ("false", "false", "false", "true", "FALSE", "")

# Quote-all writes each value between quotes as it stands: none may hold one itself.
assert not any('"' in v for v in (*EVENT_NAMES, *PLANS, *GIFTS, *COUPONS))


def event_rows(rows: int, seed: int) -> Iterator[list[list[str]]]:
    """The rows of the new-ids shape as lists of cells, in batches of gen_events.BATCH."""
    rng = random.Random(seed)
    # Local names: this loop runs millions of times, attribute look-ups are a third of its cost.
    rand = rng.random
    bits = rng.getrandbits
    choice = rng.choice
    # Contact n is `customer.<tag>.<n>@…`: the random tag (kept, 4 bytes each) scatters new
    # contacts over the identifier index as real addresses would, instead of appending them.
    tags = array("I")
    for start in range(0, rows, BATCH):
        batch = []
        for _ in range(min(BATCH, rows - start)):
            if not tags or rand() < NEW_CONTACT:
                n = len(tags)
                tags.append(bits(32))
            else:
                n = int(rand() * len(tags))  # a repeat: any contact seen so far, alike
            contact = f"customer.{tags[n]:08x}.{n:07d}@customers.example.com"
            key, total = key_and_total(rand, bits)
            batch.append(
                [
                    contact,
                    choice(EVENT_NAMES),
                    str(1_600_000_000 + int(rand() * 200_000_000)),
                    key,
                    choice(PLANS),
                    total,
                    str(bits(4)),
                    choice(GIFTS),
                    choice(COUPONS),
                ]
            )
        yield batch


def contact_rows(rows: int, seed: int) -> Iterator[list[list[str]]]:
    """Distinct contacts, one per row, in batches of gen_events.BATCH."""
    rng = random.Random(seed)
    rand = rng.random
    bits = rng.getrandbits
    choice = rng.choice
    for start in range(0, rows, BATCH):
        batch = []
        for n in range(start, min(start + BATCH, rows)):
            first, last = choice(FIRST_NAMES), choice(LAST_NAMES)
            r = rand()
            email = f"{first.lower()}.{n}@mail.example.org" if r < 0.9 else ""
            # Belgian mobile numbers as E.164 without the plus: a string, never typed.
            phone = f"3247{bits(24):08d}" if r < 0.6 else ""
            age = str(18 + bits(6)) if rand() < 0.85 else ""
            r = rand()
            value = f"{r * 2000:.2f}" if r < 0.7 else ("0" if r < 0.9 else "")
            batch.append(
                [
                    f"customer.{bits(32):08x}.{n:07d}@customers.example.com",
                    email,
                    first,
                    last,
                    phone,
                    choice(LANGUAGES),
                    age,
                    value,
                    choice(UNSUBSCRIBED),
                ]
            )
        yield batch


def plain(cells: list[str]) -> str:
    return ",".join(cells) + "\n"


def quote_all(cells: list[str]) -> str:
    return '"' + '","'.join(cells) + '"\r\n'  # (cells hold no quote: asserted above)


def with_comma_coupons(batches: Iterator[list[list[str]]]) -> Iterator[list[list[str]]]:
    """new-ids's rows, one in QUOTED_EVERY with a coupon that must be quoted."""
    row = 0
    for batch in batches:
        for cells in batch:
            if row % QUOTED_EVERY == QUOTED_EVERY // 2:
                coupon = COMMA_COUPONS[row // QUOTED_EVERY % len(COMMA_COUPONS)]
                cells[-1] = '"{}"'.format(coupon.replace('"', '""'))
            row += 1
        yield batch


def generate(shape: str, rows: int, out: Path, seed: int = 42) -> None:
    """Write `rows` rows of `shape` to `out` atomically (a partial file is never left there)."""
    header = HEADER
    line: Callable[[list[str]], str] = plain
    if shape == "contacts":
        header, batches = CONTACTS_HEADER, contact_rows(rows, seed)
    elif shape == "new-ids":
        batches = event_rows(rows, seed)
    elif shape == "quoted-1pct":
        batches = with_comma_coupons(event_rows(rows, seed))
    elif shape == "all-quoted-crlf":
        header = quote_all(HEADER.rstrip("\n").split(","))
        batches, line = event_rows(rows, seed), quote_all
    else:
        raise ValueError(f"unknown shape {shape!r}")
    tmp = out.with_name(out.name + ".part")
    out.parent.mkdir(parents=True, exist_ok=True)
    # newline="": the line ends are written as given, CRLF included, on every platform.
    with tmp.open("w", encoding="utf-8", newline="") as f:
        f.write(header)
        for batch in batches:
            f.write("".join(map(line, batch)))
    os.replace(tmp, out)


SHAPES = ("new-ids", "quoted-1pct", "all-quoted-crlf", "contacts")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shape", choices=SHAPES)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    generate(args.shape, args.rows, args.out, args.seed)
    size_mb = args.out.stat().st_size / 1e6
    elapsed = time.perf_counter() - started
    print(
        f"wrote {args.rows:,} {args.shape} rows, {size_mb:.1f} MB to {args.out} in {elapsed:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
