"""The demo fleet: a small hosting provider's customers, their domains, and the local
servers those domains lead to — on loopback only.

What the fleet contains is data: four account managers, twelve customers, forty
domains (:data:`DOMAINS`) and the hosts their MX, SRV and web records name
(:data:`HOSTS`), each host with the configuration it is built with (TLS versions,
certificate, STARTTLS, passwords before TLS). ``docs/demo.md`` describes it and the
tests derive from it what a sweep must find.

:func:`demo_fleet` brings it up on ``127.77.0.0/16`` — every address is bound here;
Linux routes all of ``127.0.0.0/8`` to the loopback interface, so nothing else is
touched and root is not needed:

- one real OpenSSL server (thread-based, :mod:`fleet.demo.servers`) per endpoint: SMTP,
  submission, IMAP and POP3 with STARTTLS, their implicit-TLS twins, and HTTPS;
- every endpoint of one service on the same high port on every address (20025 for
  SMTP, 20443 for HTTPS, …, or ports the kernel picks when those are taken), because a
  sweep's port profile names one port per service for MX and web hosts (SRV records
  carry their own ports);
- the DNS zones (:mod:`fleet.demo.dnsserver`) on ``127.77.0.53``: ``provider.test``
  and one zone per customer domain;
- a throw-away CA (:mod:`fleet.demo.pki`) whose file the scanner is told to trust.
"""

from __future__ import annotations

import contextlib
import errno
import ssl
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fleet.demo.dnsserver import DnsServer
from fleet.demo.pki import DemoCA, IssuedCert
from fleet.demo.servers import (
    BaseServer,
    ImapBehaviour,
    ImapServer,
    Pop3Behaviour,
    Pop3Server,
    SmtpBehaviour,
    SmtpServer,
    TlsServer,
)
from fleet.inventory import InventoryRecord
from scanner.discovery import SRV_SERVICES, PortProfile

__all__ = [
    "CUSTOMERS",
    "DNS_IP",
    "DOMAINS",
    "HOSTS",
    "PREFERRED_PORTS",
    "CertKind",
    "DemoCustomer",
    "DemoDomain",
    "DemoEndpoint",
    "DemoHost",
    "RunningFleet",
    "TlsKind",
    "demo_fleet",
    "endpoints_of",
    "inventory_records",
    "names_reaching",
    "zones",
]

#: ``modern``: TLS 1.2 and 1.3, ECDHE with AES-GCM/ChaCha20 only. ``legacy``: TLS 1.0 to
#: 1.3 with every suite OpenSSL has at security level 0 (RSA key exchange, CBC, SHA-1).
#: ``old_only``: TLS 1.0 and 1.1 and nothing newer — it breaks on the cut-off day.
TlsKind = Literal["modern", "legacy", "old_only"]
#: ``expiring``: valid, but for 9 more days only; ``wrong_name``: valid, issued by the
#: demo CA, for a name that is not the one the domain reaches the server by.
CertKind = Literal["valid", "expiring", "expired", "self_signed", "wrong_name"]

#: Where the demo's DNS server listens.
DNS_IP = "127.77.0.53"
#: The port every endpoint of a service listens on, unless it is taken on some address.
PREFERRED_PORTS: Mapping[str, int] = {
    "dns": 20053,
    "smtp": 20025,
    "submission": 20587,
    "submissions": 20465,
    "imap": 20143,
    "imaps": 20993,
    "pop3": 20110,
    "pop3s": 20995,
    "https": 20443,
}
#: Days an ``expiring`` certificate has left.
EXPIRING_DAYS = 9


@dataclass(frozen=True)
class DemoHost:
    """A server the fleet's DNS names, and how it is configured.

    ``plaintext_login``: the mail services with a plaintext phase (SMTP, submission,
    IMAP, POP3) offer a password mechanism before TLS (AUTH PLAIN/LOGIN, IMAP LOGIN
    without LOGINDISABLED, POP3 USER). ``starttls``: whether those services offer
    STARTTLS at all. ``cert_for``: the name a ``wrong_name`` certificate is for.
    """

    name: str
    ip: str
    story: str
    tls: TlsKind = "modern"
    cert: CertKind = "valid"
    starttls: bool = True
    plaintext_login: bool = False
    cert_for: str | None = None


@dataclass(frozen=True)
class DemoCustomer:
    """A customer and its account manager."""

    name: str
    manager: str
    manager_email: str


