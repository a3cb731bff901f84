"""Discovery: a domain into the hosts that serve its mail and web, then an endpoint plan.

:func:`discover` asks DNS (through a caller-built :class:`scanner.dns.Resolver`) for a
domain's MX records (RFC 5321 §5.1 implicit MX, RFC 7505 null MX), its RFC 6186/8314
SRV records, and the addresses of every host they name and of the apex and ``www``.
Every question for one domain is asked concurrently; the resolver's cache makes hosts
shared by many domains cost one query per run.

:func:`plan_endpoints` turns many discoveries into the endpoints to probe, following a
:class:`PortProfile`. Each ``(ip, port, service)`` appears once, however many domains
reach it and through whichever names; the plan remembers every use, so that
:func:`domain_results` can fan one probe's result out to every domain, and which names
lead to each endpoint (:meth:`EndpointPlan.cert_names`), since a certificate depends on
the SNI name as well as on the address.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal, NamedTuple

from scanner.dns import DnsLookupError, HostLookup, Resolver
from scanner.errors import PrivateTargetError, TargetError
from scanner.models import (
    CertificateInfo,
    Discovery,
    DiscoveryStatus,
    DomainResult,
    EndpointResult,
    ErrorInfo,
    HostAddresses,
    MxRecord,
    SrvRecord,
    Target,
)
from scanner.services import Service, service_named
from scanner.targets import is_public_address, normalise_hostname

__all__ = [
    "SRV_SERVICES",
    "EndpointKey",
    "EndpointPlan",
    "EndpointUse",
    "How",
    "PortProfile",
    "discover",
    "domain_results",
    "endpoint_key",
    "normalise_domain",
    "plan_endpoints",
]

#: RFC 6186 / RFC 8314 mail-access services, looked up as ``_<service>._tcp.<domain>``.
SRV_SERVICES: tuple[str, ...] = ("submission", "submissions", "imap", "imaps", "pop3", "pop3s")

#: How a domain reaches an endpoint.
How = Literal["mx", "implicit_mx", "srv", "web", "profile"]

_ALIAS_RULE = {"mx": "RFC 5321 §5.1", "srv": "RFC 2782"}


def normalise_domain(name: str) -> str:
    """The domain's lower-case A-label form without a trailing dot; bad names raise
    :class:`~scanner.errors.TargetError` saying why (IP literals are not domains)."""
    text = name.strip().rstrip(".")
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        pass
    else:
        raise TargetError(f"{name!r} is an IP address, not a domain")
    return normalise_hostname(name)


# -- discovery ---------------------------------------------------------------------------


def _dns_error(error: DnsLookupError) -> ErrorInfo:
    return ErrorInfo(kind=error.kind, phase=error.phase, message=error.message)


def _host_errors(lookup: HostLookup) -> list[ErrorInfo]:
    return [_dns_error(e) for e in lookup.errors]


def _named_target(lookup: HostLookup, role: Literal["mx", "srv"]) -> HostAddresses:
    """An MX or SRV target: an alias is reported as ``cname`` (its addresses kept)."""
    if lookup.canonical_name is None or not lookup.addresses:
        return lookup.to_host_addresses()
    note = (
        f"alias for {lookup.canonical_name}: an {role.upper()} target must not be a CNAME "
        f"({_ALIAS_RULE[role]}); its addresses are used"
    )
    if lookup.errors:
        note += "; " + "; ".join(e.message for e in lookup.errors)
    return HostAddresses(lookup.host, lookup.addresses, status="cname", note=note)


@dataclass
class _Mail:
    status: DiscoveryStatus
    mx: tuple[MxRecord, ...] = ()
    implicit_mx: bool = False
    null_mx: bool = False
    errors: list[ErrorInfo] = field(default_factory=list)


async def _mail(domain: str, resolver: Resolver) -> _Mail:
    answer = await resolver.mx(domain)
    if answer.status == "nxdomain":
        return _Mail("nxdomain")
    if answer.failed:
        assert answer.error is not None
        return _Mail("error", errors=[_dns_error(answer.error)])
    if not answer.records:
        # RFC 5321 §5.1: no MX at all → the domain itself is the mail host.
        apex = await resolver.host(domain)
        if apex.addresses:
            implicit = (MxRecord(0, apex.to_host_addresses()),)
            return _Mail("ok", implicit, implicit_mx=True, errors=_host_errors(apex))
        if apex.status == "error":
            return _Mail("error", errors=_host_errors(apex))
        return _Mail("no_mail")
    errors: list[ErrorInfo] = []
    records = [r for r in answer.records if not r.is_null]
    if not records:
        return _Mail("null_mx", null_mx=True)  # RFC 7505: accepts no mail; not an error
    if len(records) != len(answer.records):
        errors.append(
            ErrorInfo(
                "dns",
                "dns",
                f"{domain} MX: a null MX ('.') next to other MX records is invalid "
                "(RFC 7505 §3); the null MX was ignored",
            )
        )
    names = list(dict.fromkeys(r.exchange for r in records))
    lookups = dict(zip(names, await asyncio.gather(*map(resolver.host, names)), strict=True))
    for lookup in lookups.values():
        errors.extend(_host_errors(lookup))
    mx = tuple(MxRecord(r.preference, _named_target(lookups[r.exchange], "mx")) for r in records)
    return _Mail("ok", mx, errors=errors)


async def _srv(
    domain: str, service: str, resolver: Resolver
) -> tuple[list[SrvRecord], list[ErrorInfo]]:
    answer = await resolver.srv(f"_{service}._tcp.{domain}")
    if answer.failed:
        assert answer.error is not None
        return [], [_dns_error(answer.error)]
    names = list(dict.fromkeys(r.target for r in answer.records if r.offered))
    lookups = dict(zip(names, await asyncio.gather(*map(resolver.host, names)), strict=True))
    errors = [e for lookup in lookups.values() for e in _host_errors(lookup)]
    records = [
        SrvRecord(
            service=service,
            priority=r.priority,
            weight=r.weight,
            port=r.port,
            target=_named_target(lookups[r.target], "srv") if r.offered else None,
        )
        for r in answer.records
    ]
    return records, errors


async def discover(
    domain: str, resolver: Resolver, *, web: bool = True, srv: bool = True
) -> Discovery:
    """What DNS says serves ``domain``'s mail (MX, implicit MX, null MX, SRV) and web
    (the apex and ``www``, when ``web``).

    The name is normalised first (IDN → A-label, case, trailing dot); an invalid one
    raises :class:`~scanner.errors.TargetError` before any query. DNS failures never
    raise: they set ``status`` to ``error`` when the mail hosts could not be determined,
    and are listed in ``errors`` in any case. Web hosts that do not exist are left out.
    """
    name = normalise_domain(domain)
    services = SRV_SERVICES if srv else ()
    web_names = (name, f"www.{name}") if web else ()
    mail, srv_answers, web_hosts = await asyncio.gather(
        _mail(name, resolver),
        asyncio.gather(*(_srv(name, s, resolver) for s in services)),
        asyncio.gather(*map(resolver.host, web_names)),
    )
    if mail.status == "nxdomain":
        # RFC 8020: nothing exists below a name that does not exist.
        return Discovery(domain=name, status="nxdomain")
    errors = list(mail.errors)
    srv_records: list[SrvRecord] = []
    for records, srv_errors in srv_answers:
        srv_records.extend(records)
        errors.extend(srv_errors)
    web_found: list[HostAddresses] = []
    for lookup in web_hosts:
        if lookup.status != "nxdomain":
            web_found.append(lookup.to_host_addresses())
            errors.extend(_host_errors(lookup))
    return Discovery(
        domain=name,
        status=mail.status,
        mx=mail.mx,
        implicit_mx=mail.implicit_mx,
        null_mx=mail.null_mx,
        srv=tuple(srv_records),
        web=tuple(web_found),
        errors=tuple(dict.fromkeys(errors)),
    )


# -- the endpoint plan --------------------------------------------------------------------

_PROVIDER_SERVICES = ("submissions", "submission", "imaps", "imap", "pop3s", "pop3")


class EndpointKey(NamedTuple):
    """One probe set: an address, a port and the service spoken there."""

    ip: str
    port: int
    service: str


def endpoint_key(target: Target) -> EndpointKey:
    """The key of the endpoint a :class:`~scanner.models.Target` (or its result) names."""
    return EndpointKey(target.ip, target.port, target.service)


@dataclass(frozen=True, slots=True)
class EndpointUse:
    """One domain's reason to probe an endpoint: ``host`` led there, found ``how``."""

    domain: str
    host: str
    how: How


