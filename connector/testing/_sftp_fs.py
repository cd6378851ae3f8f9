"""SFTP file operations on a root folder, which clients see as `/`.

The paramiko side of `EmbeddedSFTPServer`: an `SFTPServerInterface` whose
paths are mapped into the root (no name, `..` or symlink leads out of it)
and whose errors reach the client as the matching SFTP status codes.
"""

# paramiko ships no type information: its names are Any to mypy, and its
# server interfaces must still be subclassed.
# mypy: disable-error-code="import-untyped"
# mypy: disallow-subclassing-any=False

from __future__ import annotations

import errno
import functools
import os
import posixpath
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Concatenate, ParamSpec, Protocol, TypeVar

import paramiko

__all__ = ["RootedSFTP"]


class _HasRoot(Protocol):
    """The ServerInterface a session belongs to: it knows the root folder."""

    root: Path


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _sftp_errors(
    method: Callable[Concatenate[RootedSFTP, _P], _R],
) -> Callable[Concatenate[RootedSFTP, _P], _R | int]:
    """Answer an OSError with the matching SFTP status code.

    paramiko turns any other exception into a bare SSH_FX_FAILURE, which
    would hide "no such file" from the client.
    """

    @functools.wraps(method)
    def wrapper(self: RootedSFTP, /, *args: _P.args, **kwargs: _P.kwargs) -> _R | int:
        try:
            return method(self, *args, **kwargs)
        except OSError as error:
            return int(paramiko.SFTPServer.convert_errno(error.errno))

    return wrapper


class _Handle(paramiko.SFTPHandle):
    """An open file; paramiko's base class reads and writes at offsets."""

    def __init__(self, flags: int, path: Path, file: IO[bytes]) -> None:
        super().__init__(flags)
        self._path = path
        # The base class looks these two names up; one file serves both.
        self.readfile = file
        self.writefile = file

    def stat(self) -> Any:
        try:
            return paramiko.SFTPAttributes.from_stat(os.fstat(self.readfile.fileno()))
        except OSError as error:
            return paramiko.SFTPServer.convert_errno(error.errno)

    def chattr(self, attr: Any) -> int:
        try:
            paramiko.SFTPServer.set_file_attr(str(self._path), attr)
        except OSError as error:
            return int(paramiko.SFTPServer.convert_errno(error.errno))
        return int(paramiko.SFTP_OK)


class _Listed(paramiko.SFTPAttributes):
    """A folder entry named by the bytes on disk, as OpenSSH's server names it: paramiko
    would encode a str name as strict UTF-8, and fail on one that is not."""

    filename: bytes | str

    def asbytes(self) -> bytes:
        # The "long name" (an `ls -l` line) paramiko sends beside the name, ending in it.
        name = self.filename
        self.filename = ""
        try:
            line = str(self)
        finally:
            self.filename = name
        return line.encode() + os.fsencode(name)


class RootedSFTP(paramiko.SFTPServerInterface):
    """SFTP operations on the server's root folder, which clients see as `/`."""

    def __init__(self, server: _HasRoot, *args: Any, **kwargs: Any) -> None:
        super().__init__(server, *args, **kwargs)
        self._root = server.root

    def _real(self, path: str) -> Path:
        # normpath on an absolute path drops leading "..", so no name can
        # climb above "/"; resolve() then catches symlinks that lead out.
        virtual = posixpath.normpath("/" + path).lstrip("/")
        real = self._root / virtual
        if not real.resolve().is_relative_to(self._root):
            raise PermissionError(errno.EACCES, "outside the server root", virtual)
        return real

    def canonicalize(self, path: str) -> str:
        return "/" + posixpath.normpath("/" + path).lstrip("/")

    @_sftp_errors
    def open(self, path: str, flags: int, attr: Any) -> Any:
        real = self._real(path)
        fd = os.open(real, flags | getattr(os, "O_BINARY", 0), 0o644)
        if flags & os.O_CREAT and attr is not None:
            paramiko.SFTPServer.set_file_attr(str(real), attr)
        if flags & os.O_WRONLY:
            mode = "ab" if flags & os.O_APPEND else "wb"
        elif flags & os.O_RDWR:
            mode = "a+b" if flags & os.O_APPEND else "r+b"
        else:
            mode = "rb"
        return _Handle(flags, real, os.fdopen(fd, mode))

    @_sftp_errors
    def list_folder(self, path: str) -> Any:
        real = self._real(path)
        entries = []
        with os.scandir(real) as names:
            for entry in names:
                # lstat, as OpenSSH's sftp-server does for READDIR.
                stat = entry.stat(follow_symlinks=False)
                entries.append(_Listed.from_stat(stat, os.fsencode(entry.name)))
        return entries

    @_sftp_errors
    def stat(self, path: str) -> Any:
        return paramiko.SFTPAttributes.from_stat(os.stat(self._real(path)))

    @_sftp_errors
    def lstat(self, path: str) -> Any:
        return paramiko.SFTPAttributes.from_stat(os.lstat(self._real(path)))

    @_sftp_errors
    def remove(self, path: str) -> int:
        os.remove(self._real(path))
        return int(paramiko.SFTP_OK)

    @_sftp_errors
    def rename(self, oldpath: str, newpath: str) -> int:
        # SFTP v3 RENAME refuses to overwrite (OpenSSH's server too);
        # overwriting is what the posix-rename extension below is for.
        old, new = self._real(oldpath), self._real(newpath)
        if new.exists():
            return int(paramiko.SFTP_FAILURE)
        os.rename(old, new)
        return int(paramiko.SFTP_OK)

    @_sftp_errors
    def posix_rename(self, oldpath: str, newpath: str) -> int:
        os.replace(self._real(oldpath), self._real(newpath))
        return int(paramiko.SFTP_OK)

    @_sftp_errors
    def mkdir(self, path: str, attr: Any) -> int:
        real = self._real(path)
        os.mkdir(real)
        if attr is not None:
            paramiko.SFTPServer.set_file_attr(str(real), attr)
        return int(paramiko.SFTP_OK)

    @_sftp_errors
    def rmdir(self, path: str) -> int:
        os.rmdir(self._real(path))
        return int(paramiko.SFTP_OK)

    @_sftp_errors
    def chattr(self, path: str, attr: Any) -> int:
        paramiko.SFTPServer.set_file_attr(str(self._real(path)), attr)
        return int(paramiko.SFTP_OK)
