"""Write a deterministic events CSV for the import benchmark.

    python bench/gen_events.py --rows 1000000 --out bench/out/events.csv

The same --rows and --seed give the same bytes on every machine, so timings from different
runs compare the same work. Rows are written in batches, so memory stays flat at any --rows.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

HEADER = "identifier,name,timestamp,idempotencyKey,plan,total,quantity,gift,coupon\n"
CONTACTS = 100_000
EVENT_NAMES = ("purchase", "page_view", "add_to_cart", "signup", "newsletter_click")
# Weighted by repetition: mostly named plans, some empty cells (the property is then absent).
PLANS = ("free", "starter", "professional", "enterprise", "professional", "")
# Mixed on purpose: `true`/`false` in two letter cases are booleans, an empty cell is absent.
GIFTS = ("true", "false", "false", "TRUE", "False", "")
# `007` and `1e3` look numeric but stay strings under the typing rules; the rest are codes.
COUPONS = ("", "", "", "WELCOME10", "SPRING-SALE-2024", "FREESHIP", "007", "1e3", "VIP-GOLD")
BATCH = 10_000


def key_and_total(rand: Callable[[], float], bits: Callable[[int], int]) -> tuple[str, str]:
    """A row's idempotencyKey (on one row in three) and total, from the seeded RNG."""
    if rand() < 1 / 3:
        # uuid-shaped (8-4-4-4-12 hex) from the seeded RNG, so reruns are identical; 128
        # random bits make a collision in 5M rows vanishingly unlikely.
        h = f"{bits(128):032x}"
        key = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    else:
        key = ""
    r = rand()
    # Decimals mostly, whole numbers sometimes, empty now and then.
    total = f"{r * 500:.2f}" if r < 0.8 else (str(int(r * 100)) if r < 0.95 else "")
    return key, total


def generate(rows: int, out: Path, seed: int = 42) -> None:
    """Write `rows` events to `out` atomically (a partial file is never left under `out`)."""
    rng = random.Random(seed)
    # Local names: this loop runs a million times, attribute look-ups are a third of its cost.
    rand = rng.random
    bits = rng.getrandbits
    choice = rng.choice
    # The pool is built once from the seeded RNG: ~100k distinct contacts, ~40 chars each.
    contacts = [f"customer.{i:06d}.{bits(32):08x}@customers.example.com" for i in range(CONTACTS)]
    tmp = out.with_name(out.name + ".part")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tmp.open("w", encoding="utf-8", newline="") as f:
        f.write(HEADER)
        for start in range(0, rows, BATCH):
            lines = []
            for _ in range(min(BATCH, rows - start)):
                key, total = key_and_total(rand, bits)
                lines.append(
                    f"{choice(contacts)},{choice(EVENT_NAMES)},"
                    f"{1_600_000_000 + int(rand() * 200_000_000)},{key},{choice(PLANS)},{total},"
                    f"{bits(4)},{choice(GIFTS)},{choice(COUPONS)}\n"
                )
            f.write("".join(lines))
    os.replace(tmp, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    generate(args.rows, args.out, args.seed)
    size_mb = args.out.stat().st_size / 1e6
    elapsed = time.perf_counter() - started
    print(f"wrote {args.rows:,} rows, {size_mb:.1f} MB to {args.out} in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
