"""A throw-away certificate authority for the demo fleet (``cryptography`` only)."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tlsfleet demo"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True, slots=True)
class IssuedCert:
    """Paths of a certificate chain and its key, ready for ``SSLContext.load_cert_chain``."""

    cert_file: Path
    key_file: Path


class DemoCA:
    """A CA whose certificate lives in ``directory/ca.pem``; issues leaf certificates."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(_name("tlsfleet demo CA"))
            .issuer_name(_name("tlsfleet demo CA"))
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                _CA_KEY_USAGE,
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        self._serial = itertools.count(1)

    def issue(
        self,
        name: str,
        *,
        days_valid: int = 90,
        days_ago: int = 1,
        self_signed: bool = False,
        also: Sequence[str] = (),
        rsa_key: bool = False,
    ) -> IssuedCert:
        """A leaf for ``name`` valid from ``days_ago`` days ago for ``days_valid`` days.

        A negative end (``days_valid < days_ago``) gives an expired certificate;
        ``self_signed`` signs it with its own key instead of the CA's. ``also``: more
        DNS names for the SAN (a shared web server's customers). ``rsa_key``: an RSA
        2048 key instead of EC P-256, so that the server can offer RSA key-exchange
        suites (what a legacy server's weak suites need).
        """
        key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
        if rsa_key:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            key = ec.generate_private_key(ec.SECP256R1())
        names = list(dict.fromkeys([name, *also]))
        now = dt.datetime.now(dt.UTC)
        start = now - dt.timedelta(days=days_ago)
        issuer = _name(name) if self_signed else self._cert.subject
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=days_valid))
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        )
        if not self_signed:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        cert = builder.sign(key if self_signed else self._key, hashes.SHA256())
        stem = f"{next(self._serial):03d}-{name}"
        cert_file, key_file = self.directory / f"{stem}.crt", self.directory / f"{stem}.key"
        chain = cert.public_bytes(serialization.Encoding.PEM)
        if not self_signed:
            chain += self._cert.public_bytes(serialization.Encoding.PEM)
        cert_file.write_bytes(chain)
        key_file.write_bytes(_pem_key(key))
        key_file.chmod(0o600)
        return IssuedCert(cert_file=cert_file, key_file=key_file)
