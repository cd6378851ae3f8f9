"""Parsing a file in a child process, so that the CSV rules (Python, one core) and the
store's writer (the other core) work at the same time on large files.

The child is a plain ``python -m connector.parsing`` given its job on stdin and two open
files: the CSV file and a spool. No fork of a process that may hold scheduler threads, and
it imports only the CSV rules. Batches (built to cross cheaply: columns of joined text) are
pickled into the spool and announced on stdout by offset and length, so the child never
waits for the parent to read: it can run ahead — through a file that is still downloading,
say — while the batches wait in the page cache, not in either process's memory. The spool
is a temporary file without a name: a crash leaves nothing behind.

The child dies with its parent, whatever it is doing: on Linux the kernel kills it
(``PR_SET_PDEATHSIG``); everywhere, a thread of its own waits for its stdin, which the
parent holds open, to end. It runs in a process group of its own: a Ctrl-C or a SIGTERM
sent to the parent's group is the parent's to handle (it commits, then stops the child),
while a signal sent to the child itself ends it. If the child dies, the parent sees the
pipe end without a final message and fails the file (it is retried, resuming).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from connector.csvrules.reader import ScannedFile
from connector.csvrules.records import Batch, FileParser
from connector.csvrules.rules import FileRules, Limits
from connector.errors import FileRejected, ParseFailed

# Below this a child process costs more (about 0.1 s to start) than it saves.
PARALLEL_MIN_BYTES = 8 << 20
_FRAME = struct.Struct("<Q")
_PUNCH_HOLE = 0x02 | 0x01  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE (Linux)


@functools.cache
def _fallocate() -> Any:
    """libc's fallocate(2) where it takes 64-bit offsets (64-bit Linux), else None; loaded
    at its first use."""
    if not sys.platform.startswith("linux") or sys.maxsize < 2**32:
        return None
    function = getattr(ctypes.CDLL(None, use_errno=True), "fallocate", None)
    if function is not None:
        function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    return function


def _release(fd: int, offset: int, length: int) -> None:
    """Give back the disk (and page cache) of a spool range already read, so that the spool
    holds the batches not yet read, not the whole file's. Where the system cannot (another
    OS, a file system without holes), the spool keeps its blocks until it is closed."""
    fallocate = _fallocate()
    if fallocate is not None:
        fallocate(fd, _PUNCH_HOLE, offset, length)


@dataclass(frozen=True)
class _Job:
    rules: FileRules
    size: int  # the bytes to parse
    growing: bool  # the file is still being written up to `size`: wait for the rest
    skip: int  # records to skip (a resumed file)
    batch_records: int
    source_fd: int
    spool_fd: int
    parent: int  # our pid: the child waits for a download only while we live
    limits: Limits


class ParseJob:
    """The batches of one file, parsed here or in a child. A context manager: entering it
    opens the file (and starts the child); leaving it stops the child if still running."""

    def __init__(
        self,
        path: Path,
        rules: FileRules,
        *,
        batch_records: int,
        in_child: bool,
        spool_dir: Path | None,
        growing_to: int | None = None,
        limits: Limits | None = None,
    ) -> None:
        """``growing_to``: the file is still being written and will hold this many bytes
        (a download in progress): the parser follows it."""
        self.path = path
        self._rules = rules
        self._limits = limits or Limits()
        self._batch_records = batch_records
        self._in_child = in_child
        self._spool_dir = spool_dir
        self._growing_to = growing_to
        self._skip = 0
        self._fd: int | None = None
        self._child: subprocess.Popen[bytes] | None = None
        self._spool: IO[bytes] | None = None
        self._local: FileParser | None = None
        self._raw: ScannedFile | None = None
        self._read = 0  # bytes of the file the child had read when it made its last batch
        # abandon() comes from another thread: no child may start after it.
        self._abandoning = threading.Lock()
        self._abandoned = False

    def __enter__(self) -> ParseJob:
        if self._fd is None:  # entered once, however many owners pass it on
            self._fd = os.open(self.path, os.O_RDONLY)
            try:
                if self._in_child:
                    self._spawn()
            except BaseException:
                self.close()
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _size(self) -> int:
        assert self._fd is not None
        return self._growing_to if self._growing_to is not None else os.fstat(self._fd).st_size

    def _spawn(self) -> None:
        assert self._fd is not None
        # Closed in _stop: the spool lives as long as its child.
        self._spool = tempfile.TemporaryFile(dir=self._spool_dir)  # noqa: SIM115
        job = _Job(
            self._rules,
            self._size,
            self._growing_to is not None,
            self._skip,
            self._batch_records,
            self._fd,
            self._spool.fileno(),
            os.getpid(),
            self._limits,
        )
        with self._abandoning:
            if self._abandoned:
                raise ParseFailed(f"the parse of {self.path} was abandoned")
            # Linux signals a child when the *thread* that started it ends: every owner
            # of a ParseJob keeps its thread alive until the job is closed.
            self._child = subprocess.Popen(
                [sys.executable, "-m", "connector.parsing", str(job.parent)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                bufsize=0,  # unbuffered: `idle` asks the pipe itself whether a message waits
                pass_fds=(job.source_fd, job.spool_fd),
                process_group=0,  # group signals are ours to relay, in order
            )
        assert self._child.stdin is not None
        try:  # stdin stays open: its end tells the child we are gone (closed in _stop)
            stdin, data = self._child.stdin, memoryview(pickle.dumps(job))
            while data:  # (unbuffered: a write may take part of it)
                data = data[stdin.write(data) or 0 :]
        except BrokenPipeError:
            if self._abandoned:  # killed by abandon() as it started
                raise ParseFailed(f"the parse of {self.path} was abandoned") from None
            raise

    def resume_at(self, skip: int) -> None:
        """Start after ``skip`` records (a resumed file); call before ``header``."""
        if skip == self._skip:
            return
        self._stop()
        self._skip = skip
        if self._in_child:
            self._spawn()

    def header(self) -> None:
        """Wait for the header to be read; FileRejected if the file is refused whole."""
        if self._child is None:
            assert self._fd is not None
            growing = self._growing_to is not None
            self._raw = ScannedFile(self._fd, self._size, growing=growing)
            self._local = FileParser(self._raw, self._rules, self._limits)
            return
        message = self._receive()
        if message[0] == "rejected":
            raise FileRejected(message[1])

    def batches(self) -> Iterator[Batch]:
        if self._local is not None:
            yield from self._local.batches(self._batch_records, self._skip)
            return
        while (message := self._receive())[0] == "batch":
            self._read = message[3]
            yield self._read_batch(*message[1:3])  # (nothing of it held here meanwhile)

    @property
    def consumed(self) -> int:
        """The bytes of the file the parse has read by its last batch (a block ahead of that
        batch's records at most): how far through the file it is."""
        return self._raw.scan.size if self._raw is not None else self._read

    def _read_batch(self, offset: int, length: int) -> Batch:
        assert self._spool is not None
        data = os.pread(self._spool.fileno(), length, offset)
        _release(self._spool.fileno(), offset, length)
        batch: Batch = pickle.loads(data)
        return batch

    def abandon(self) -> None:
        """From another thread: the bytes being followed will not all come (the download
        failed), so stop the child, and any started later; its reader sees it end."""
        with self._abandoning:
            self._abandoned = True
            if self._child is not None:
                self._child.kill()

    def idle(self, seconds: float) -> bool:
        """Whether the next batch is still not announced after ``seconds`` (a parse waiting
        for a download, say): a writer commits rather than hold the store meanwhile."""
        if self._child is None:
            return False
        assert self._child.stdout is not None
        readable, _, _ = select.select([self._child.stdout], [], [], seconds)
        return not readable

    def _receive(self) -> tuple[Any, ...]:
        assert self._child is not None
        assert self._child.stdout is not None
        pipe = self._child.stdout
        head = _read_exactly(pipe, _FRAME.size)
        if len(head) < _FRAME.size:
            code = self._child.wait()
            raise ParseFailed(f"the parser process of {self.path} died (exit {code})")
        message: tuple[Any, ...] = pickle.loads(_read_exactly(pipe, _FRAME.unpack(head)[0]))
        if message[0] == "error":
            raise ParseFailed(f"parsing {self.path} failed: {message[1]}")
        return message

    def _stop(self) -> None:
        if self._raw is not None:
            self._raw.close()
            self._raw = self._local = None
        with self._abandoning:  # (abandon() may be looking at it from another thread)
            child, self._child = self._child, None
        if child is not None:
            if child.poll() is None:
                child.kill()
            assert child.stdin is not None and child.stdout is not None
            with contextlib.suppress(BrokenPipeError):  # (flushes nothing: unbuffered)
                child.stdin.close()
            child.stdout.close()
            child.wait()
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    def close(self) -> None:
        self._stop()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _read_exactly(pipe: IO[bytes], size: int) -> bytes:
    """``size`` bytes from an unbuffered pipe (fewer only at its end)."""
    data = b""
    while len(data) < size and (piece := pipe.read(size - len(data))):
        data += piece
    return data


def _serve(job: _Job, out: IO[bytes]) -> None:
    def announce(*message: object) -> None:
        data = pickle.dumps(message)
        out.write(_FRAME.pack(len(data)) + data)
        out.flush()

    try:
        raw = ScannedFile(
            job.source_fd, job.size, growing=job.growing, alive=lambda: os.getppid() == job.parent
        )
        try:
            parser = FileParser(raw, job.rules, job.limits)
        except FileRejected as exc:
            announce("rejected", exc.reason)
            return
        announce("ready")
        offset = 0
        for batch in parser.batches(job.batch_records, job.skip):
            data = memoryview(pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL))
            written = 0
            while written < len(data):
                written += os.write(job.spool_fd, data[written:])
            announce("batch", offset, len(data), raw.scan.size)
            offset += len(data)
            del batch, data  # (not kept while the next one is made)
        announce("done")
    except BrokenPipeError:
        pass  # the parent is gone: nobody to tell
    except Exception as exc:  # reported to the parent, which fails the file
        with contextlib.suppress(BrokenPipeError):  # unless it is gone too
            announce("error", f"{type(exc).__name__}: {exc}")


_PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> None:
    """End this process as soon as ``parent`` (the pid that started it) is gone, whatever
    it is doing meanwhile: a busy parse checks nothing."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent:  # it died before the line above: the kernel will not tell
        os._exit(0)


def _exit_at_end(fd: int) -> None:
    """In a thread of its own (blocked in read, it needs no time of the busy one): the
    parent holds our stdin open as long as it lives, so its end is the parent's. (Read
    from the descriptor: a buffered stream's lock, held here, would stall the exit.)"""
    while os.read(fd, 1 << 10):
        pass
    os._exit(0)


if __name__ == "__main__":
    # A signal sent to this process itself ends it, SIGINT too (quietly); the group's
    # Ctrl-C or SIGTERM never reaches it (see ParseJob._spawn).
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    _die_with(int(sys.argv[1]))
    try:
        job = pickle.load(sys.stdin.buffer)
    except EOFError:  # the parent went before it gave the job
        os._exit(0)
    threading.Thread(target=_exit_at_end, args=(sys.stdin.fileno(),), daemon=True).start()
    _serve(job, sys.stdout.buffer)