@dataclass(frozen=True)
class DemoDomain:
    """A hosted domain: its MX hosts (none: a null MX, "accepts no mail"), its RFC
    6186/8314 SRV records (service, host) and the host its apex and ``www`` point to."""

    name: str
    customer: DemoCustomer
    web: DemoHost
    mx: tuple[DemoHost, ...] = ()
    srv: tuple[tuple[str, DemoHost], ...] = ()


# -- the provider's platforms and the customers' own servers ------------------------------

_MX1 = DemoHost("mx1.provider.test", "127.77.1.1", "current MX cluster: TLS 1.2/1.3 only")
_MX2 = DemoHost("mx2.provider.test", "127.77.1.2", "current MX cluster: TLS 1.2/1.3 only")
_MAIL = DemoHost(
    "mail.provider.test",
    "127.77.1.3",
    "current mail platform: TLS 1.2/1.3, passwords only after TLS",
)
_MX_LEGACY = DemoHost(
    "mx-legacy.provider.test",
    "127.77.1.11",
    "old MX: TLS 1.0-1.3 with weak suites, AUTH before STARTTLS",
    tls="legacy",
    plaintext_login=True,
)
_MAIL_LEGACY = DemoHost(
    "mail-legacy.provider.test",
    "127.77.1.12",
    "old mail platform: TLS 1.0-1.3 with weak suites, passwords before STARTTLS",
    tls="legacy",
    plaintext_login=True,
)
_MX_OLD = DemoHost(
    "mx-old.provider.test", "127.77.1.21", "TLS 1.0/1.1 only: breaks on the cut-off day", "old_only"
)
_MAIL_OLD = DemoHost(
    "mail-old.provider.test",
    "127.77.1.22",
    "TLS 1.0/1.1 only: breaks on the cut-off day",
    tls="old_only",
)
_FJORD_MAIL = DemoHost(
    "mail.fjord-outdoor.test",
    "127.77.1.31",
    "customer's own server: no STARTTLS at all, passwords only in clear",
    starttls=False,
    plaintext_login=True,
)
_HARBOUR_MAIL = DemoHost(
    "mail.harbour-pharmacy.test",
    "127.77.1.41",
    "customer's own server: certificate expired a month ago",
    cert="expired",
)
_JUNIPER_MX = DemoHost(
    "mx.juniper-schools.test", "127.77.1.42", "self-signed certificate", cert="self_signed"
)
_KESTREL_MX = DemoHost(
    "mail.kestrel-games.test",
    "127.77.1.43",
    "certificate of the previous hosting company (wrong name)",
    cert="wrong_name",
    cert_for="mx.previous-isp.test",
)
_WEB1 = DemoHost("web1.provider.test", "127.77.2.1", "current web platform: TLS 1.2/1.3")
_WEB2 = DemoHost(
    "web2.provider.test", "127.77.2.2", "old web platform: TLS 1.0-1.3, weak suites", "legacy"
)
_WEB3 = DemoHost(
    "web3.provider.test", "127.77.2.3", "TLS 1.0/1.1 only: breaks on the cut-off day", "old_only"
)
_WEB4 = DemoHost(
    "web4.provider.test", "127.77.2.4", "certificate renewal failed: expired", cert="expired"
)
_WEB5 = DemoHost(
    "web5.provider.test", "127.77.2.5", "customer-managed, self-signed", cert="self_signed"
)
_WEB6 = DemoHost(
    "web6.provider.test",
    "127.77.2.6",
    "serves the platform's default certificate, not the customers' names",
    cert="wrong_name",
    cert_for="web6.provider.test",
)
_WEB7 = DemoHost(
    "web7.provider.test", "127.77.2.7", f"valid, expires in {EXPIRING_DAYS} days", cert="expiring"
)

#: Every host of the fleet.
HOSTS: tuple[DemoHost, ...] = (
    _MX1,
    _MX2,
    _MAIL,
    _MX_LEGACY,
    _MAIL_LEGACY,
    _MX_OLD,
    _MAIL_OLD,
    _FJORD_MAIL,
    _HARBOUR_MAIL,
    _JUNIPER_MX,
    _KESTREL_MX,
    _WEB1,
    _WEB2,
    _WEB3,
    _WEB4,
    _WEB5,
    _WEB6,
    _WEB7,
)


def _all_srv(host: DemoHost) -> tuple[tuple[str, DemoHost], ...]:
    return tuple((service, host) for service in SRV_SERVICES)