def _probe(entry: str) -> tuple[Service, int]:
    """``"smtp"`` → (smtp, 25); ``"https:8443"`` → (https, 8443); unknown → TargetError."""
    name, _, port_text = entry.partition(":")
    service = service_named(name.strip())
    if not port_text:
        return service, service.port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise TargetError(f"invalid port in port profile entry {entry!r}")
    return service, int(port_text)


@dataclass(frozen=True)
class PortProfile:
    """Which services to probe on which discovered hosts.

    Entries are service names at their default port (``"smtp"``) or ``service:port``
    (``"https:8443"``). ``mx``: on MX hosts (and implicit-MX hosts). ``srv``: probe what
    RFC 6186/8314 SRV records name, on their port. ``provider_hosts``: the provider's
    own mail host names; wherever one of them turns up as an MX or SRV target, the
    ``provider`` services (465, 587, 993, 143, 995, 110 by default) are probed on it too.
    ``web``: on the apex and ``www``. Bad entries raise :class:`TargetError`.
    """

    mx: tuple[str, ...] = ("smtp",)
    srv: bool = True
    provider_hosts: tuple[str, ...] = ()
    provider: tuple[str, ...] = _PROVIDER_SERVICES
    web: tuple[str, ...] = ("https",)

    @property
    def looks_up(self) -> dict[str, bool]:
        """What :func:`discover` must ask DNS for this profile: no SRV queries when SRV
        targets are not probed, no apex/``www`` lookups when no web service is."""
        return {"web": bool(self.web), "srv": self.srv}

    def __post_init__(self) -> None:
        # Accept any iterable of strings (or one string), keep tuples: hashable, immutable.
        for name in ("mx", "provider", "web", "provider_hosts"):
            raw = getattr(self, name)
            object.__setattr__(self, name, (raw,) if isinstance(raw, str) else tuple(raw))
        for entry in (*self.mx, *self.provider, *self.web):
            _probe(entry)
        hosts = tuple(dict.fromkeys(normalise_hostname(h) for h in self.provider_hosts))
        object.__setattr__(self, "provider_hosts", hosts)

    def probes(self, group: Literal["mx", "provider", "web"]) -> tuple[tuple[Service, int], ...]:
        """The (service, port) pairs of one group."""
        entries: tuple[str, ...] = getattr(self, group)
        return tuple(_probe(e) for e in entries)


