"""Certificates and DH parameters for the daemon fleet, from a ``trustme`` test CA."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography.hazmat.primitives.asymmetric import dh
from cryptography.hazmat.primitives.serialization import Encoding, ParameterFormat

from .model import ProfileSpec

# The 1024-bit MODP group of RFC 2409 (Oakley group 2), a safe prime: the classic weak
# DHE group of old mail servers. Fixed rather than generated, so start-up stays fast
# and every run offers the same group.
_OAKLEY_GROUP_2 = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE65381FFFFFFFFFFFFFFFF",
    16,
)


@dataclass(frozen=True)
class ServerCredentials:
    """Files one profile's daemons load: chain (leaf first), key, optional DH group."""

    chain_file: Path
    key_file: Path
    dh_file: Path | None


def weak_dh_pem() -> bytes:
    """PEM (PKCS#3) DH parameters for the 1024-bit Oakley group 2."""
    numbers = dh.DHParameterNumbers(_OAKLEY_GROUP_2, 2)
    return numbers.parameters().parameter_bytes(Encoding.PEM, ParameterFormat.PKCS3)


class FleetCertificates:
    """A test CA and one RSA leaf certificate per profile, written under ``directory``.

    RSA rather than trustme's default ECDSA: the legacy profile must be able to offer
    RSA key exchange suites, which need an RSA certificate.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._ca = trustme.CA(key_type=trustme.KeyType.RSA, organization_name="tlsfleet tests")
        self.ca_file = directory / "ca.pem"

    def write_ca(self) -> Path:
        """Write the CA certificate (what a client trusts) and return its path."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._ca.cert_pem.write_to_path(str(self.ca_file))
        os.chmod(self.ca_file, 0o644)
        return self.ca_file

    def issue(self, spec: ProfileSpec) -> ServerCredentials:
        """Issue the leaf for ``spec``'s host name and address, and write its files."""
        leaf = self._ca.issue_cert(
            spec.hostname, spec.ip, common_name=spec.hostname, key_type=trustme.KeyType.RSA
        )
        chain_file = self.directory / f"{spec.name}.chain.pem"
        key_file = self.directory / f"{spec.name}.key.pem"
        chain_file.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        # Only root reads keys: every daemon loads them before dropping privileges.
        key_file.touch(mode=0o600)
        key_file.write_bytes(leaf.private_key_pem.bytes())
        dh_file = None
        if spec.dhe:
            dh_file = self.directory / f"{spec.name}.dh.pem"
            dh_file.write_bytes(weak_dh_pem())
        return ServerCredentials(chain_file=chain_file, key_file=key_file, dh_file=dh_file)