_MODERN_MX = (_MX1, _MX2)
_OLD_SRV = (("submissions", _MAIL_OLD), ("imaps", _MAIL_OLD), ("pop3s", _MAIL_OLD))

_ANNA = ("Anna Berg", "anna.berg@provider.test")
_BRUNO = ("Bruno Costa", "bruno.costa@provider.test")
_CHIOMA = ("Chioma Eze", "chioma.eze@provider.test")
_DMITRI = ("Dmitri Volkov", "dmitri.volkov@provider.test")


def _customer(
    name: str,
    manager: tuple[str, str],
    domains: str,
    *,
    mx: tuple[DemoHost, ...],
    srv: tuple[tuple[str, DemoHost], ...] = (),
    web: DemoHost,
    null_mx: Sequence[str] = (),
) -> tuple[DemoDomain, ...]:
    """A customer's domains (``domains``: names below ``.test``, space-separated), all
    with the same mail and web hosts; ``null_mx``: those of them that accept no mail."""
    customer = DemoCustomer(name, *manager)
    return tuple(
        DemoDomain(f"{d}.test", customer, web, *(((), ()) if d in null_mx else (mx, srv)))
        for d in domains.split()
    )


#: Every domain of the fleet, customer by customer.
DOMAINS: tuple[DemoDomain, ...] = (
    *_customer(
        "Alpenrose Bakery",
        _ANNA,
        "alpenrose-bakery alpenrose-cafe backstube-alpenrose alpenrose-catering",
        mx=_MODERN_MX,
        srv=_all_srv(_MAIL),
        web=_WEB1,
    ),
    *_customer(
        "Baltic Freight",
        _ANNA,
        "baltic-freight baltic-cargo balticfreight-tracking ostsee-logistik",
        mx=(_MX_LEGACY,),
        srv=_all_srv(_MAIL_LEGACY),
        web=_WEB2,
    ),
    *_customer(
        "Casa Verde Hotels",
        _ANNA,
        "casaverde-hotels casaverde-booking casa-verde-spa",
        mx=_MODERN_MX,
        web=_WEB4,
    ),
    *_customer(
        "Delta Dental Clinics",
        _BRUNO,
        "deltadental deltadental-kids delta-implants",
        mx=(_MX_OLD,),
        srv=_OLD_SRV,
        web=_WEB3,
    ),
    *_customer(
        "Elbe Architects",
        _BRUNO,
        "elbe-architects elbe-interiors elbe-competitions",
        mx=_MODERN_MX,
        srv=_all_srv(_MAIL),
        web=_WEB1,
    ),
    *_customer(
        "Fjord Outdoor",
        _BRUNO,
        "fjord-outdoor fjord-kayak fjord-camping fjordoutdoor-shop",
        mx=(_FJORD_MAIL,),
        srv=(("imap", _FJORD_MAIL), ("pop3", _FJORD_MAIL)),
        web=_WEB5,
    ),
    *_customer(
        "Granite Legal",
        _CHIOMA,
        "granite-legal granite-notary granitelegal-archive",
        mx=_MODERN_MX,
        web=_WEB1,
    ),
    *_customer(
        "Harbour Pharmacy",
        _CHIOMA,
        "harbour-pharmacy harbour-pharmacy-online harbourrx",
        mx=(_HARBOUR_MAIL,),
        srv=(("imaps", _HARBOUR_MAIL),),
        web=_WEB6,
    ),
    *_customer(
        "Iris Florist",
        _CHIOMA,
        "iris-florist iris-weddings irisflowers",
        mx=(_MX_LEGACY,),
        srv=_all_srv(_MAIL_LEGACY),
        web=_WEB1,
    ),
    *_customer(
        "Juniper Schools",
        _DMITRI,
        "juniper-schools juniper-primary juniper-sports juniper-alumni",
        mx=(_JUNIPER_MX,),
        web=_WEB7,
    ),
    *_customer(
        "Kestrel Games",
        _DMITRI,
        "kestrel-games kestrel-esports kestrel-store",
        mx=(_KESTREL_MX,),
        web=_WEB2,
    ),
    *_customer(
        "Lumen Studio",
        _DMITRI,
        "lumen-studio lumen-photo lumen-portfolio",
        mx=_MODERN_MX,
        srv=_all_srv(_MAIL),
        web=_WEB1,
        null_mx=("lumen-portfolio",),
    ),
)