def _ip_order(key: EndpointKey) -> tuple[int, bytes, int, str]:
    ip = ipaddress.ip_address(key.ip)
    return ip.version, ip.packed, key.port, key.service


@dataclass(frozen=True)
class EndpointPlan:
    """Unique endpoints to probe, and every domain's use of each.

    ``targets``: one :class:`~scanner.models.Target` per ``(ip, port, service)``, in
    address order; its host and SNI are the first (alphabetically) of the names that
    lead there. ``rejected``: endpoints left out by the address policy (private or
    loopback addresses), with the reason; :func:`domain_results` reports them as
    ``private_target`` errors.
    """

    targets: tuple[Target, ...]
    discoveries: tuple[Discovery, ...]
    rejected: Mapping[EndpointKey, str]
    _uses: Mapping[EndpointKey, tuple[EndpointUse, ...]] = field(repr=False)
    _by_domain: Mapping[str, Mapping[EndpointKey, str]] = field(repr=False)
    _by_key: Mapping[EndpointKey, Target] = field(repr=False)

    def keys(self) -> Iterator[EndpointKey]:
        """Every endpoint the discoveries lead to, probed or rejected."""
        return iter(self._uses)

    def target(self, key: EndpointKey) -> Target:
        """The target probed for ``key`` (KeyError for unknown or rejected endpoints)."""
        return self._by_key[key]

    def uses(self, key: EndpointKey) -> tuple[EndpointUse, ...]:
        """Every (domain, host, how) that leads to ``key``, in discovery order."""
        return self._uses.get(key, ())

    def cert_names(self, key: EndpointKey) -> set[str]:
        """The distinct SNI names ``key`` is reached through: one certificate each."""
        return {use.host for use in self._uses.get(key, ())}

    def cert_targets(self) -> Iterator[Target]:
        """One target per (ip, port, SNI name) — what a certificate fetch needs."""
        for target in self.targets:
            for name in sorted(self.cert_names(endpoint_key(target))):
                yield replace(target, host=name, sni=name)

    def endpoints(self, domain: str) -> Mapping[EndpointKey, str]:
        """The endpoints ``domain`` uses, each with the first host name leading there."""
        return self._by_domain.get(normalise_domain(domain), {})


