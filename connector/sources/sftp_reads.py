"""SFTP downloads and listings, pipelined on the caller's thread.

Listings keep several READDIRs in flight (``list_folder``): a server answers each with a
few dozen names (16 for paramiko's own server, about 100 for OpenSSH's), so a folder of
10,000 files is hundreds of round trips, which paramiko's ``listdir_attr`` makes one by one.
Requests on one handle are answered in order (draft-ietf-secsh-filexfer-02, 3).

Downloads are pipelined by hand (``download``): up to ``_WINDOW`` READ requests are in
flight, sent in batches of ``_BATCH`` per SSH packet, and the replies are read on the
caller's thread. paramiko's own ``prefetch()`` (which ``getfo`` and ``readv`` use) is
fast too, but issues its requests from a background thread, which dies with an unhandled
EOFError when the connection drops (paramiko #2379), and now and then falls back to one
request per round trip for a whole file (measured: ~1 MB/s instead of ~100). This costs a few
private names of ``SFTPClient`` (``_lock``, ``request_number``, ``_expecting``,
``_request``, ``_read_response``), unchanged since paramiko 1.x and exercised by every
read test; see ``bench/sftp_bench.py`` for the measurements.
"""

# paramiko ships no type information: its names are Any to mypy.
# mypy: disable-error-code="import-untyped"

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Generator
from typing import Any

import paramiko
from paramiko.sftp import (
    CMD_CLOSE,
    CMD_DATA,
    CMD_HANDLE,
    CMD_NAME,
    CMD_OPEN,
    CMD_OPENDIR,
    CMD_READ,
    CMD_READDIR,
    CMD_STATUS,
    SFTP_EOF,
    SFTP_FLAG_READ,
    SFTP_NO_SUCH_FILE,
    SFTP_PERMISSION_DENIED,
)

from connector.sources.base import CHUNK

_REQUEST = 32 * 1024  # bytes per READ: the most every server answers in full (paramiko's cap)
_WINDOW = 128  # READs in flight (4 MiB): enough to keep a server busy; bounds our memory
_BATCH = 32  # READs per SSH packet: fewer packets, less CPU on both ends (measured)
_DIR_WINDOW = 8  # READDIRs in flight: replies are parsed while the server makes the next


def open_for_read(sftp: Any, path: str) -> bytes:
    """OPEN by hand rather than sftp.open(): SFTPFile.close() swallows socket errors, a
    timeout included, which would leave half a reply in the channel unnoticed."""
    kind, msg = sftp._request(CMD_OPEN, path, SFTP_FLAG_READ, paramiko.SFTPAttributes())
    if kind != CMD_HANDLE:
        raise paramiko.SFTPError("expected a handle")
    handle: bytes = msg.get_binary()
    return handle


def close_handle(sftp: Any, handle: bytes) -> None:
    sftp._request(CMD_CLOSE, handle)


class _Replies:
    """Collects the replies to our READs. SFTPClient hands each reply to the object it has
    registered for the request number, through a weak reference: once a download is
    abandoned and this object is gone, late replies are dropped."""

    def __init__(self) -> None:
        self.got: dict[int, tuple[int, Any]] = {}

    def _async_response(self, kind: int, msg: Any, num: int) -> None:
        self.got[num] = (kind, msg)


def _send(sftp: Any, replies: _Replies, command: int, args: list[bytes]) -> list[int]:
    """Send one ``command`` request per item of ``args`` (its bytes after the request
    number) in one channel write; return their request numbers. SFTPClient._async_request
    would send one SSH packet per request."""
    packets = []
    sent = []
    with sftp._lock:  # request numbers are shared with SFTPClient's own requests
        for arg in args:
            num = sftp.request_number
            sftp.request_number += 1
            sftp._expecting[num] = replies
            body = struct.pack(">BI", command, num) + arg
            packets.append(struct.pack(">I", len(body)) + body)
            sent.append(num)
    sftp.sock.sendall(b"".join(packets))
    return sent


def _reply(sftp: Any, replies: _Replies, num: int) -> tuple[int, Any]:
    while num not in replies.got:
        sftp._read_response()  # one reply, to whichever request it answers
    return replies.got.pop(num)