#: Every customer, with its account manager.
CUSTOMERS: tuple[DemoCustomer, ...] = tuple(dict.fromkeys(d.customer for d in DOMAINS))


def inventory_records() -> list[InventoryRecord]:
    """The fleet's inventory, as ``tlsfleet inventory import`` would read it."""
    return [
        InventoryRecord(
            domain=d.name,
            customer=d.customer.name,
            account_manager=d.customer.manager,
            account_manager_email=d.customer.manager_email,
            tags=("demo",),
        )
        for d in DOMAINS
    ]


def endpoints_of(domain: DemoDomain) -> list[tuple[DemoHost, str, str]]:
    """(host, service, name the domain reaches it by) for every endpoint a sweep with
    the demo's port profile probes for ``domain``: SMTP on its MX hosts, every SRV
    record, HTTPS on its apex and ``www``."""
    found = [(host, "smtp", host.name) for host in domain.mx]
    found += [(host, service, host.name) for service, host in domain.srv]
    found += [(domain.web, "https", name) for name in (domain.name, f"www.{domain.name}")]
    return found


def names_reaching(host: DemoHost) -> list[str]:
    """Every name a domain reaches ``host`` by: its certificate must cover them all."""
    names = {
        name for domain in DOMAINS for h, _, name in endpoints_of(domain) if h.name == host.name
    }
    return sorted(names)


def zones(ports: Mapping[str, int]) -> dict[str, str]:
    """The fleet's DNS zones (origin → zone text) for services on ``ports``."""
    origins = ["provider.test", *(d.name for d in DOMAINS)]
    lines: dict[str, list[str]] = {origin: [] for origin in origins}

    def zone_of(name: str) -> str:
        return max((o for o in origins if name == o or name.endswith(f".{o}")), key=len)

    for host in HOSTS:
        lines[zone_of(host.name)].append(f"{host.name}. A {host.ip}")
    for domain in DOMAINS:
        records = lines[domain.name]
        records += [f"@ A {domain.web.ip}", f"www A {domain.web.ip}"]
        if not domain.mx:
            records.append("@ MX 0 .")  # RFC 7505 null MX
        for preference, host in enumerate(domain.mx, start=1):
            records.append(f"@ MX {preference * 10} {host.name}.")
        for service, host in domain.srv:
            records.append(f"_{service}._tcp SRV 0 1 {ports[service]} {host.name}.")
    return {f"{origin}.": "\n".join(records) + "\n" for origin, records in lines.items()}


# -- bringing it up -------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoEndpoint:
    """One running server: the host it belongs to, its service and where it listens."""

    host: DemoHost
    service: str
    port: int

    @property
    def ip(self) -> str:
        return self.host.ip


@dataclass(frozen=True)
class RunningFleet:
    """The demo fleet while it runs: where its DNS is, which CA to trust, its ports."""

    nameserver: str
    ca_file: Path
    ports: Mapping[str, int]
    endpoints: tuple[DemoEndpoint, ...]

    @property
    def profile(self) -> PortProfile:
        """What a sweep probes: SMTP on MX hosts and HTTPS on the apex and ``www`` on the
        demo's ports, and every SRV record on its own port."""
        return PortProfile(
            mx=(f"smtp:{self.ports['smtp']}",), web=(f"https:{self.ports['https']}",), srv=True
        )


_MODERN_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
_OLD_CIPHERS = "AES128-SHA:AES256-SHA:ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA:@SECLEVEL=0"


def _context(host: DemoHost, ca: DemoCA) -> ssl.SSLContext:
    """The server context ``host`` is built with: versions, suites, certificate."""
    old = host.tls != "modern"
    names = [host.cert_for] if host.cert == "wrong_name" and host.cert_for else names_reaching(host)
    days_valid, days_ago = {"expired": (30, 60), "expiring": (90, 90 - EXPIRING_DAYS)}.get(
        host.cert, (90, 1)
    )
    cert: IssuedCert = ca.issue(
        names[0],
        also=names[1:],
        days_valid=days_valid,
        days_ago=days_ago,
        self_signed=host.cert == "self_signed",
        rsa_key=old,  # RSA key exchange is among the weak suites an old server offers
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert.cert_file, cert.key_file)
    if not old:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(_MODERN_CIPHERS)
        return ctx
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1 on purpose
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        if host.tls == "old_only":
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
            ctx.set_ciphers(_OLD_CIPHERS)
        else:
            ctx.set_ciphers("ALL:@SECLEVEL=0")
    return ctx


