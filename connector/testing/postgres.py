"""A throwaway PostgreSQL server on loopback, in a temporary folder.

    with EmbeddedPostgres() as server:
        url = server.create_database()  # postgresql://postgres@127.0.0.1:PORT/test_...
        with psycopg.connect(url) as conn:
            conn.execute("SELECT 1")

Each instance runs its own cluster: `initdb` into a temporary folder, then
`pg_ctl start` with the server listening on 127.0.0.1 (a free port) and on a
Unix socket in that folder, `trust` authentication for the `postgres`
superuser, and durability traded for speed (`fsync=off`,
`full_page_writes=off`): a crash of the machine loses the data, which a test
never keeps anyway. A crash of PostgreSQL itself (`kill()`) still recovers,
as `synchronous_commit` stays on.

The server programs (`initdb`, `pg_ctl`, `postgres`) are found on `$PATH`,
then in `/usr/lib/postgresql/<highest version>/bin` (Debian and Ubuntu keep
them off `$PATH`), then in `/usr/local/pgsql/bin` (a source build). Without
them the constructor raises `PostgresUnavailable`.

PostgreSQL refuses to run as root. Run as root, the server programs run as
the `postgres` system user (or `nobody` without one), and the temporary folder
is handed to that user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import psycopg
from psycopg import sql

__all__ = ["EmbeddedPostgres", "PostgresUnavailable", "find_postgres_bin_dir"]

StopMode = Literal["smart", "fast", "immediate"]

_PROGRAMS = ("initdb", "pg_ctl", "postgres")
_DEBIAN_ROOT = Path("/usr/lib/postgresql")
_SOURCE_BUILD_BIN = Path("/usr/local/pgsql/bin")
_SUPERUSER = "postgres"
_SETTINGS = {
    # No waiting for the disk: the cluster lives as long as a test session.
    "fsync": "off",
    "full_page_writes": "off",
    # A test suite may hold many pools at once; the default is 100.
    "max_connections": "200",
    # Enough for tests; the default (128MB) is more than a CI runner may spare.
    "shared_buffers": "32MB",
}
_PORT_ATTEMPTS = 5
_PG_CTL_WAIT_SECONDS = 60
# subprocess' own limit, past pg_ctl's: a hung pg_ctl must not hang the tests.
_COMMAND_TIMEOUT_SECONDS = _PG_CTL_WAIT_SECONDS + 30
_KILL_WAIT_SECONDS = 10.0
_LOG_TAIL_LINES = 25
# sockaddr_un.sun_path holds 108 bytes with the final NUL; PostgreSQL refuses longer paths.
_MAX_SOCKET_PATH = 107
_PORT_IN_USE = re.compile(r"could not bind|could not create any TCP/IP sockets|already in use")


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server programs are not installed (or not found)."""


