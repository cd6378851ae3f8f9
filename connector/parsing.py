"""Parsing a file in a child process, so that the CSV rules (Python, one core) and SQLite
(the other core) work at the same time on large files.

Batches cross the pipe pickled; they are built for it (columns of joined text). The child
is a plain ``python -m connector.parsing`` reading its job from stdin: no fork of a process
that may hold scheduler threads, and it imports only the CSV rules. If the parent dies, the
child's next write fails on the closed pipe and it exits; if the child dies, the parent sees
the pipe end without a final message and fails the file (it is retried, resuming).
"""

from __future__ import annotations

import pickle
import signal
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from connector.csvrules.reader import ByteScan, scan_file
from connector.csvrules.records import Batch, FileParser
from connector.csvrules.rules import FileRules
from connector.errors import FatalError, FileRejected

# Below this a child process costs more (about 0.1 s to start) than it saves.
PARALLEL_MIN_BYTES = 8 << 20
_FRAME = struct.Struct("<Q")


@dataclass(frozen=True)
class _Job:
    path: Path
    rules: FileRules
    skip: int
    batch_records: int


class ParseJob:
    """The batches of one file, parsed here or in a child. A context manager: leaving it
    stops the child if it is still running."""

    def __init__(
        self,
        path: Path,
        rules: FileRules,
        *,
        batch_records: int,
        in_child: bool,
        scan: ByteScan | None = None,
    ) -> None:
        self._job = _Job(path, rules, 0, batch_records)
        self._in_child = in_child
        self._scan = scan
        self._child: subprocess.Popen[bytes] | None = None
        self._local: FileParser | None = None
        self._raw: IO[bytes] | None = None

    def __enter__(self) -> ParseJob:
        if self._in_child:
            self._spawn()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _spawn(self) -> None:
        child = subprocess.Popen(
            [sys.executable, "-m", "connector.parsing"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert child.stdin is not None
        with child.stdin:
            child.stdin.write(pickle.dumps(self._job))
        self._child = child

    def resume_at(self, skip: int) -> None:
        """Start after ``skip`` records (a resumed file); call before ``header``."""
        if skip == self._job.skip:
            return
        self.close()
        self._job = _Job(self._job.path, self._job.rules, skip, self._job.batch_records)
        if self._in_child:
            self._spawn()

    def header(self) -> None:
        """Wait for the header to be read; FileRejected if the file is refused whole."""
        if self._child is None:
            self._raw = self._job.path.open("rb")
            self._local = FileParser(self._raw, self._job.rules, self._scan)
            return
        message = self._receive()
        if message[0] == "rejected":
            raise FileRejected(message[1])

    def batches(self) -> Iterator[Batch]:
        if self._local is not None:
            yield from self._local.batches(self._job.batch_records, self._job.skip)
            return
        while (message := self._receive())[0] == "batch":
            yield message[1]

    def _receive(self) -> tuple[Any, ...]:
        assert self._child is not None
        assert self._child.stdout is not None
        pipe = self._child.stdout
        head = pipe.read(_FRAME.size)
        if len(head) < _FRAME.size:
            code = self._child.wait()
            raise FatalError(f"the parser process of {self._job.path} died (exit {code})")
        message: tuple[Any, ...] = pickle.loads(pipe.read(_FRAME.unpack(head)[0]))
        if message[0] == "error":
            raise FatalError(f"parsing {self._job.path} failed: {message[1]}")
        return message

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()
            self._raw = self._local = None
        if self._child is not None:
            if self._child.poll() is None:
                self._child.kill()
            assert self._child.stdout is not None
            self._child.stdout.close()
            self._child.wait()
            self._child = None


def _serve(job: _Job, out: IO[bytes]) -> None:
    def send(*message: object) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        out.write(_FRAME.pack(len(data)))
        out.write(data)
        out.flush()

    try:
        scan = scan_file(job.path)
        with job.path.open("rb") as raw:
            try:
                parser = FileParser(raw, job.rules, scan)
            except FileRejected as exc:
                send("rejected", exc.reason)
                return
            send("ready")
            for batch in parser.batches(job.batch_records, job.skip):
                send("batch", batch)
        send("done")
    except BrokenPipeError:
        pass  # the parent is gone: nobody to tell
    except Exception as exc:  # reported to the parent, which fails the file
        send("error", f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    # Stopping is the parent's call: Ctrl-C or a SIGTERM sent to the whole process group
    # must not kill the parser under a parent that is committing and shutting down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _serve(pickle.load(sys.stdin.buffer), sys.stdout.buffer)
