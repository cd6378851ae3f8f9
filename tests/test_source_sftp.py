"""sftp:// sources: the shared Source contract, host key trust, credentials, and the network
failing at any point, against the embedded paramiko server on loopback."""

# paramiko ships no type information.
# mypy: disable-error-code="import-untyped"

from __future__ import annotations

import contextlib
import errno
import gc
import hashlib
import logging
import os
import re
import socket
import struct
import threading
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paramiko
import pytest
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from connector.actions import parse_action
from connector.config import SourceConfig
from connector.errors import SourceRefused, TransientError
from connector.sources.base import CHUNK
from connector.sources.known_hosts import known_keys
from connector.sources.sftp import SFTPSource, _dropped
from connector.testing import EmbeddedSFTPServer, Fault, make_ssh_key, new_ed25519_key
from tests.helpers import server_config, source_config
from tests.source_contract import Remote, SourceContract, use_fully

if TYPE_CHECKING:
    from connector.testing.plugin import FaultProxyFactory

# Slow (pyproject's `slow` marker): embedded SFTP servers (and fault proxies).
pytestmark = pytest.mark.slow

SENTINEL = "pw-SENTINEL-7d41b2"  # the server's password: must never be seen anywhere


def _trusting(server: EmbeddedSFTPServer, tmp_path: Path, port: int | None = None) -> Path:
    """A known_hosts file that trusts ``server`` (reached on ``port``)."""
    return server.write_known_hosts(tmp_path / "known_hosts", port=port)


def _source(
    server: EmbeddedSFTPServer,
    tmp_path: Path,
    *,
    password: str | None = SENTINEL,
    port: int | None = None,
    **options: Any,
) -> SFTPSource:
    if "known_hosts" not in options and "host_key" not in options:
        options["known_hosts"] = _trusting(server, tmp_path, port)
    return SFTPSource(server_config(server, port=port, **options), password)


def _refusal(server: EmbeddedSFTPServer, tmp_path: Path, **settings: Any) -> str:
    """What SourceRefused says when connecting with these settings."""
    with pytest.raises(SourceRefused) as caught, _source(server, tmp_path, **settings):
        pass
    return str(caught.value)


