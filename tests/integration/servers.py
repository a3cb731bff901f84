"""Test PKI and server profiles on top of the local servers in :mod:`fleet.demo.servers`."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field

import trustme

from fleet.demo.servers import (
    BaseServer,
    SmtpBehaviour,
    SmtpServer,
    TlsServer,
    running,
)

__all__ = [
    "LEGACY",
    "MODERN",
    "OLD_ONLY",
    "BaseServer",
    "Pki",
    "SmtpBehaviour",
    "SmtpServer",
    "TlsProfile",
    "TlsServer",
    "running",
]


@dataclass(frozen=True)
class TlsProfile:
    """How an OpenSSL server is configured."""

    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    max_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3
    ciphers: str = "ECDHE+AESGCM:ECDHE+CHACHA20"
    server_preference: bool = True
    ecdh_curve: str | None = None
    hostnames: tuple[str, ...] = ("tls.test",)
    ec_key: bool = False


LEGACY = TlsProfile(
    min_version=ssl.TLSVersion.TLSv1,
    ciphers="ALL:@SECLEVEL=0",
)
MODERN = TlsProfile()
OLD_ONLY = TlsProfile(
    min_version=ssl.TLSVersion.TLSv1,
    max_version=ssl.TLSVersion.TLSv1_1,
    ciphers="AES128-SHA:ECDHE-RSA-AES256-SHA:@SECLEVEL=0",
)


@dataclass
class Pki:
    """A test CA (trustme) and the CA file the scanner is told to trust."""

    ca: trustme.CA
    ca_file: str
    _leaf_cache: dict[tuple[tuple[str, ...], bool], trustme.LeafCert] = field(default_factory=dict)

    def leaf(self, hostnames: tuple[str, ...], *, ec: bool = False) -> trustme.LeafCert:
        key = (hostnames, ec)
        if key not in self._leaf_cache:
            kind = trustme.KeyType.ECDSA if ec else trustme.KeyType.RSA
            self._leaf_cache[key] = self.ca.issue_cert(*hostnames, key_type=kind)
        return self._leaf_cache[key]

    def server_context(self, profile: TlsProfile) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.leaf(profile.hostnames, ec=profile.ec_key).configure_cert(ctx)
        ctx.minimum_version = profile.min_version
        ctx.maximum_version = profile.max_version
        ctx.set_ciphers(profile.ciphers)
        if not profile.server_preference:
            ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
        if profile.ecdh_curve:
            ctx.set_ecdh_curve(profile.ecdh_curve)
        return ctx
