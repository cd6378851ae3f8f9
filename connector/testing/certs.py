"""Throwaway TLS material for the embedded FTPS server, made at runtime.

Nothing is checked in: every call makes fresh keys, so a test can never pass
because of a certificate left over from another run, and nothing expires in
the repository. Each helper returns a `TLSFiles` that reads as a scenario:
the CA a client is told to trust, and what the server presents.

- `make_tls_files`: a good setup; a client trusting `ca_file` accepts the
  server at `localhost`, `127.0.0.1` and `::1`.
- `make_untrusted_tls_files`: the server certificate is signed by a CA other
  than `ca_file`, as when a server is re-keyed by an unknown party.
- `make_wrong_hostname_tls_files`: signed by `ca_file`, but for another host
  name, so only the hostname check fails.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CertificateAuthority",
    "TLSFiles",
    "make_tls_files",
    "make_untrusted_tls_files",
    "make_wrong_hostname_tls_files",
]

# Back-dated so that a few seconds of clock skew between the certificate's
# creation and its use never makes it "not yet valid".
_BACKDATE = dt.timedelta(hours=1)
_LIFETIME = dt.timedelta(days=2)


@dataclass(frozen=True)
class TLSFiles:
    """PEM files for one TLS scenario."""

    ca_file: Path
    """CA certificate a client should be given as its trust anchor."""
    cert_file: Path
    """Server certificate."""
    key_file: Path
    """Server private key, unencrypted."""


def _new_key() -> ec.EllipticCurvePrivateKey:
    # P-256 rather than RSA: key generation is instantaneous, which keeps
    # fixtures fast, and every TLS stack in use accepts it.
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


class CertificateAuthority:
    """A self-signed CA that issues server certificates."""

    def __init__(self, common_name: str = "connector test CA") -> None:
        now = dt.datetime.now(dt.UTC)
        self._key = _new_key()
        public = self._key.public_key()
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + _LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            # Strict verifiers (Python 3.13's default X509_STRICT flag)
            # insist on key identifiers; adding them costs nothing.
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self._key, hashes.SHA256())
        )

    def write_pem(self, path: Path) -> Path:
        """Write the CA certificate (never its key) to `path`."""
        return _write(path, self.certificate.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        directory: Path,
        *,
        dns_names: Sequence[str] = ("localhost",),
        ip_addresses: Sequence[str] = ("127.0.0.1", "::1"),
        stem: str = "server",
    ) -> TLSFiles:
        """Issue a server certificate and write `<stem>.pem`, `<stem>.key`, `ca.pem`."""
        now = dt.datetime.now(dt.UTC)
        key = _new_key()
        names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
        ca_public = self.certificate.public_key()
        assert isinstance(ca_public, ec.EllipticCurvePublicKey)  # made by __init__
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(dns_names[0] if dns_names else ip_addresses[0]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + _LIFETIME)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return TLSFiles(
            ca_file=self.write_pem(directory / "ca.pem"),
            cert_file=_write(
                directory / f"{stem}.pem", cert.public_bytes(serialization.Encoding.PEM)
            ),
            key_file=_write(directory / f"{stem}.key", key_pem),
        )


def make_tls_files(directory: Path) -> TLSFiles:
    """A fresh CA and a server certificate for localhost, 127.0.0.1 and ::1."""
    return CertificateAuthority().issue(directory)


def make_untrusted_tls_files(directory: Path) -> TLSFiles:
    """A server certificate that the returned `ca_file` does not vouch for.

    Two unrelated CAs with the same name: the certificate names the right host
    and its issuer looks familiar, so the only fault a client can find is the
    signature, as with a man in the middle.
    """
    trusted = CertificateAuthority()
    files = CertificateAuthority().issue(directory)
    return TLSFiles(
        ca_file=trusted.write_pem(directory / "trusted-ca.pem"),
        cert_file=files.cert_file,
        key_file=files.key_file,
    )


def make_wrong_hostname_tls_files(directory: Path, *, dns_name: str = "wrong.invalid") -> TLSFiles:
    """A server certificate signed by `ca_file` but issued for `dns_name` only."""
    return CertificateAuthority().issue(directory, dns_names=(dns_name,), ip_addresses=())