def _sha256(chunks: list[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def _our_threads() -> list[str]:
    names = ("connector-sftp", "connector-testing")
    return [t.name for t in threading.enumerate() if t.name.startswith(names)]


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """No paramiko transport, watchdog, server or proxy thread outlives a test."""
    yield
    assert _our_threads() == []


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedSFTPServer]:
    """The embedded server, whose password is the sentinel."""
    with EmbeddedSFTPServer(tmp_path / "root", password=SENTINEL) as server:
        yield server


class TestSFTPContract(SourceContract):
    @pytest.fixture
    def remote(self, sftp_server: EmbeddedSFTPServer, tmp_path: Path) -> Remote:
        known_hosts = _trusting(sftp_server, tmp_path)
        config = server_config(sftp_server, known_hosts=known_hosts)
        return Remote(
            root=sftp_server.root, connect=lambda: SFTPSource(config, sftp_server.password)
        )


class TestSFTPHomeRelativeFolderContract(SourceContract):
    """``sftp://host/~/inbox``: a folder under the login folder (the server's "/")."""

    @pytest.fixture
    def remote(self, sftp_server: EmbeddedSFTPServer, tmp_path: Path) -> Remote:
        (sftp_server.root / "inbox").mkdir()
        known_hosts = _trusting(sftp_server, tmp_path)
        config = server_config(sftp_server, "~/inbox", known_hosts=known_hosts)
        return Remote(
            root=sftp_server.root / "inbox",
            connect=lambda: SFTPSource(config, sftp_server.password),
        )


# -- which server is trusted -------------------------------------------------------------


def _other_key_line(name: str) -> str:
    key = new_ed25519_key()
    return f"{name} {key.get_name()} {key.get_base64()}"


@pytest.mark.parametrize(
    "entry",
    [
        "",
        "files.example.com {key}",
        "127.0.0.1 {key}",  # the same host on port 22 is another server
        "[127.0.0.1]:1 {key}",
    ],
    ids=["empty", "other-host", "port-22", "other-port"],
)
def test_unknown_host_key_is_refused_before_any_credential(
    server: EmbeddedSFTPServer, tmp_path: Path, entry: str
) -> None:
    """A server not in known_hosts is refused, showing its fingerprint; no credential is sent."""
    real = f"{server.host_key.get_name()} {server.host_key.get_base64()}"
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(entry.format(key=real) + "\n")
    expected = re.escape(
        f"source acme: host key of 127.0.0.1:{server.port} is not in {known_hosts} "
        f"(offered ssh-ed25519 {server.fingerprint})"
    )
    assert re.search(f"^{expected}$", _refusal(server, tmp_path, known_hosts=known_hosts))
    assert server.auth_attempts == 0


def test_changed_host_key_is_refused_before_any_credential(
    server: EmbeddedSFTPServer, tmp_path: Path
) -> None:
    """known_hosts holding another key for this host:port means a changed key: refused as a
    possible man-in-the-middle, with both fingerprints; no credential is sent."""
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(_other_key_line(f"[127.0.0.1]:{server.port}") + "\n")
    message = _refusal(server, tmp_path, known_hosts=known_hosts)
    assert message.startswith(f"source acme: host key of 127.0.0.1:{server.port} changed ")
    assert "possible man-in-the-middle" in message
    assert f"offered ssh-ed25519 {server.fingerprint}" in message
    assert server.auth_attempts == 0


@pytest.mark.parametrize(
    "names",
    [
        "[127.0.0.1]:{port}",
        "files.example.com,[127.0.0.1]:{port}",
        "[127.0.0.*]:{port}",
        "hashed",
    ],
)
def test_known_hosts_forms_openssh_writes_are_trusted(
    server: EmbeddedSFTPServer, tmp_path: Path, names: str
) -> None:
    """``[host]:port``, several names, wildcards and hashed names (HashKnownHosts) all work."""
    lookup = f"[127.0.0.1]:{server.port}"
    if names == "hashed":
        names = paramiko.HostKeys.hash_host(lookup)
    line = f"{names.format(port=server.port)} {server.host_key.get_name()}  "
    line += f"{server.host_key.get_base64()} comment"  # two spaces: OpenSSH allows any blanks
    known_hosts = tmp_path / "known_hosts"
    damaged = f"[127.0.0.1]:{server.port} ssh-ed25519 !!!notbase64\n@revoked\nlonely-name\n"
    known_hosts.write_text(f"# a comment\n\n{damaged}{_other_key_line('elsewhere')}\n{line}\n")
    with _source(server, tmp_path, known_hosts=known_hosts) as source:
        assert source.list() == []


_PIECES = st.sampled_from(
    [
        *("@revoked", "@cert-authority", "|1|", "|1|AAAA|", "[127.0.0.1]:2222", "127.0.0.*"),
        *("!", "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "AAAAC3NzaC1lZDI1NTE5", "AAAA"),
    ]
)
_LINES = st.lists(st.one_of(_PIECES, st.text(max_size=8)), max_size=8).map(" ".join)


@given(st.lists(_LINES, max_size=6).map("\n".join))
def test_any_known_hosts_text_is_read_without_error(text: str) -> None:
    """Whatever a known_hosts file holds, reading it never raises: bad lines trust nothing."""
    keys, _ = known_keys(text, "[127.0.0.1]:2222")
    assert all(isinstance(key, paramiko.PKey) for key in keys)


def test_an_old_and_a_new_key_of_one_type_are_both_trusted(
    server: EmbeddedSFTPServer, tmp_path: Path
) -> None:
    """During a key rotation known_hosts lists two keys of one type for a host; either
    matches (paramiko's HostKeys.lookup would compare the first only)."""
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(
        _other_key_line(f"[127.0.0.1]:{server.port}") + "\n" + server.known_hosts_line() + "\n"
    )
    with _source(server, tmp_path, known_hosts=known_hosts) as source:
        assert source.list() == []


def test_a_negated_name_is_not_trusted(server: EmbeddedSFTPServer, tmp_path: Path) -> None:
    """``!pattern`` excludes a host from an entry, as in OpenSSH."""
    known_hosts = tmp_path / "known_hosts"
    key = f"{server.host_key.get_name()} {server.host_key.get_base64()}"
    known_hosts.write_text(f"[127.0.0.*]:{server.port},![127.0.0.1]:{server.port} {key}\n")
    assert "is not in" in _refusal(server, tmp_path, known_hosts=known_hosts)
    assert server.auth_attempts == 0


def test_a_revoked_key_is_refused(server: EmbeddedSFTPServer, tmp_path: Path) -> None:
    """An ``@revoked`` line wins over a matching entry."""
    known_hosts = _trusting(server, tmp_path)
    key = f"{server.host_key.get_name()} {server.host_key.get_base64()}"
    with known_hosts.open("a") as f:
        f.write(f"@revoked * {key}\n")
    assert "is revoked in" in _refusal(server, tmp_path, known_hosts=known_hosts)
    assert server.auth_attempts == 0


@pytest.mark.parametrize("padding", ["", "="])
def test_pinned_host_key_is_enough(
    server: EmbeddedSFTPServer, tmp_path: Path, padding: str
) -> None:
    """host_key alone (no known_hosts) trusts the server with that fingerprint."""
    with _source(server, tmp_path, host_key=server.fingerprint + padding) as source:
        assert source.list() == []


def test_wrong_pinned_host_key_is_refused(server: EmbeddedSFTPServer, tmp_path: Path) -> None:
    """A host_key pin that does not match is refused before any credential is sent."""
    other = new_ed25519_key()
    message = _refusal(server, tmp_path, host_key=other.fingerprint)
    assert "changed (possible man-in-the-middle)" in message
    assert f"offered ssh-ed25519 {server.fingerprint}, pinned {other.fingerprint}" in message
    assert server.auth_attempts == 0


def test_pin_and_known_hosts_must_both_agree(server: EmbeddedSFTPServer, tmp_path: Path) -> None:
    """With both set, a key in known_hosts but not matching the pin is refused."""
    assert "pinned" in _refusal(
        server,
        tmp_path,
        known_hosts=_trusting(server, tmp_path),
        host_key=new_ed25519_key().fingerprint,
    )
    assert server.auth_attempts == 0


# -- algorithms ----------------------------------------------------------------------------

# What an old server offers, one kind at a time (the rest as paramiko's default). A MAC is
# only used with a cipher that is not AEAD (not GCM), but paramiko agrees on one anyway.
LEGACY_ONLY = {
    "cbc ciphers": (
        {"ciphers": ["aes128-cbc", "aes256-cbc", "3des-cbc"]},
        "only legacy ciphers (aes128-cbc, aes256-cbc, 3des-cbc)",
    ),
    "sha1 and md5 macs": (
        {"ciphers": ["aes128-ctr"], "digests": ["hmac-sha1", "hmac-md5"]},
        "only legacy MACs (hmac-sha1, hmac-md5)",
    ),
    "small dh groups": (
        {"kex": ["diffie-hellman-group14-sha256"]},
        "only legacy key exchanges (diffie-hellman-group14-sha256)",
    ),
}


@pytest.mark.parametrize("offer", LEGACY_ONLY.values(), ids=LEGACY_ONLY.keys())
def test_a_server_with_only_legacy_algorithms_is_refused_by_default(
    tmp_path: Path, offer: tuple[dict[str, list[str]], str]
) -> None:
    """A server offering only CBC ciphers, SHA-1/MD5 MACs or small DH groups is refused,
    naming what it offers and the setting that accepts it; no credential is sent."""
    algorithms, offered = offer
    with EmbeddedSFTPServer(tmp_path / "root", password=SENTINEL, algorithms=algorithms) as server:
        message = _refusal(server, tmp_path)
        assert server.auth_attempts == 0
    assert message == (
        f"source acme: 127.0.0.1:{server.port}: the server offers {offered}: set "
        "sftp_legacy_algorithms = true on this source to accept them"
    )


def test_legacy_algorithms_are_refused_together(tmp_path: Path) -> None:
    """A server that is old in every way is told so at once, kind by kind."""
    algorithms = {
        "kex": ["diffie-hellman-group14-sha256"],
        "ciphers": ["aes128-cbc", "3des-cbc"],
        "digests": ["hmac-sha1"],
    }
    with EmbeddedSFTPServer(tmp_path / "root", password=SENTINEL, algorithms=algorithms) as server:
        message = _refusal(server, tmp_path)
    assert message == (
        f"source acme: 127.0.0.1:{server.port}: the server offers only legacy key exchanges "
        "(diffie-hellman-group14-sha256); only legacy ciphers (aes128-cbc, 3des-cbc); only "
        "legacy MACs (hmac-sha1): set sftp_legacy_algorithms = true on this source to accept "
        "them"
    )


@pytest.mark.parametrize("offer", LEGACY_ONLY.values(), ids=LEGACY_ONLY.keys())
def test_sftp_legacy_algorithms_accepts_an_old_server(
    tmp_path: Path, offer: tuple[dict[str, list[str]], str]
) -> None:
    """With sftp_legacy_algorithms = true the same server is used, on what it offers."""
    algorithms, _ = offer
    with EmbeddedSFTPServer(tmp_path / "root", password=SENTINEL, algorithms=algorithms) as server:
        (server.root / "a.csv").write_bytes(b"a,b\n")
        with (
            structlog.testing.capture_logs() as logs,
            _source(server, tmp_path, sftp_legacy_algorithms=True) as source,
        ):
            assert b"".join(source.read("a.csv")) == b"a,b\n"
    [negotiated] = [e for e in logs if e["event"] == "sftp_negotiated"]
    agreed = {
        "ciphers": negotiated["cipher"],
        "digests": negotiated["mac"],
        "kex": negotiated["kex"],
    }
    for kind, names in algorithms.items():
        assert agreed[kind] == names[0]


def test_the_negotiated_algorithms_are_logged_at_debug(
    server: EmbeddedSFTPServer, tmp_path: Path
) -> None:
    """A modern server: the session's cipher, MAC, key exchange and host key type are
    logged at debug level, all of them modern."""
    with structlog.testing.capture_logs() as logs, _source(server, tmp_path):
        pass
    [negotiated] = [e for e in logs if e["event"] == "sftp_negotiated"]
    assert negotiated["log_level"] == "debug"
    assert negotiated["cipher"] == "aes256-gcm@openssh.com"
    assert negotiated["mac"] == "implicit (AEAD)"
    assert negotiated["kex"] in ("mlkem768x25519-sha256", "curve25519-sha256@libssh.org")
    assert negotiated["host_key_type"] == "ssh-ed25519"


def test_a_modern_server_without_gcm_gets_ctr_and_an_etm_mac(tmp_path: Path) -> None:
    """Without GCM, CTR is chosen with an encrypt-then-MAC SHA-2 MAC."""
    algorithms = {"ciphers": ["aes128-cbc", "aes128-ctr"]}
    with (
        EmbeddedSFTPServer(tmp_path / "root", password=SENTINEL, algorithms=algorithms) as server,
        structlog.testing.capture_logs() as logs,
        _source(server, tmp_path),
    ):
        pass
    [negotiated] = [e for e in logs if e["event"] == "sftp_negotiated"]
    assert (negotiated["cipher"], negotiated["mac"]) == (
        "aes128-ctr",
        "hmac-sha2-256-etm@openssh.com",
    )


# -- host key types ----------------------------------------------------------------------


def _default_key_types() -> tuple[str, ...]:
    """The host key types this paramiko offers unless told otherwise."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        return tuple(paramiko.Transport(ours).get_security_options().key_types)


# Older paramiko releases offer (and serve) RSA over SHA-1; recent ones have no such type.
SHA1_RSA = "ssh-rsa" in _default_key_types()


def _packet(payload: bytes) -> bytes:
    """An SSH binary packet before any key exchange: no MAC, padded to 8 bytes."""
    padding = 8 - (5 + len(payload)) % 8
    padding += 8 if padding < 4 else 0
    return struct.pack(">IB", 1 + len(payload) + padding, padding) + payload + bytes(padding)


class _OldSSHServer:
    """An old server on loopback, as far as the client's first question: its version line
    and a KEXINIT offering only ``key_types``, then silence until the client hangs up.
    (The embedded server is paramiko, which a recent release can no longer make offer
    ssh-rsa or ssh-dss.)"""

    def __init__(self, key_types: list[str]) -> None:
        kexinit = paramiko.Message()
        kexinit.add_byte(bytes([20]))  # SSH_MSG_KEXINIT
        kexinit.add_bytes(os.urandom(16))
        kexinit.add_list(["curve25519-sha256", "curve25519-sha256@libssh.org"])
        kexinit.add_list(key_types)
        for names in (["aes128-ctr"], ["hmac-sha2-256"], ["none"], []):  # each way
            kexinit.add_list(names)
            kexinit.add_list(names)
        kexinit.add_boolean(False)
        kexinit.add_int(0)
        self._hello = b"SSH-2.0-OpenSSH_5.3\r\n" + _packet(kexinit.asbytes())
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(5)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(
            target=self._serve, name=f"connector-testing-oldssh-{self.port}"
        )

    def __enter__(self) -> _OldSSHServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._thread.join()
        self._listener.close()

    def _serve(self) -> None:
        with contextlib.suppress(OSError), self._listener.accept()[0] as conn:
            conn.settimeout(5)
            conn.sendall(self._hello)
            while conn.recv(1 << 16):
                pass

    def refusal(self, **options: Any) -> str:
        """What SourceRefused says when a source with these settings connects."""
        never_reached = {"host_key": new_ed25519_key().fingerprint}
        config = source_config(
            f"sftp://ingest@127.0.0.1:{self.port}/", **({"timeout": "5s"} | never_reached | options)
        )
        with pytest.raises(SourceRefused) as caught, SFTPSource(config, SENTINEL):
            pass
        return str(caught.value)


@pytest.mark.parametrize("offered", [None, ["rsa-sha2-256"]], ids=["default", "sha256-only"])
def test_an_rsa_host_key_is_used_over_sha2(tmp_path: Path, offered: list[str] | None) -> None:
    """A server with only an RSA host key is used over SHA-2 (SHA-512 if offered), not SHA-1."""
    algorithms = {"key_types": offered} if offered else None
    with EmbeddedSFTPServer(tmp_path / "root", password=SENTINEL, algorithms=algorithms) as server:
        server.host_key = paramiko.RSAKey.generate(2048)
        with structlog.testing.capture_logs() as logs, _source(server, tmp_path) as source:
            assert source.list() == []
    [negotiated] = [e for e in logs if e["event"] == "sftp_negotiated"]
    assert negotiated["host_key_type"] == (offered or ["rsa-sha2-512"])[0]


def test_a_server_offering_only_sha1_host_keys_is_refused_by_default() -> None:
    """Only ssh-rsa and ssh-dss host keys: refused, naming them (and the setting if it helps)."""
    with _OldSSHServer(["ssh-rsa", "ssh-dss"]) as server:
        message = server.refusal()
    where = f"source acme: 127.0.0.1:{server.port}: "
    if SHA1_RSA:
        assert message == (
            f"{where}the server offers only legacy host key types (ssh-rsa, ssh-dss): set "
            "sftp_legacy_algorithms = true on this source to accept them"
        )
    else:
        assert message == f"{where}no host key type in common (the server offers ssh-rsa, ssh-dss)"


@pytest.mark.skipif(SHA1_RSA, reason="this paramiko still has ssh-rsa: see the next test")
def test_sha1_host_keys_are_refused_with_legacy_where_paramiko_has_none() -> None:
    """The legacy setting cannot bring back host key types paramiko lacks: it is not named."""
    with _OldSSHServer(["ssh-rsa", "ssh-dss"]) as server:
        message = server.refusal(sftp_legacy_algorithms=True)
    assert message == (
        f"source acme: 127.0.0.1:{server.port}: no host key type in common (the server offers "
        "ssh-rsa, ssh-dss)"
    )


@pytest.mark.skipif(not SHA1_RSA, reason="this paramiko cannot serve or accept ssh-rsa")
def test_sftp_legacy_algorithms_accepts_an_ssh_rsa_host_key(tmp_path: Path) -> None:
    """A server offering only ssh-rsa is refused before any credential; legacy accepts it."""
    algorithms = {"key_types": ["ssh-rsa"]}
    with EmbeddedSFTPServer(tmp_path / "root", password=SENTINEL, algorithms=algorithms) as server:
        server.host_key = paramiko.RSAKey.generate(2048)
        (server.root / "a.csv").write_bytes(b"a,b\n")
        assert "only legacy host key types (ssh-rsa)" in _refusal(server, tmp_path)
        assert server.auth_attempts == 0
        with (
            structlog.testing.capture_logs() as logs,
            _source(server, tmp_path, sftp_legacy_algorithms=True) as source,
        ):
            assert b"".join(source.read("a.csv")) == b"a,b\n"
    [negotiated] = [e for e in logs if e["event"] == "sftp_negotiated"]
    assert negotiated["host_key_type"] == "ssh-rsa"


# -- credentials -------------------------------------------------------------------------


def _write_key(path: Path, key: Any, passphrase: bytes | None = None) -> Path:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption
        )
    )
    path.chmod(0o600)
    return path


def _authorize(server: EmbeddedSFTPServer, path: Path, passphrase: str | None = None) -> None:
    server.authorize(paramiko.PKey.from_path(path, passphrase.encode() if passphrase else None))


@pytest.mark.parametrize(
    "make",
    [
        ed25519.Ed25519PrivateKey.generate,
        lambda: ec.generate_private_key(ec.SECP256R1()),
        lambda: rsa.generate_private_key(65537, 2048),
    ],
    ids=["ed25519", "ecdsa", "rsa"],
)
def test_key_file_logs_in(server: EmbeddedSFTPServer, tmp_path: Path, make: Any) -> None:
    """An Ed25519, ECDSA or RSA key_file logs in without any password."""
    key_file = _write_key(tmp_path / "id", make())
    _authorize(server, key_file)
    with _source(server, tmp_path, password=None, key_file=key_file) as source:
        assert source.list() == []
    assert server.auth_attempts == 1


def test_encrypted_key_file_takes_the_password_as_passphrase(
    server: EmbeddedSFTPServer, tmp_path: Path
) -> None:
    """An encrypted key_file is opened with the source password."""
    key_file = _write_key(tmp_path / "id", ed25519.Ed25519PrivateKey.generate(), b"open sesame")
    _authorize(server, key_file, "open sesame")
    with _source(server, tmp_path, password="open sesame", key_file=key_file) as source:
        assert source.list() == []


def test_a_passphrase_is_never_sent_as_a_login_password(
    server: EmbeddedSFTPServer, tmp_path: Path
) -> None:
    """When the key (encrypted) is refused, its passphrase is not tried as the password,
    even though here it would have been the right one."""
    # An encrypted key the server does not know, whose passphrase is the server password.
    key_file = _write_key(tmp_path / "id", ed25519.Ed25519PrivateKey.generate(), SENTINEL.encode())
    assert re.search(
        r"\(tried key .*id\)$", _refusal(server, tmp_path, password=SENTINEL, key_file=key_file)
    )
    assert server.auth_attempts == 1  # the key only


def test_encrypted_key_file_without_password_is_refused(
    server: EmbeddedSFTPServer, tmp_path: Path
) -> None:
    """An encrypted key_file and no source password: refused, saying what to set."""
    key_file = _write_key(tmp_path / "id", ed25519.Ed25519PrivateKey.generate(), b"secret")
    assert "is encrypted; its passphrase is the source" in _refusal(
        server, tmp_path, password=None, key_file=key_file
    )
    assert server.auth_attempts == 0


def test_wrong_passphrase_is_refused(server: EmbeddedSFTPServer, tmp_path: Path) -> None:
    """A key_file the source password does not decrypt is refused before connecting."""
    key_file = _write_key(tmp_path / "id", ed25519.Ed25519PrivateKey.generate(), b"right")
    with (
        pytest.raises(SourceRefused, match="cannot decrypt key_file") as caught,
        _source(server, tmp_path, password=SENTINEL, key_file=key_file),
    ):
        pass
    assert SENTINEL not in "".join(traceback.format_exception(caught.value))


def test_unreadable_key_file_is_refused(server: EmbeddedSFTPServer, tmp_path: Path) -> None:
    """A key_file that is not a key says so."""
    key_file = tmp_path / "id"
    key_file.write_text("not a key\n")
    assert "cannot load key_file" in _refusal(server, tmp_path, key_file=key_file)


def test_key_first_then_password(server: EmbeddedSFTPServer, tmp_path: Path) -> None:
    """With both, a key the server refuses is followed by the password, which logs in."""
    key_file = make_ssh_key(tmp_path / "keys").private_key_file  # not authorized
    with _source(server, tmp_path, key_file=key_file) as source:
        assert source.list() == []
    assert server.auth_attempts == 2


def test_wrong_password_is_refused_without_showing_it(
    server: EmbeddedSFTPServer, tmp_path: Path
) -> None:
    """A wrong password is SourceRefused naming the user, never the password."""
    wrong = SENTINEL + "-wrong"
    with pytest.raises(SourceRefused) as caught, _source(server, tmp_path, password=wrong):
        pass
    message = str(caught.value)
    assert message == (
        f"source acme: authentication failed for user ingest at 127.0.0.1:{server.port} "
        "(tried password)"
    )
    assert SENTINEL not in "".join(traceback.format_exception(caught.value))


def test_no_credential_at_all_is_refused(server: EmbeddedSFTPServer, tmp_path: Path) -> None:
    """No key_file and no password: refused, saying what to set."""
    assert "tried nothing: set key_file" in _refusal(server, tmp_path, password=None)


def test_password_never_reaches_logs_or_errors(
    server: EmbeddedSFTPServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The password appears in no structlog event, no stdlib log record (paramiko's DEBUG
    included) and no exception text, on success or failure."""
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    (server.root / "a.csv").write_bytes(b"a,b\n")
    with structlog.testing.capture_logs() as logs:
        with _source(server, tmp_path) as source:
            errors.append(use_fully(source, "a.csv"))
        with (
            pytest.raises(SourceRefused) as refused,
            _source(server, tmp_path, password=SENTINEL + "x"),
        ):
            pass
        errors.append(refused.value)
    assert caplog.records  # paramiko logged, and it was checked
    assert SENTINEL not in caplog.text
    assert SENTINEL not in repr(logs)
    for error in errors:
        assert SENTINEL not in "".join(traceback.format_exception(error))


def test_a_url_without_user_is_refused_by_the_config() -> None:
    """sftp://host/ names no user: refused at start-up, naming the key, before any source
    is opened."""
    with pytest.raises(ValidationError, match="an sftp:// URL names its user"):
        SourceConfig.model_validate(
            {
                "name": "acme",
                "url": "sftp://127.0.0.1:2222/",
                "host_key": "SHA256:" + "A" * 43,
                "files": [{"kind": "contacts", "pattern": "*"}],
            }
        )


# -- listing, reading, completing ----------------------------------------------------------


def test_links_to_files_are_listed_links_to_folders_are_not(
    server: EmbeddedSFTPServer, tmp_path: Path
) -> None:
    """A symlink to a regular file is a file; to a folder, or dangling, it is not."""
    root = server.root
    (root / "real.csv").write_bytes(b"12345")
    (root / "folder").mkdir()
    (root / "link.csv").symlink_to("real.csv")
    (root / "dir-link").symlink_to("folder")
    (root / "dangling.csv").symlink_to("nowhere.csv")
    with _source(server, tmp_path) as source:
        files = {f.name: f.size for f in source.list()}
    assert files == {"real.csv": 5, "link.csv": 5}


def test_names_that_are_not_utf8_are_listed_for_selection_to_refuse(
    server: EmbeddedSFTPServer, tmp_path: Path
) -> None:
    """A name in Latin-1 (a file, or a link not followed) is listed as it came, not a
    failed listing; the files beside it are listed and read as usual."""
    root = os.fsencode(server.root)
    with open(os.path.join(root, b"caf\xe9.csv"), "wb") as f:
        f.write(b"123")
    (server.root / "ok.csv").write_bytes(b"a,b\n")
    os.symlink(b"ok.csv", os.path.join(root, b"l\xefnk.csv"))
    with _source(server, tmp_path) as source:
        files = {f.name: f.size for f in source.list()}
        assert b"".join(source.read("ok.csv")) == b"a,b\n"
    assert files == {os.fsdecode(b"caf\xe9.csv"): 3, "ok.csv": 4, os.fsdecode(b"l\xefnk.csv"): 0}


def test_a_folder_of_many_replies_is_listed_whole(
    server: EmbeddedSFTPServer, tmp_path: Path
) -> None:
    """READDIRs are pipelined: 1,000 names (63 replies of 16, more than in flight at once)
    are each listed once, and the session goes on in step (a read, another listing)."""
    for i in range(1_000):
        (server.root / f"f{i:04d}.csv").write_bytes(b"x" * (i % 7))
    with _source(server, tmp_path) as source:
        files = source.list()
        assert b"".join(source.read("f0006.csv")) == b"x" * 6
        again = source.list()
    assert sorted((f.name, f.size) for f in files) == [
        (f"f{i:04d}.csv", i % 7) for i in range(1_000)
    ]
    assert len(again) == 1_000


def test_a_missing_folder_is_transient(server: EmbeddedSFTPServer, tmp_path: Path) -> None:
    """A source folder not (yet) on the server is retried, not refused."""
    with (
        _source(server, tmp_path, path="nope") as source,
        pytest.raises(TransientError, match=r"^source acme: list /nope: no such file$"),
    ):
        source.list()


def test_large_read_works(server: EmbeddedSFTPServer, tmp_path: Path) -> None:
    """A 20 MB file arrives whole, in chunks of at most CHUNK (pipelined reads at work)."""
    data = os.urandom(20 << 20)
    (server.root / "big.csv").write_bytes(data)
    with _source(server, tmp_path) as source:
        chunks = list(source.read("big.csv"))
    assert max(map(len, chunks)) <= CHUNK + 32 * 1024
    assert _sha256(chunks) == hashlib.sha256(data).hexdigest()


def test_reads_past_the_end_and_of_empty_files_are_empty(
    server: EmbeddedSFTPServer, tmp_path: Path
) -> None:
    """Offsets at or past the end, and empty files, give no bytes."""
    (server.root / "a.csv").write_bytes(b"abc")
    (server.root / "empty.csv").write_bytes(b"")
    with _source(server, tmp_path) as source:
        assert b"".join(source.read("a.csv", 3)) == b""
        assert b"".join(source.read("a.csv", 10)) == b""
        assert b"".join(source.read("empty.csv")) == b""


def test_short_replies_are_completed(
    server: EmbeddedSFTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server may answer a READ with fewer bytes than asked; the rest is asked again."""
    from connector.testing import _sftp_fs

    real_read = paramiko.SFTPHandle.read
    shortened = []

    def short_read(self: Any, offset: int, length: int) -> Any:
        short = min(length, 1000 + offset % 7)
        if short < length:
            shortened.append(offset)
        return real_read(self, offset, short)

    monkeypatch.setattr(_sftp_fs._Handle, "read", short_read, raising=False)
    data = os.urandom(300_001)
    (server.root / "a.csv").write_bytes(data)
    with _source(server, tmp_path) as source:
        assert b"".join(source.read("a.csv", 17)) == data[17:]
    assert len(shortened) > 100


def test_a_file_that_grows_is_read_to_its_new_end(
    server: EmbeddedSFTPServer, tmp_path: Path
) -> None:
    """The end is the server's EOF, not the size seen when the read began."""
    data = os.urandom(3 << 20)
    path = server.root / "a.csv"
    path.write_bytes(data)
    with _source(server, tmp_path) as source:
        chunks = source.read("a.csv")
        first = next(chunks)
        with path.open("ab") as f:
            f.write(b"more")
        rest = b"".join(chunks)
    assert first + rest == data + b"more"


def test_stopping_a_read_early_keeps_the_session(
    server: EmbeddedSFTPServer, tmp_path: Path
) -> None:
    """A consumer that stops after the first chunk, with READs still in flight, leaves a
    usable session: late replies are dropped, not mistaken for later answers."""
    data = os.urandom(8 << 20)
    (server.root / "big.csv").write_bytes(data)
    (server.root / "small.csv").write_bytes(b"small")
    with _source(server, tmp_path) as source:
        chunks = source.read("big.csv")
        assert next(chunks) == data[:CHUNK]
        chunks.close()
        assert sorted(f.name for f in source.list()) == ["big.csv", "small.csv"]
        assert b"".join(source.read("small.csv")) == b"small"
        assert b"".join(source.read("big.csv", 5)) == data[5:]
    assert server.auth_attempts == 1


def test_complete_move_makes_nested_folders(server: EmbeddedSFTPServer, tmp_path: Path) -> None:
    """move:<a/b> creates every missing folder on the way."""
    (server.root / "a.csv").write_bytes(b"1")
    with _source(server, tmp_path) as source:
        assert source.complete("a.csv", parse_action("move:done/2026")) == "/done/2026/a.csv"
    assert (server.root / "done" / "2026" / "a.csv").read_bytes() == b"1"


def test_complete_move_clash_uses_the_clock(server: EmbeddedSFTPServer, tmp_path: Path) -> None:
    """The clash suffix is the injected clock's UTC time."""
    (server.root / "done").mkdir()
    (server.root / "done" / "a.csv").write_bytes(b"old")
    (server.root / "a.csv").write_bytes(b"new")
    config = server_config(server, known_hosts=_trusting(server, tmp_path))
    clock = lambda: datetime(2026, 11, 28, 10, 15, tzinfo=UTC)  # noqa: E731
    with SFTPSource(config, SENTINEL, clock=clock) as source:
        assert source.complete("a.csv", parse_action("move:done")) == "/done/a.20261128T101500Z.csv"


# -- the network failing -----------------------------------------------------------------


def test_reset_mid_transfer_is_transient_and_resumes(
    server: EmbeddedSFTPServer, tmp_path: Path, fault_proxy: FaultProxyFactory
) -> None:
    """A connection reset mid-file is TransientError (no stray thread traceback); reading on
    from the bytes received, on the same source (it reconnects), gives the whole file."""
    data = os.urandom(8 << 20)
    (server.root / "big.csv").write_bytes(data)
    proxy = fault_proxy(server, Fault(reset_after=3 << 20))
    chunks: list[bytes] = []
    with _source(server, tmp_path, port=proxy.port) as source:
        with pytest.raises(TransientError, match=r"^source acme: read big\.csv: connection"):
            chunks.extend(source.read("big.csv"))  # keeps what came before the error
        received = sum(map(len, chunks))
        assert 0 < received < len(data)
        chunks.extend(source.read("big.csv", received))
    assert _sha256(chunks) == hashlib.sha256(data).hexdigest()
    assert proxy.faults_applied == 1 and proxy.connections == 2


def test_stalled_transfer_is_transient_within_the_timeout(
    server: EmbeddedSFTPServer, tmp_path: Path, fault_proxy: FaultProxyFactory
) -> None:
    """A server that stops sending mid-file raises TransientError after `timeout`; the
    source then reconnects for the next read."""
    data = os.urandom(4 << 20)
    (server.root / "big.csv").write_bytes(data)
    proxy = fault_proxy(server, Fault(stall_after=1 << 20))
    with _source(server, tmp_path, port=proxy.port, timeout="1s") as source:
        started = time.monotonic()
        with pytest.raises(TransientError, match=r"read big\.csv: no answer for 1s$"):
            b"".join(source.read("big.csv"))
        assert time.monotonic() - started < 2.5
        assert b"".join(source.read("big.csv")) == data
    assert server.auth_attempts == 2


# Bytes from the server after which the connection stalls: the banner, key exchange,
# authentication, channel open, subsystem request, SFTP version, the first listing (measured
# with paramiko 5.1; a point that has moved still tests "works, or fails in time").
@pytest.mark.parametrize("stall_after", [0, 10, 1000, 2150, 2400, 2475, 2550, 2600, 2700])
def test_a_stall_anywhere_while_connecting_is_transient_within_the_timeout(
    server: EmbeddedSFTPServer,
    tmp_path: Path,
    fault_proxy: FaultProxyFactory,
    stall_after: int,
) -> None:
    """Whatever step the server stops answering at, connecting gives up after about
    `timeout` with TransientError, never hangs and never claims a refusal."""
    proxy = fault_proxy(server, Fault(stall_after=stall_after))
    started = time.monotonic()
    outcome = "works"
    try:
        with _source(server, tmp_path, port=proxy.port, timeout="500ms") as source:
            source.list()
    except TransientError as exc:
        outcome = str(exc)
    assert outcome == "works" or outcome.endswith("no answer for 500ms")
    assert time.monotonic() - started < 2.5


@pytest.mark.parametrize("reset_after", [0, 500, 1500, 2300, 2600, 2900])
def test_a_reset_anywhere_while_connecting_is_transient(
    server: EmbeddedSFTPServer,
    tmp_path: Path,
    fault_proxy: FaultProxyFactory,
    reset_after: int,
) -> None:
    """A connection reset at any step of connecting is TransientError, not a refusal."""
    proxy = fault_proxy(server, Fault(reset_after=reset_after))
    with pytest.raises(TransientError), _source(server, tmp_path, port=proxy.port) as source:
        source.list()


def test_a_refused_connection_is_transient(server: EmbeddedSFTPServer, tmp_path: Path) -> None:
    """Nobody listening is retried later."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with (
        pytest.raises(TransientError, match=rf"connect to 127\.0\.0\.1:{port}: connection refused"),
        _source(server, tmp_path, port=port),
    ):
        pass


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts fds in /proc")
def test_no_socket_is_left_open(
    server: EmbeddedSFTPServer, tmp_path: Path, fault_proxy: FaultProxyFactory
) -> None:
    """Reads stopped early, connections reset and refused logins leave no descriptor open."""
    (server.root / "big.csv").write_bytes(os.urandom(3 << 20))
    proxy = fault_proxy(server, Fault(reset_after=1 << 20))
    gc.collect()
    before = len(os.listdir("/proc/self/fd"))
    with _source(server, tmp_path, port=proxy.port) as source:
        with pytest.raises(TransientError):
            b"".join(source.read("big.csv"))
        next(source.read("big.csv"))  # dropped unfinished
        source.list()
    with pytest.raises(SourceRefused), _source(server, tmp_path, password="wrong"):
        pass
    with (
        pytest.raises(SourceRefused),
        _source(server, tmp_path, host_key=new_ed25519_key().fingerprint),
    ):
        pass
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) == before


@pytest.mark.parametrize(
    ("error", "dropped"),
    [
        (OSError("Socket is closed"), True),  # paramiko's own, once its thread saw a reset
        (paramiko.SSHException("Server connection dropped: "), True),
        (EOFError(), False),  # (a connection lost already, by its type)
        (OSError(errno.EBADF, "Bad file descriptor"), False),
    ],
)
def test_paramikos_words_for_a_lost_connection_are_known(
    error: BaseException, dropped: bool
) -> None:
    """A reset seen first by paramiko's transport thread surfaces in a read as its own
    "Socket is closed": that is a lost connection too, whichever thread saw it first."""
    assert _dropped(error) is dropped
