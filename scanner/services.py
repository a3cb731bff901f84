"""The services tlsfleet knows: default port, how TLS is reached, and which dialogue."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from scanner.errors import TargetError

TlsMode = Literal["starttls", "implicit", "none"]
Dialogue = Literal["smtp", "imap", "pop3", "http"]


@dataclass(frozen=True, slots=True)
class Service:
    """One kind of endpoint: ``smtp`` on 25 speaks SMTP and upgrades with STARTTLS."""

    name: str
    port: int
    tls_mode: TlsMode
    dialogue: Dialogue

    @property
    def is_mail(self) -> bool:
        return self.dialogue in ("smtp", "imap", "pop3")


SERVICES: dict[str, Service] = {
    s.name: s
    for s in (
        Service("smtp", 25, "starttls", "smtp"),
        Service("submission", 587, "starttls", "smtp"),
        Service("submissions", 465, "implicit", "smtp"),
        Service("imap", 143, "starttls", "imap"),
        Service("imaps", 993, "implicit", "imap"),
        Service("pop3", 110, "starttls", "pop3"),
        Service("pop3s", 995, "implicit", "pop3"),
        Service("https", 443, "implicit", "http"),
    )
}

_BY_PORT = {s.port: s for s in SERVICES.values()}


def service_named(name: str) -> Service:
    """Look a service up by name; unknown names raise :class:`TargetError`."""
    try:
        return SERVICES[name.lower()]
    except KeyError:
        known = ", ".join(sorted(SERVICES))
        raise TargetError(f"unknown service {name!r} (known: {known})") from None


def service_for_port(port: int) -> Service:
    """The default service for a well-known port; other ports need an explicit service."""
    try:
        return _BY_PORT[port]
    except KeyError:
        raise TargetError(f"no default service for port {port}: name one with --service") from None
