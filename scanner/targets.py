"""Target parsing and address policy: ``host[:port]`` strings into checked targets."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

import idna

from scanner.errors import DnsError, PrivateTargetError, TargetError
from scanner.models import Target
from scanner.services import Service, service_for_port, service_named

__all__ = ["TargetSpec", "is_public_address", "normalise_hostname", "parse_target", "resolve"]

_MAX_NAME = 253


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """A parsed, not yet resolved target: a hostname or IP literal, a port, a service."""

    host: str
    port: int
    service: Service
    sni: str | None

    @property
    def is_ip(self) -> bool:
        return _ip_or_none(self.host) is not None


def _ip_or_none(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def normalise_hostname(name: str) -> str:
    """Lower-case A-label form of ``name`` without a trailing dot; bad names raise.

    IDNs are converted with IDNA 2008 (UTS 46 mapping), so ``Bücher.example`` becomes
    ``xn--bcher-kva.example``.
    """
    raw = name.strip()
    if raw.endswith("."):
        raw = raw[:-1]
    if not raw:
        raise TargetError("empty host name")
    if any(c.isspace() for c in raw):
        raise TargetError(f"host name {name!r} contains white space")
    try:
        ascii_name = idna.encode(raw, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise TargetError(f"invalid host name {name!r}: {exc}") from None
    if len(ascii_name) > _MAX_NAME:
        raise TargetError(f"host name {name!r} is longer than {_MAX_NAME} characters")
    for label in ascii_name.split("."):
        if not label or len(label) > 63:
            raise TargetError(f"invalid host name {name!r}: empty or over-long label")
        if label.startswith("-") or label.endswith("-"):
            raise TargetError(f"invalid host name {name!r}: label {label!r} starts/ends with '-'")
        if not all(c.isalnum() or c in "-_" for c in label):
            raise TargetError(f"invalid host name {name!r}: bad character in {label!r}")
    return ascii_name.lower()


def parse_target(text: str, *, service: str | None = None, sni: str | None = None) -> TargetSpec:
    """Parse ``host``, ``host:port``, ``[v6]:port`` or a bare IP into a :class:`TargetSpec`.

    Without ``service`` the port's well-known service is used; without a port, the
    service's default port (443 if neither is given).
    """
    text = text.strip()
    if not text:
        raise TargetError("empty target")
    host, port_text = text, None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise TargetError(f"invalid target {text!r}: missing ']'")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise TargetError(f"invalid target {text!r}")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    port: int | None = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise TargetError(f"invalid port in target {text!r}")
        port = int(port_text)
    svc = service_named(service) if service else None
    if svc is None:
        svc = service_for_port(port) if port is not None else service_named("https")
    if port is None:
        port = svc.port
    ip = _ip_or_none(host)
    host = normalise_hostname(host) if ip is None else ip.compressed
    server_name = normalise_hostname(sni) if sni else (None if ip else host)
    return TargetSpec(host=host, port=port, service=svc, sni=server_name)


def is_public_address(ip: str) -> bool:
    """True only for globally routable unicast addresses (no loopback, private, CGNAT…)."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_global and not addr.is_multicast


async def resolve(spec: TargetSpec, *, allow_private: bool = False) -> list[Target]:
    """Resolve a spec to one :class:`Target` per address, enforcing the address policy."""
    if spec.is_ip:
        addresses = [spec.host]
    else:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(
                spec.host, spec.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
        except socket.gaierror as exc:
            raise DnsError(f"{spec.host}: {exc.strerror}") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not addresses:
            raise DnsError(f"{spec.host}: no address")
    if not allow_private:
        for ip in addresses:
            if not is_public_address(ip):
                raise PrivateTargetError(
                    f"{spec.host} resolves to the non-public address {ip}; scanning private "
                    "and loopback addresses needs --allow-private "
                    "(TLSFLEET_ALLOW_PRIVATE_TARGETS=true for the service)"
                )
    return [
        Target(
            host=spec.host,
            ip=ip,
            port=spec.port,
            service=spec.service.name,
            tls_mode=spec.service.tls_mode,
            sni=spec.sni,
        )
        for ip in addresses
    ]