class _PlanBuilder:
    """Collects every (endpoint, use) pair, in discovery order, deduplicated."""

    def __init__(self, profile: PortProfile) -> None:
        self.profile = profile
        self.mx_probes = profile.probes("mx")
        self.provider_probes = profile.probes("provider")
        self.web_probes = profile.probes("web")
        self.provider_hosts = frozenset(profile.provider_hosts)
        self.discoveries: dict[str, Discovery] = {}
        # Dicts as ordered sets: the first use/name found stays first.
        self.uses: dict[EndpointKey, dict[EndpointUse, None]] = {}
        self.by_domain: dict[str, dict[EndpointKey, str]] = {}

    def add_discovery(self, discovery: Discovery) -> None:
        if discovery.domain in self.discoveries:
            return
        self.discoveries[discovery.domain] = discovery
        self.by_domain[discovery.domain] = {}
        how: How = "implicit_mx" if discovery.implicit_mx else "mx"
        mail_hosts: list[HostAddresses] = []
        for record in discovery.mx:
            self.add(discovery.domain, record.target, self.mx_probes, how)
            mail_hosts.append(record.target)
        if self.profile.srv:
            for srv in discovery.srv:
                if srv.target is not None and srv.port:
                    probe = (service_named(srv.service), srv.port)
                    self.add(discovery.domain, srv.target, [probe], "srv")
                    mail_hosts.append(srv.target)
        for host in dict.fromkeys(h for h in mail_hosts if h.host in self.provider_hosts):
            self.add(discovery.domain, host, self.provider_probes, "profile")
        for host in discovery.web:
            self.add(discovery.domain, host, self.web_probes, "web")

    def add(
        self, domain: str, host: HostAddresses, probes: Iterable[tuple[Service, int]], how: How
    ) -> None:
        use = EndpointUse(domain, host.host, how)
        mine = self.by_domain[domain]
        for service, port in probes:
            for ip in host.addresses:
                key = EndpointKey(ip, port, service.name)
                self.uses.setdefault(key, {})[use] = None
                mine.setdefault(key, host.host)


def plan_endpoints(
    discoveries: Iterable[Discovery], profile: PortProfile, *, allow_private: bool = False
) -> EndpointPlan:
    """The endpoints ``profile`` asks for on the discovered hosts, each one once.

    A discovery repeated for the same domain is used once (the first). Unless
    ``allow_private``, endpoints on non-public addresses are not probed but listed in
    ``rejected`` — a customer's DNS must not turn the scanner onto internal networks.
    """
    builder = _PlanBuilder(profile)
    for discovery in discoveries:
        builder.add_discovery(discovery)
    uses, by_domain = builder.uses, builder.by_domain
    rejected: dict[EndpointKey, str] = {}
    by_key: dict[EndpointKey, Target] = {}
    for key in sorted(uses, key=_ip_order):
        if not allow_private and not is_public_address(key.ip):
            rejected[key] = (
                f"{key.ip} is not a public address; scanning private and loopback "
                "addresses must be allowed explicitly"
            )
            continue
        name = min(use.host for use in uses[key])
        service = service_named(key.service)
        by_key[key] = Target(name, key.ip, key.port, service.name, service.tls_mode, name)
    return EndpointPlan(
        targets=tuple(by_key.values()),
        discoveries=tuple(builder.discoveries.values()),
        rejected=rejected,
        _uses={key: tuple(found) for key, found in uses.items()},
        _by_domain=by_domain,
        _by_key=by_key,
    )


def domain_results(
    plan: EndpointPlan,
    results: Mapping[EndpointKey, EndpointResult],
    *,
    certificates: Mapping[tuple[EndpointKey, str], CertificateInfo] | None = None,
) -> list[DomainResult]:
    """Fan endpoint results out into one :class:`~scanner.models.DomainResult` per
    discovered domain, in the plan's order.

    ``results`` holds one result per probed endpoint (``plan.targets``; a missing one
    raises :class:`KeyError`). Where ``certificates`` has the certificate fetched for an
    endpoint under the name *this* domain reaches it by, the domain's copy of the result
    carries that name (host, SNI) and that certificate; otherwise the shared result is
    used as it is. Rejected endpoints appear as ``private_target`` errors.
    """
    documents: list[DomainResult] = []
    for discovery in plan.discoveries:
        endpoints: list[EndpointResult] = []
        for key, host in plan._by_domain[discovery.domain].items():
            if key in plan.rejected:
                endpoints.append(_rejected(key, host, plan.rejected[key]))
                continue
            try:
                result = results[key]
            except KeyError:
                raise KeyError(
                    f"no result for endpoint {key.ip} port {key.port} "
                    f"({key.service}), used by {discovery.domain}"
                ) from None
            certificate = certificates.get((key, host)) if certificates else None
            if certificate is not None:
                target = replace(result.target, host=host, sni=host)
                result = replace(result, target=target, certificate=certificate)
            endpoints.append(result)
        documents.append(DomainResult(discovery.domain, discovery, tuple(endpoints)))
    return documents


def _rejected(key: EndpointKey, host: str, reason: str) -> EndpointResult:
    service = service_named(key.service)
    target = Target(host, key.ip, key.port, service.name, service.tls_mode, host)
    error = PrivateTargetError(f"{host} ({key.ip}): {reason}", phase="plan")
    return EndpointResult(
        target=target,
        status="error",
        error=ErrorInfo(kind=error.kind, phase=error.phase, message=error.message),
    )
