"""A small local fleet of varied TLS servers on loopback, for ``tlsfleet demo``.

Nothing here touches the network beyond 127.0.0.0/8: every server binds its own
loopback address and a port the OS picks.
"""

from __future__ import annotations

import contextlib
import ssl
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fleet.demo.pki import DemoCA, IssuedCert
from fleet.demo.servers import BaseServer, SmtpBehaviour, SmtpServer, TlsServer


@dataclass(frozen=True, slots=True)
class DemoEndpoint:
    """One demo server: the name it serves, where it listens, and what it is meant to show."""

    name: str
    ip: str
    port: int
    service: str
    story: str


def _context(cert: IssuedCert, *, legacy: bool, old_only: bool = False) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert.cert_file, cert.key_file)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1 on purpose
        if legacy or old_only:
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.set_ciphers("ALL:@SECLEVEL=0")
        if old_only:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    if not legacy and not old_only:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
    return ctx


@contextlib.contextmanager
def demo_fleet(
    directory: Path, *, base_ip: str = "127.77.0"
) -> Iterator[tuple[Path, list[DemoEndpoint]]]:
    """Start the demo servers; yield the CA file and the endpoints; stop them on exit."""
    ca = DemoCA(directory)
    servers: list[tuple[BaseServer, DemoEndpoint]] = []

    def add(server: BaseServer, name: str, service: str, story: str) -> None:
        servers.append((server, DemoEndpoint(name, server.ip, server.port, service, story)))

    modern_mail = ca.issue("mail.modern.demo")
    legacy_mail = ca.issue("mail.legacy.demo")
    add(
        SmtpServer(
            _context(modern_mail, legacy=False),
            SmtpBehaviour(auth_before_tls=None, auth_after_tls="PLAIN LOGIN"),
            ip=f"{base_ip}.1",
        ),
        "mail.modern.demo", "submission", "TLS 1.2+ only, password only after STARTTLS",
    )  # fmt: skip
    add(
        SmtpServer(_context(legacy_mail, legacy=True), SmtpBehaviour(), ip=f"{base_ip}.2"),
        "mail.legacy.demo", "submission", "TLS 1.0-1.3, weak suites, AUTH PLAIN before TLS",
    )  # fmt: skip
    add(
        SmtpServer(
            _context(legacy_mail, legacy=True),
            SmtpBehaviour(starttls=False, auth_before_tls="PLAIN LOGIN"),
            ip=f"{base_ip}.3",
        ),
        "mail.legacy.demo", "submission", "no STARTTLS at all: passwords only in clear",
    )  # fmt: skip
    add(
        TlsServer(_context(ca.issue("www.modern.demo"), legacy=False), ip=f"{base_ip}.4"),
        "www.modern.demo", "https", "modern HTTPS",
    )  # fmt: skip
    add(
        TlsServer(
            _context(ca.issue("www.old.demo"), legacy=False, old_only=True), ip=f"{base_ip}.5"
        ),
        "www.old.demo", "https", "TLS 1.0/1.1 only: breaks on the cut-off day",
    )  # fmt: skip
    add(
        TlsServer(
            _context(ca.issue("www.expired.demo", days_valid=30, days_ago=60), legacy=False),
            ip=f"{base_ip}.6",
        ),
        "www.expired.demo", "https", "certificate expired a month ago",
    )  # fmt: skip
    add(
        TlsServer(
            _context(ca.issue("www.selfsigned.demo", self_signed=True), legacy=False),
            ip=f"{base_ip}.7",
        ),
        "www.selfsigned.demo", "https", "self-signed certificate",
    )  # fmt: skip
    add(
        TlsServer(_context(ca.issue("www.other.demo"), legacy=False), ip=f"{base_ip}.8"),
        "www.wrongname.demo", "https", "certificate for another name",
    )  # fmt: skip
    for server, _ in servers:
        server.start()
    try:
        yield ca.ca_file, [endpoint for _, endpoint in servers]
    finally:
        for server, _ in servers:
            server.stop()