def find_postgres_bin_dir() -> Path:
    """The first folder holding `initdb`, `pg_ctl` and `postgres` together.

    Together, because `initdb` and `pg_ctl` run the `postgres` beside them
    (after following symbolic links) and refuse one of another version.
    """
    path_dirs = [Path(d) for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    candidates = [*path_dirs, *_debian_bin_dirs()[:1], _SOURCE_BUILD_BIN]
    for folder in candidates:
        if all(_is_executable(folder / name) for name in _PROGRAMS):
            return folder
    on_path = [name for name in _PROGRAMS if shutil.which(name)]
    found = f" (on $PATH: {', '.join(on_path)} only)" if on_path else ""
    raise PostgresUnavailable(
        "PostgreSQL server programs not found: no folder holds initdb, pg_ctl and postgres"
        f"{found}; looked on $PATH, in {_DEBIAN_ROOT}/<highest version>/bin and in"
        f" {_SOURCE_BUILD_BIN}. Install them (Debian/Ubuntu: `apt-get install postgresql`)"
        " or put their folder on $PATH."
    )


def _debian_bin_dirs() -> list[Path]:
    """Debian's per-version folders, highest version first (15 before 9.6)."""
    versions: list[tuple[tuple[int, ...], Path]] = []
    with contextlib.suppress(OSError):
        for entry in _DEBIAN_ROOT.iterdir():
            if re.fullmatch(r"\d+(\.\d+)*", entry.name):
                versions.append((tuple(int(p) for p in entry.name.split(".")), entry / "bin"))
    return [folder for _, folder in sorted(versions, reverse=True)]


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


@dataclass(frozen=True)
class _RunAs:
    """The unprivileged account the server programs run as, when we are root."""

    name: str
    uid: int
    gid: int


def _unprivileged_account() -> _RunAs | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return _RunAs(name, entry.pw_uid, entry.pw_gid)
    raise RuntimeError(
        "PostgreSQL refuses to run as root, and neither a `postgres` nor a `nobody`"
        " user exists to run it as"
    )


def _free_port(host: str) -> int:
    """A port free right now. Another program may take it before PostgreSQL binds
    it; `EmbeddedPostgres.start` then tries another."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _port_taken(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def _process_state(pid: int) -> str | None:
    """The state letter from /proc (`Z` for a zombie), `None` for no such process.

    Without /proc (not Linux), `?` for any process that exists.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return "?"
    # The command name, in parentheses, may itself hold spaces and parentheses.
    return stat[stat.rindex(")") + 2 :].split()[0]


def _alive(pid: int) -> bool:
    # A killed postmaster's parent may be slow to reap it (or never do so, in a
    # container whose first process reaps nothing); a zombie serves nobody.
    return _process_state(pid) not in (None, "Z")


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid`, by /proc (empty without /proc)."""
    children: list[int] = []
    with contextlib.suppress(OSError):
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text(encoding="ascii", errors="replace")
            except OSError:
                continue  # gone meanwhile
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                children.append(int(entry.name))
    return children


class _Cluster:
    """The folders and programs of one cluster: what cleanup needs, and no more.

    Kept apart from `EmbeddedPostgres` so that the interpreter-exit finalizer
    can hold it without keeping the server object alive.
    """

    def __init__(self, bin_dir: Path, workdir: Path, run_as: _RunAs | None) -> None:
        self.bin_dir = bin_dir
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.socket_dir = workdir / "socket"
        self.log_file = workdir / "postgres.log"
        self.run_as = run_as

    def run(self, program: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
        run_as = self.run_as
        return subprocess.run(
            [str(self.bin_dir / program), *map(str, args)],
            capture_output=True,
            text=True,
            errors="replace",
            check=False,
            # The unprivileged user may not enter our working folder (/root, say).
            cwd=self.workdir,
            timeout=_COMMAND_TIMEOUT_SECONDS,
            user=run_as.uid if run_as else None,
            group=run_as.gid if run_as else None,
            extra_groups=[] if run_as else None,  # and none of root's groups
        )

    def postmaster_pid(self) -> int | None:
        """The PID in postmaster.pid, live or not; `None` without the file."""
        try:
            first = (self.data_dir / "postmaster.pid").read_text(encoding="ascii").split("\n")[0]
            return int(first)
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        pid = self.postmaster_pid()
        return pid is not None and _alive(pid)

    def clear_stale_locks(self) -> None:
        """Remove the lock files a killed postmaster left (postmaster.pid, the socket's).

        PostgreSQL ignores a dead postmaster's lock files itself, but not a
        zombie's: its PID still answers kill(pid, 0) until its parent reaps it,
        which may take a while (or never happen, under a first process that
        reaps nothing).
        """
        for lock in [self.data_dir / "postmaster.pid", *self.socket_dir.glob(".s.PGSQL.*.lock")]:
            try:
                pid = int(lock.read_text(encoding="ascii").split("\n")[0])
            except (OSError, ValueError):
                continue
            if not _alive(pid):
                lock.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL the postmaster and every server process, and wait until they are gone."""
        pid = self.postmaster_pid()
        if pid is None or not _alive(pid):
            return
        # Frozen first, so that it forks no new child between the listing of its
        # children and its death; they must be listed before it dies, as orphans
        # have another parent.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
        victims = [pid, *_children(pid)]
        for victim in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + _KILL_WAIT_SECONDS
        while any(_alive(v) for v in victims):
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL processes {victims} outlived SIGKILL")
            time.sleep(0.01)

    def halt(self) -> None:
        """Stop the server at once, whatever state it is in: no server outlives this."""
        if not self.running():
            return
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            self.run("pg_ctl", "stop", "-D", self.data_dir, "-m", "immediate", "-w")
        # pg_ctl gives up on a server that is not answering signals; SIGKILL does not.
        self.kill()

    def log_tail(self, since: int = 0) -> str:
        try:
            with self.log_file.open("rb") as log:
                log.seek(since)
                text = log.read().decode("utf-8", errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-_LOG_TAIL_LINES:]) or "(server log empty)"

    def log_size(self) -> int:
        try:
            return self.log_file.stat().st_size
        except OSError:
            return 0


def _teardown(cluster: _Cluster) -> None:
    """Stop the server and remove the folder; also runs at interpreter exit if
    nobody closed the server (pg_ctl detaches it, so it would otherwise live on)."""
    try:
        cluster.halt()
    finally:
        shutil.rmtree(cluster.workdir, ignore_errors=True)


class EmbeddedPostgres:
    """A PostgreSQL cluster of its own on 127.0.0.1, removed on exit.

    Clients connect as `postgres` without a password (`url`, `url_for`), over
    TCP or through the Unix socket in `socket_dir`. `start()` after `stop()`
    or `kill()` brings the same cluster back on the same port, so a client can
    be tested across a restart or a crash.
    """

    def __init__(self, *, bin_dir: Path | None = None) -> None:
        # Before any folder exists: a missing installation leaves nothing behind.
        if bin_dir is None:
            bin_dir = find_postgres_bin_dir()
        elif not all(_is_executable(bin_dir / name) for name in _PROGRAMS):
            raise PostgresUnavailable(f"{bin_dir} does not hold {', '.join(_PROGRAMS)}")
        run_as = _unprivileged_account()
        workdir = Path(tempfile.mkdtemp(prefix="connector-pg-"))
        self._cluster = _Cluster(bin_dir, workdir, run_as)
        self._finalizer = weakref.finalize(self, _teardown, self._cluster)
        try:
            self._prepare_workdir()
        except BaseException:
            self._finalizer()
            raise
        self.host = "127.0.0.1"
        self.port = 0
        self._initialized = False

    # -- what a client needs ---------------------------------------------------

    @property
    def workdir(self) -> Path:
        """The temporary folder holding the data, the socket and the log."""
        return self._cluster.workdir

    @property
    def data_dir(self) -> Path:
        return self._cluster.data_dir

    @property
    def socket_dir(self) -> Path:
        """The Unix socket's folder: libpq's `host` for a socket connection."""
        return self._cluster.socket_dir

    @property
    def log_file(self) -> Path:
        return self._cluster.log_file

    @property
    def user(self) -> str:
        return _SUPERUSER

    @property
    def url(self) -> str:
        """The `postgres` maintenance database's URL."""
        return self.url_for("postgres")

    def url_for(self, dbname: str) -> str:
        return f"postgresql://{_SUPERUSER}@{self.host}:{self.port}/{quote(dbname, safe='')}"

    @property
    def running(self) -> bool:
        return self._cluster.running()

    @property
    def pid(self) -> int | None:
        """The postmaster's PID while it runs."""
        pid = self._cluster.postmaster_pid()
        return pid if pid is not None and _alive(pid) else None

    # -- databases -------------------------------------------------------------

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (a random name by default); return its URL.

        From template0, so nothing added to template1 leaks into it.
        """
        if name is None:
            name = f"test_{secrets.token_hex(6)}"
        self._admin(
            sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(
                sql.Identifier(name)
            )
        )
        return self.url_for(name)

    def terminate_connections(self, name: str) -> int:
        """Disconnect every client of database `name`; return how many there were."""
        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            row = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            ).fetchone()
        return int(row[0]) if row else 0

    def drop_database(self, name: str) -> None:
        """Drop database `name` (if it exists), disconnecting its clients first.

        Connections are refused before the clients are terminated, so that a
        client retrying its connection cannot get in between.
        """
        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if exists.fetchone() is None:
                return
            ident = sql.Identifier(name)
            conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(ident))
        self.terminate_connections(name)
        # DROP DATABASE waits up to 5 s for terminated backends to exit.
        self._admin(sql.SQL("DROP DATABASE IF EXISTS {}").format(ident))

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> EmbeddedPostgres:
        """Start the server (creating the cluster the first time); wait until it is ready.

        A no-op while it runs. Later starts reuse the data and the port.
        """
        if not self._finalizer.alive:
            raise RuntimeError("this EmbeddedPostgres is closed")
        if self.running:
            return self
        if not self._initialized:
            self._initdb()
            self._initialized = True
            self._start_on_free_port()
        else:
            self._start_on(self.port)
        return self

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop the server and wait; `fast` disconnects clients, `smart` waits for them,
        `immediate` skips the checkpoint (recovery at next start). A no-op when stopped."""
        if not self.running:
            return
        result = self._cluster.run(
            "pg_ctl", "stop", "-D", self.data_dir, "-m", mode, "-w", "-t", str(_PG_CTL_WAIT_SECONDS)
        )
        if result.returncode != 0 and self.running:
            raise RuntimeError(f"pg_ctl stop failed: {_output(result)}")

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """Crash the server: SIGKILL the postmaster and its server processes.

        Returns once they are gone; `start()` then runs crash recovery.
        """
        self._cluster.kill()

    def close(self) -> None:
        """Stop the server at once (`-m immediate`) and remove its folder."""
        self._finalizer()

    def __enter__(self) -> EmbeddedPostgres:
        try:
            return self.start()
        except BaseException:
            self.close()  # __exit__ will not run
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------

    def _prepare_workdir(self) -> None:
        cluster = self._cluster
        socket_path = cluster.socket_dir / ".s.PGSQL.65535"
        if len(os.fsencode(socket_path)) > _MAX_SOCKET_PATH:
            raise RuntimeError(
                f"{socket_path} is too long for a Unix socket; set TMPDIR to a shorter folder"
            )
        cluster.socket_dir.mkdir(mode=0o700)
        run_as = cluster.run_as
        if run_as is None:
            return
        for folder in (cluster.workdir, cluster.socket_dir):
            os.chown(folder, run_as.uid, run_as.gid)
        # mkdtemp's folder is 0700, but every folder above it must let the user through.
        for parent in cluster.workdir.parents:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                raise RuntimeError(
                    f"PostgreSQL runs as {run_as.name!r}, who cannot enter {parent}:"
                    " set TMPDIR to a folder open to other users (/tmp)"
                )

    def _initdb(self) -> None:
        result = self._cluster.run(
            "initdb",
            "-D",
            self.data_dir,
            "-A",
            "trust",
            "-U",
            _SUPERUSER,
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed: {_output(result)}")

    def _start_on_free_port(self) -> None:
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            port = _free_port(self.host)
            try:
                self._start_on(port)
            except _PortTaken:
                if attempt == _PORT_ATTEMPTS:
                    raise
                continue
            return

    def _start_on(self, port: int) -> None:
        cluster = self._cluster
        cluster.clear_stale_locks()
        options = [
            f"-h {self.host}",
            f"-p {port}",
            f"-k {shlex.quote(str(self.socket_dir))}",  # pg_ctl hands -o to /bin/sh
            *(f"-c {name}={value}" for name, value in _SETTINGS.items()),
        ]
        log_start = cluster.log_size()
        result = cluster.run(
            "pg_ctl",
            "start",
            "-D",
            self.data_dir,
            "-l",
            self.log_file,
            "-w",
            "-t",
            str(_PG_CTL_WAIT_SECONDS),
            "-o",
            " ".join(options),
        )
        if result.returncode == 0 and cluster.running():
            self.port = port
            return
        log = cluster.log_tail(log_start)
        # pg_ctl may have given up waiting on a server that is still starting.
        cluster.halt()
        if _PORT_IN_USE.search(log) or _port_taken(self.host, port):
            raise _PortTaken(f"port {port} is taken:\n{log}")
        raise RuntimeError(f"PostgreSQL did not start: {_output(result)}\nserver log:\n{log}")

    def _admin(self, statement: sql.Composed) -> None:
        # CREATE and DROP DATABASE cannot run inside a transaction.
        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(statement)


class _PortTaken(RuntimeError):
    """Another program bound the port first."""


def _output(result: subprocess.CompletedProcess[str]) -> str:
    text = (result.stdout + result.stderr).strip()
    return "\n".join(text.splitlines()[-_LOG_TAIL_LINES:]) or f"exit status {result.returncode}"
