"""FTPSource.read against raw ftplib, over loopback, FTP and FTPS.

    python bench/ftp_bench.py [--size-mb 200] [--rounds 3]

Both sides download the same file from the same EmbeddedFTPServer and hash it with SHA-256
as the bytes arrive: FTPSource.read (what the downloader uses) against ftplib's
``retrbinary`` with 1 MiB blocks (stock FTP_TLS for FTPS, so against a server that does not
demand TLS session reuse). The server runs in a child process, so that its Python does not
share a GIL with the client being measured. Rounds alternate; the best and the median of
each are reported.
"""

from __future__ import annotations

import argparse
import ftplib
import hashlib
import multiprocessing
import os
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

from connector import logs
from connector.config import SourceConfig
from connector.sources.ftp import FTPSource
from connector.testing import EmbeddedFTPServer

NAME = "big.csv"
BLOCK = 1 << 20


def _serve(root: str, tls: bool, pipe: Connection) -> None:
    with EmbeddedFTPServer(Path(root), tls=tls) as server:
        pipe.send((server.url, server.password, str(server.ca_file) if tls else None))
        pipe.recv()  # until the parent is done


def _with_source(url: str, password: str, ca_file: str | None) -> str:
    config = SourceConfig.model_validate(
        {
            "name": "bench",
            "url": url,
            "allow_plaintext": True,
            "ca_file": ca_file,
            "files": [{"kind": "events", "pattern": "*"}],
        }
    )
    digest = hashlib.sha256()
    with FTPSource(config, password) as source:
        for chunk in source.read(NAME):
            digest.update(chunk)
    return digest.hexdigest()


def _with_ftplib(url: str, password: str, ca_file: str | None) -> str:
    host, port = url.split("@", 1)[1].rstrip("/").rsplit(":", 1)
    client: ftplib.FTP
    if ca_file is not None:
        client = ftplib.FTP_TLS(context=ssl.create_default_context(cafile=ca_file), timeout=30)
    else:
        client = ftplib.FTP(timeout=30)
    digest = hashlib.sha256()
    try:
        client.connect(host, int(port))
        client.login("ingest", password)
        if isinstance(client, ftplib.FTP_TLS):
            client.prot_p()
        client.retrbinary(f"RETR {NAME}", digest.update, blocksize=BLOCK)
        client.quit()
    finally:
        client.close()
    return digest.hexdigest()


Download = Callable[[str, str, str | None], str]


def _rate(download: Download, server: tuple[str, str, str | None], expected: str) -> float:
    """Seconds for one download, connection and login included."""
    started = time.perf_counter()
    if download(*server) != expected:
        sys.exit(f"{download.__name__}: wrong sha256")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    logs.configure("warning")  # not a line per connection
    size = args.size_mb * 1_000_000
    context = multiprocessing.get_context("spawn")  # no fork of a threaded process
    with tempfile.TemporaryDirectory(prefix="ftp-bench-") as root:
        data = os.urandom(size)
        (Path(root) / NAME).write_bytes(data)
        expected = hashlib.sha256(data).hexdigest()
        del data
        print(f"{args.size_mb} MB over loopback, {args.rounds} rounds each, sha256 on the fly")
        for tls in (False, True):
            parent, child = context.Pipe()
            server = context.Process(target=_serve, args=(root, tls, child), daemon=True)
            server.start()
            try:
                served = parent.recv()
                ours, raw = [], []
                for _ in range(args.rounds):
                    ours.append(size / _rate(_with_source, served, expected) / 1e6)
                    raw.append(size / _rate(_with_ftplib, served, expected) / 1e6)
            finally:
                parent.send("stop")
                server.join(10)
            label = "FTPS" if tls else "FTP "
            for how, pick in (("best", max), ("median", statistics.median)):
                print(
                    f"{label} {how:>6}: FTPSource.read {pick(ours):6.0f} MB/s, "
                    f"ftplib retrbinary {pick(raw):6.0f} MB/s, ratio {pick(ours) / pick(raw):.2f}x"
                )


if __name__ == "__main__":
    main()
