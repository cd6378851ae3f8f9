"""SFTPSource.read against paramiko's prefetching getfo, over loopback.

    python bench/sftp_bench.py [--size-mb 200] [--rounds 5] [--server child|inprocess|both]

Both sides download the same file from the same EmbeddedSFTPServer and hash it with SHA-256
as the bytes arrive: SFTPSource.read (hand-pipelined READs, what the downloader uses)
against ``SFTPClient.getfo`` with paramiko's defaults (prefetch on, every READ sent up front
by a background thread). Connecting and logging in are included on both sides.

The server runs in a child process (``child``: its Python does not share a GIL with the
client being measured, as with a real server) or in this process (``inprocess``: client and
server threads then compete for one GIL, which mostly measures CPU per byte). Rounds
alternate; best and median are reported. getfo now and then drops to one READ per round
trip for a whole file (its prefetch sees no request in flight for an instant and stops);
such rounds are counted, and they weigh on its median, not on its best.
"""

# paramiko ships no type information.
# mypy: disable-error-code="import-untyped"

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

import paramiko

from connector import logs
from connector.config import SourceConfig
from connector.sources.sftp import SFTPSource
from connector.testing import EmbeddedSFTPServer

NAME = "big.csv"
Served = tuple[str, int, str, str, str]  # host, port, user, password, known_hosts line


def _serve(root: str, pipe: Connection) -> None:
    with EmbeddedSFTPServer(Path(root)) as server:
        pipe.send(_served(server))
        pipe.recv()  # until the parent is done


def _served(server: EmbeddedSFTPServer) -> Served:
    return server.host, server.port, server.user, server.password, server.known_hosts_line()


def _with_source(served: Served, known_hosts: Path) -> str:
    host, port, user, password, line = served
    known_hosts.write_text(line + "\n")
    config = SourceConfig.model_validate(
        {
            "name": "bench",
            "url": f"sftp://{user}@{host}:{port}/",
            "known_hosts": known_hosts,
            "files": [{"kind": "events", "pattern": "*"}],
        }
    )
    digest = hashlib.sha256()
    with SFTPSource(config, password) as source:
        for chunk in source.read(NAME):
            digest.update(chunk)
    return digest.hexdigest()


class _Hasher:
    def __init__(self) -> None:
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return len(data)


def _with_getfo(served: Served, known_hosts: Path) -> str:
    host, port, user, password, _ = served
    transport = paramiko.Transport(socket.create_connection((host, port), timeout=30))
    try:
        transport.start_client(timeout=30)
        # (The host key is not checked here: this side is the yardstick, not the product.)
        transport.auth_password(user, password)
        sftp = paramiko.SFTPClient.from_transport(transport)
        hasher = _Hasher()
        sftp.getfo(NAME, hasher)  # prefetch=True: paramiko's fast path
        sftp.close()
    finally:
        transport.close()
    return hasher.digest.hexdigest()


Download = Callable[[Served, Path], str]


def _rate(download: Download, served: Served, known_hosts: Path, size: int, sha: str) -> float:
    started = time.perf_counter()
    if download(served, known_hosts) != sha:
        sys.exit(f"{download.__name__}: wrong sha256")
    return size / (time.perf_counter() - started) / 1e6


def _report(label: str, ours: list[float], raw: list[float]) -> None:
    print(f"{label}: SFTPSource.read {' '.join(f'{r:.0f}' for r in ours)} MB/s")
    print(f"{label}: getfo           {' '.join(f'{r:.0f}' for r in raw)} MB/s")
    for how, pick in (("best", max), ("median", statistics.median)):
        print(
            f"{label} {how:>6}: SFTPSource.read {pick(ours):5.0f} MB/s, "
            f"getfo {pick(raw):5.0f} MB/s, ratio {pick(ours) / pick(raw):.2f}x"
        )
    collapsed = sum(r < max(raw) / 10 for r in raw)
    if collapsed:
        print(f"{label}: getfo collapsed to one READ per round trip in {collapsed} round(s)")


def _rounds(
    served: Served, work: Path, rounds: int, size: int, sha: str
) -> tuple[list[float], list[float]]:
    ours: list[float] = []
    raw: list[float] = []
    for _ in range(rounds):
        ours.append(_rate(_with_source, served, work / "known_hosts", size, sha))
        raw.append(_rate(_with_getfo, served, work / "known_hosts", size, sha))
    return ours, raw


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--server", choices=("child", "inprocess", "both"), default="both")
    args = parser.parse_args()
    logs.configure("warning")
    size = args.size_mb * 1_000_000
    with tempfile.TemporaryDirectory(prefix="sftp-bench-") as tmp:
        root, work = Path(tmp) / "root", Path(tmp)
        root.mkdir()
        data = os.urandom(size)
        (root / NAME).write_bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        del data
        print(f"{args.size_mb} MB over loopback, {args.rounds} rounds each, sha256 on the fly")
        if args.server in ("child", "both"):
            context = multiprocessing.get_context("spawn")  # no fork of a threaded process
            parent, child = context.Pipe()
            process = context.Process(target=_serve, args=(str(root), child), daemon=True)
            process.start()
            try:
                served = parent.recv()
                _report("server in a child process", *_rounds(served, work, args.rounds, size, sha))
            finally:
                parent.send("stop")
                process.join(10)
        if args.server in ("inprocess", "both"):
            with EmbeddedSFTPServer(root) as server:
                served = _served(server)
                _report("server in this process", *_rounds(served, work, args.rounds, size, sha))


if __name__ == "__main__":
    main()