def _server(host: DemoHost, service: str, ctx: ssl.SSLContext, port: int) -> BaseServer:
    """The server for one (host, service) on ``port`` (0: the kernel picks)."""
    implicit = service in ("submissions", "imaps", "pop3s")
    if service in ("smtp", "submission", "submissions"):
        behaviour = SmtpBehaviour(
            banner=f"220 {host.name} ESMTP demo\r\n",
            starttls=host.starttls,
            auth_before_tls="PLAIN LOGIN" if host.plaintext_login else None,
        )
        return SmtpServer(ctx, behaviour, host.ip, port=port, implicit=implicit)
    if service in ("imap", "imaps"):
        imap = ImapBehaviour(host.name, host.starttls, login_before_tls=host.plaintext_login)
        return ImapServer(ctx, imap, host.ip, port=port, implicit=implicit)
    if service in ("pop3", "pop3s"):
        pop3 = Pop3Behaviour(host.name, host.starttls, user_before_tls=host.plaintext_login)
        return Pop3Server(ctx, pop3, host.ip, port=port, implicit=implicit)
    return TlsServer(ctx, host.ip, port=port)


_BIND_ATTEMPTS = 20


def _on_one_port(
    make: Callable[[str, int], BaseServer], ips: Sequence[str], preferred: int
) -> list[BaseServer]:
    """One server per address, all on one port: ``preferred`` when it is free on every
    address, else one the kernel offers (that is then free on the others too)."""
    port = preferred
    for _ in range(_BIND_ATTEMPTS):
        made: list[BaseServer] = []
        try:
            for ip in ips:
                made.append(make(ip, port))
                port = made[0].port
            return made
        except OSError as exc:
            for server in made:
                server.stop()
            if exc.errno == errno.EADDRNOTAVAIL:
                raise OSError(
                    exc.errno,
                    f"cannot bind {ip}: the demo needs all of 127.0.0.0/8 on the loopback "
                    "interface (as Linux has it)",
                ) from None
            if exc.errno != errno.EADDRINUSE:
                raise
            port = 0
    raise OSError(errno.EADDRINUSE, f"no port free on every one of {', '.join(ips)}")


def _start_dns(zone_texts: Mapping[str, str]) -> DnsServer:
    """The fleet's DNS server on its preferred port, or one the kernel picks."""
    try:
        return DnsServer(zone_texts, host=DNS_IP, port=PREFERRED_PORTS["dns"])
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        return DnsServer(zone_texts, host=DNS_IP, port=0)


def _start_service(
    service: str, hosts: Mapping[str, DemoHost], contexts: Mapping[str, ssl.SSLContext]
) -> list[tuple[BaseServer, DemoEndpoint]]:
    """Bind ``service`` on every host that has it (by address), all on one port."""

    def make(ip: str, port: int) -> BaseServer:
        host = hosts[ip]
        return _server(host, service, contexts[host.name], port)

    servers = _on_one_port(make, sorted(hosts), PREFERRED_PORTS[service])
    return [(server, DemoEndpoint(hosts[server.ip], service, server.port)) for server in servers]


@contextlib.contextmanager
def demo_fleet(directory: Path) -> Iterator[RunningFleet]:
    """Start the fleet (certificates in ``directory``); stop every server on exit."""
    ca = DemoCA(directory)
    contexts = {host.name: _context(host, ca) for host in HOSTS}
    wanted: dict[str, dict[str, DemoHost]] = {}  # service → ip → host
    for domain in DOMAINS:
        for host, service, _ in endpoints_of(domain):
            wanted.setdefault(service, {})[host.ip] = host
    started: list[tuple[BaseServer, DemoEndpoint]] = []
    ports: dict[str, int] = {}
    try:
        for service in PREFERRED_PORTS:
            if service in wanted:
                started += _start_service(service, wanted[service], contexts)
                ports[service] = started[-1][1].port
        with _start_dns(zones(ports)) as dns:
            ports["dns"] = dns.port
            for server, _ in started:
                server.start()
            yield RunningFleet(
                nameserver=dns.nameserver,
                ca_file=ca.ca_file,
                ports=ports,
                endpoints=tuple(endpoint for _, endpoint in started),
            )
    finally:
        for server, _ in started:
            server.stop()