def _binary(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def _send_reads(
    sftp: Any, replies: _Replies, handle: bytes, reads: list[tuple[int, int]]
) -> list[tuple[int, int, int]]:
    """READ requests for ``(offset, length)`` pairs: ``(request number, offset, length)``."""
    args = [_binary(handle) + struct.pack(">QI", offset, length) for offset, length in reads]
    numbers = _send(sftp, replies, CMD_READ, args)
    return [(num, offset, length) for num, (offset, length) in zip(numbers, reads, strict=True)]


def _status_error(code: int, text: str) -> OSError:
    """The exception paramiko raises for an SFTP error status."""
    kinds = {SFTP_NO_SUCH_FILE: FileNotFoundError, SFTP_PERMISSION_DENIED: PermissionError}
    return kinds.get(code, OSError)(text)


def _name(msg: Any) -> str:
    """A file name from a reply. Names are bytes to SFTP v3; paramiko decodes them as strict
    UTF-8, so that one name in Latin-1 would fail the whole listing. surrogateescape keeps
    it as it came (as Python decodes local names), for naming.hostile to refuse."""
    name: str = msg.get_binary().decode("utf-8", "surrogateescape")
    return name


def _text(msg: Any) -> str:
    """Text for people (a status message, a long listing line): a byte that is not UTF-8
    is replaced."""
    text: str = msg.get_binary().decode("utf-8", "replace")
    return text


def list_folder(sftp: Any, path: str) -> list[Any]:
    """The entries of a folder but ``.`` and ``..``, as paramiko's SFTPAttributes (with
    ``filename``, decoded as ``_name`` says), with READDIRs pipelined."""
    kind, msg = sftp._request(CMD_OPENDIR, path)
    if kind != CMD_HANDLE:
        raise paramiko.SFTPError("expected a handle")
    handle = msg.get_binary()
    replies = _Replies()
    pending = deque(_send(sftp, replies, CMD_READDIR, [_binary(handle)] * _DIR_WINDOW))
    entries = []
    try:
        while pending:
            kind, msg = _reply(sftp, replies, pending.popleft())
            if kind == CMD_STATUS:
                code = msg.get_int()
                if code == SFTP_EOF:
                    break
                raise _status_error(code, _text(msg))
            if kind != CMD_NAME:
                raise paramiko.SFTPError(f"unexpected reply {kind} to a READDIR")
            for _ in range(msg.get_int()):
                name, long_name = _name(msg), _text(msg)
                if name not in (".", ".."):
                    entries.append(paramiko.SFTPAttributes._from_msg(msg, name, long_name))
                else:
                    paramiko.SFTPAttributes._from_msg(msg)  # read past its attributes
            pending.extend(_send(sftp, replies, CMD_READDIR, [_binary(handle)]))
    finally:
        # The READDIRs still in flight (past the end, or after an error) are answered
        # before the handle is closed, so that the session stays in step and the server
        # keeps no open handle. (A broken connection raises here again: the session goes.)
        for num in pending:
            _reply(sftp, replies, num)
        close_handle(sftp, handle)
    return entries


def download(sftp: Any, handle: bytes, offset: int, size: int) -> Generator[bytes, None, None]:
    """The bytes of an open file from ``offset`` to EOF, with READs pipelined.

    Replies are used in file order. A short reply (allowed by the protocol) is followed by
    a READ for the rest, ahead of the queue; past ``size``, one READ at a time looks for
    EOF. Up to CHUNK bytes are gathered per yield."""
    replies = _Replies()
    pending: deque[tuple[int, int, int]] = deque()
    asked = offset  # where the next READ starts
    gathered: list[bytes] = []
    gathered_size = 0
    while True:
        if len(pending) <= _WINDOW - _BATCH:
            reads: list[tuple[int, int]] = []
            while len(pending) + len(reads) < _WINDOW and asked < size:
                length = min(_REQUEST, size - asked)
                reads.append((asked, length))
                asked += length
            if not pending and not reads:
                reads.append((asked, _REQUEST))
                asked += _REQUEST
            if reads:
                pending.extend(_send_reads(sftp, replies, handle, reads))
        num, at, length = pending.popleft()
        kind, msg = _reply(sftp, replies, num)
        if kind == CMD_STATUS:
            code, text = msg.get_int(), _text(msg)
            if code == SFTP_EOF:
                break
            raise OSError(f"server error: {text}")
        if kind != CMD_DATA:
            raise paramiko.SFTPError(f"unexpected reply {kind} to a READ")
        data: bytes = msg.get_string()
        if len(data) > length:
            raise paramiko.SFTPError(f"server sent {len(data)} bytes for a READ of {length}")
        if not data:
            break
        if len(data) < length:
            pending.extendleft(
                _send_reads(sftp, replies, handle, [(at + len(data), length - len(data))])
            )
        gathered.append(data)
        gathered_size += len(data)
        if gathered_size >= CHUNK:
            yield b"".join(gathered)
            gathered, gathered_size = [], 0
    if gathered:
        yield b"".join(gathered)
