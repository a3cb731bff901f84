"""The fleet summary of one sweep: what ``tlsfleet demo`` prints at the end.

Two read-only queries (:func:`sweep_owners`, :func:`sweep_exposure`) load, for every
domain of the sweep, its customer and account manager, and for every use of an endpoint
by a domain (through which host name) the endpoint's result and the certificate seen
under that name. :func:`summarise` — pure, no database — turns them into a
:class:`FleetSummary`: endpoints by service and protocol, and per finding (TLS 1.0/1.1,
TLS 1.0/1.1 only, passwords before TLS, no STARTTLS, certificate problems, certificates
about to expire) the endpoints, domains, customers and account managers affected.

The queries belong with the other repositories in :mod:`fleet.repositories` once the
API shows the same view; they live here while the demo is their only user.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.db.models import (
    AccountManager,
    Customer,
    Domain,
    DomainEndpoint,
    Endpoint,
    ScanCertificate,
    ScanResult,
    SweepDomain,
)
from scanner.models import PROTOCOLS

__all__ = [
    "EXPIRY_WARNING_DAYS",
    "FINDINGS",
    "EndpointRef",
    "Exposure",
    "FindingSummary",
    "FleetSummary",
    "Owner",
    "summarise",
    "sweep_exposure",
    "sweep_owners",
]

#: A valid certificate with fewer days left than this is reported as expiring.
EXPIRY_WARNING_DAYS = 30

_LEGACY = PROTOCOLS[:4]  # SSLv2, SSLv3, TLS 1.0, TLS 1.1
_CURRENT = PROTOCOLS[4:]  # TLS 1.2, TLS 1.3


@dataclass(frozen=True, slots=True)
class Owner:
    """A domain of the sweep, what discovery said about it, and who it belongs to."""

    domain: str
    discovery: str
    customer: str
    manager: str | None
    manager_email: str | None


@dataclass(frozen=True, slots=True)
class EndpointRef:
    """An endpoint as the summary names it: the host it is scanned under and where."""

    host: str
    ip: str
    port: int
    service: str

    def __str__(self) -> str:
        return f"{self.host} {self.ip}:{self.port} {self.service}"

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "ip": self.ip, "port": self.port, "service": self.service}


@dataclass(frozen=True, slots=True)
class Exposure:
    """One domain's use of one endpoint in a sweep (through ``host``), with the
    endpoint's result (``status`` None: no result stored) and the certificate's status
    and days left as seen under ``host``."""

    domain: str
    customer: str
    manager: str | None
    host: str
    endpoint_id: int
    endpoint: EndpointRef
    status: str | None
    error_kind: str | None
    protocols: Mapping[str, bool | None]
    plaintext_before_tls: bool | None
    starttls_offered: bool | None
    cert_status: str | None
    cert_days_left: int | None


async def sweep_owners(session: AsyncSession, sweep_id: int) -> list[Owner]:
    """Every domain of the sweep with its discovery status, customer and manager."""
    rows = await session.execute(
        select(
            Domain.name,
            SweepDomain.status,
            Customer.name,
            AccountManager.name,
            AccountManager.email,
        )
        .join(SweepDomain, SweepDomain.domain_id == Domain.id)
        .join(Customer, Customer.id == Domain.customer_id)
        .outerjoin(AccountManager, AccountManager.id == Customer.account_manager_id)
        .where(SweepDomain.sweep_id == sweep_id)
        .order_by(Domain.name)
    )
    return [Owner(*row) for row in rows]


async def sweep_exposure(session: AsyncSession, sweep_id: int) -> list[Exposure]:
    """Every (domain, endpoint, host name) of the sweep with the endpoint's result and
    the certificate under that name: an extra certificate fetched for it when there is
    one, else the result's own (fetched under the endpoint's first name)."""
    extra_cert = ScanCertificate.certificate
    stmt = (
        select(
            Domain.name.label("domain"),
            Customer.name.label("customer"),
            AccountManager.name.label("manager"),
            DomainEndpoint.host,
            Endpoint.id.label("endpoint_id"),
            Endpoint.host.label("endpoint_host"),
            Endpoint.ip,
            Endpoint.port,
            Endpoint.service,
            ScanResult.status,
            ScanResult.error_kind,
            ScanResult.ssl2,
            ScanResult.ssl3,
            ScanResult.tls10,
            ScanResult.tls11,
            ScanResult.tls12,
            ScanResult.tls13,
            ScanResult.plaintext_before_tls,
            ScanResult.starttls_offered,
            ScanResult.cert_status,
            ScanResult.document[("certificate", "days_left")].as_integer().label("days_left"),
            ScanCertificate.sni.label("extra_sni"),
            extra_cert["status"].as_string().label("extra_status"),
            extra_cert["days_left"].as_integer().label("extra_days_left"),
        )
        .select_from(DomainEndpoint)
        .join(Domain, Domain.id == DomainEndpoint.domain_id)
        .join(Customer, Customer.id == Domain.customer_id)
        .outerjoin(AccountManager, AccountManager.id == Customer.account_manager_id)
        .join(Endpoint, Endpoint.id == DomainEndpoint.endpoint_id)
        .outerjoin(
            ScanResult,
            and_(
                ScanResult.sweep_id == DomainEndpoint.sweep_id,
                ScanResult.endpoint_id == DomainEndpoint.endpoint_id,
            ),
        )
        .outerjoin(
            ScanCertificate,
            and_(
                ScanCertificate.sweep_id == DomainEndpoint.sweep_id,
                ScanCertificate.endpoint_id == DomainEndpoint.endpoint_id,
                ScanCertificate.sni == DomainEndpoint.host,
            ),
        )
        .where(DomainEndpoint.sweep_id == sweep_id)
        .order_by(Domain.name, Endpoint.ip, Endpoint.port, Endpoint.service, DomainEndpoint.host)
    )
    exposures: list[Exposure] = []
    for row in await session.execute(stmt):
        flags = (row.ssl2, row.ssl3, row.tls10, row.tls11, row.tls12, row.tls13)
        extra = row.extra_sni is not None
        exposures.append(
            Exposure(
                domain=row.domain,
                customer=row.customer,
                manager=row.manager,
                host=row.host,
                endpoint_id=row.endpoint_id,
                endpoint=EndpointRef(row.endpoint_host, row.ip, row.port, row.service),
                status=row.status,
                error_kind=row.error_kind,
                protocols=dict(zip(PROTOCOLS, flags, strict=True)),
                plaintext_before_tls=row.plaintext_before_tls,
                starttls_offered=row.starttls_offered,
                cert_status=row.extra_status if extra else row.cert_status,
                cert_days_left=row.extra_days_left if extra else row.days_left,
            )
        )
    return exposures


# -- findings --------------------------------------------------------------------------------


def _accepts_legacy(e: Exposure) -> bool:
    return any(e.protocols.get(v) is True for v in _LEGACY)


def _legacy_only(e: Exposure) -> bool:
    return _accepts_legacy(e) and not any(e.protocols.get(v) is True for v in _CURRENT)


def _certificate_problem(e: Exposure) -> bool:
    return e.cert_status is not None and e.cert_status != "valid"


def _expiring(e: Exposure) -> bool:
    return (
        e.cert_status == "valid"
        and e.cert_days_left is not None
        and e.cert_days_left < EXPIRY_WARNING_DAYS
    )


@dataclass(frozen=True, slots=True)
class _Finding:
    id: str
    title: str
    #: Short form for tables.
    label: str
    test: Callable[[Exposure], bool]


#: What the summary looks for, in the order it reports: (id, title, test).
FINDINGS: tuple[_Finding, ...] = (
    _Finding("legacy_tls", "TLS 1.0/1.1 (or older) accepted", "TLS 1.0/1.1", _accepts_legacy),
    _Finding(
        "legacy_only",
        "TLS 1.0/1.1 only: breaks on the cut-off day",
        "TLS 1.0/1.1 only",
        _legacy_only,
    ),
    _Finding(
        "plaintext_login",
        "password accepted before TLS",
        "password before TLS",
        lambda e: e.plaintext_before_tls is True,
    ),
    _Finding(
        "no_starttls", "no STARTTLS offered", "no STARTTLS", lambda e: e.starttls_offered is False
    ),
    _Finding("certificate", "certificate problem", "certificate", _certificate_problem),
    _Finding(
        "certificate_expiring",
        f"certificate expires within {EXPIRY_WARNING_DAYS} days",
        "certificate expiring",
        _expiring,
    ),
)


@dataclass(frozen=True, slots=True)
class FindingSummary:
    """Who and what one finding affects."""

    id: str
    title: str
    label: str
    endpoints: tuple[EndpointRef, ...]
    domains: tuple[str, ...]
    customers: tuple[str, ...]
    managers: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "label": self.label,
            "endpoints": [e.to_dict() for e in self.endpoints],
            "domains": list(self.domains),
            "customers": list(self.customers),
            "account_managers": list(self.managers),
        }


@dataclass(frozen=True, slots=True)
class CustomerLine:
    """One customer in the per-manager view: its domains and the findings it has."""

    name: str
    domains: int
    findings: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ManagerLine:
    """One account manager and their customers (``name`` None: customers without one)."""

    name: str | None
    email: str | None
    customers: tuple[CustomerLine, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "email": self.email,
            "customers": [
                {"name": c.name, "domains": c.domains, "findings": list(c.findings)}
                for c in self.customers
            ],
        }


@dataclass(frozen=True, slots=True)
class FleetSummary:
    """The fleet after one sweep, as the demo reports it (:meth:`to_dict`: its JSON)."""

    domains: int
    customers: int
    managers: int
    discovery: Mapping[str, int]
    endpoints: int
    uses: int
    results: Mapping[str, int]
    by_service: Mapping[str, int]
    protocols: Mapping[str, int]
    errors: Mapping[str, int]
    certificates: Mapping[str, int]
    findings: tuple[FindingSummary, ...]
    by_manager: tuple[ManagerLine, ...]

    def finding(self, finding_id: str) -> FindingSummary:
        """One finding by id (KeyError for an unknown id)."""
        for found in self.findings:
            if found.id == finding_id:
                return found
        raise KeyError(finding_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "inventory": {
                "domains": self.domains,
                "customers": self.customers,
                "account_managers": self.managers,
            },
            "discovery": dict(self.discovery),
            "endpoints": {
                "total": self.endpoints,
                "uses": self.uses,
                "results": dict(self.results),
                "by_service": dict(self.by_service),
                "errors": dict(self.errors),
            },
            "protocols": dict(self.protocols),
            "certificates": dict(self.certificates),
            "findings": {f.id: f.to_dict() for f in self.findings},
            "account_managers": [m.to_dict() for m in self.by_manager],
        }


def _per_endpoint(exposures: Iterable[Exposure]) -> dict[int, Exposure]:
    """The first use of every endpoint (endpoint-level facts are the same in each)."""
    first: dict[int, Exposure] = {}
    for e in exposures:
        first.setdefault(e.endpoint_id, e)
    return first


def _summarise_finding(
    finding: _Finding, exposures: Sequence[Exposure], managers: Mapping[str, str | None]
) -> FindingSummary:
    hit = [e for e in exposures if finding.test(e)]
    endpoints = sorted(
        {e.endpoint_id: e.endpoint for e in hit}.values(),
        key=lambda r: (r.host, r.ip, r.port, r.service),
    )
    customers = sorted({e.customer for e in hit})
    return FindingSummary(
        id=finding.id,
        title=finding.title,
        label=finding.label,
        endpoints=tuple(endpoints),
        domains=tuple(sorted({e.domain for e in hit})),
        customers=tuple(customers),
        managers=tuple(sorted({m for c in customers if (m := managers.get(c)) is not None})),
    )


def summarise(owners: Sequence[Owner], exposures: Sequence[Exposure]) -> FleetSummary:
    """The summary of a sweep from its :func:`sweep_owners` and :func:`sweep_exposure`."""
    managers = {o.customer: o.manager for o in owners}
    emails = {o.manager: o.manager_email for o in owners}
    endpoints = _per_endpoint(exposures)
    results = Counter(e.status or "missing" for e in endpoints.values())
    protocols = {
        v: sum(1 for e in endpoints.values() if e.protocols.get(v) is True) for v in PROTOCOLS
    }
    # An endpoint counts once per problem, however many names show it.
    problems = {(e.endpoint_id, str(e.cert_status)) for e in exposures if _certificate_problem(e)}
    certificates = Counter(status for _, status in problems)
    findings = tuple(_summarise_finding(f, exposures, managers) for f in FINDINGS)
    by_customer: dict[str, set[str]] = {}
    for f in findings:
        for customer in f.customers:
            by_customer.setdefault(customer, set()).add(f.id)
    order = [f.id for f in FINDINGS]
    domain_counts = Counter(o.customer for o in owners)
    lines: dict[str | None, list[CustomerLine]] = {}
    for customer in sorted(domain_counts):
        found = sorted(by_customer.get(customer, ()), key=order.index)
        line = CustomerLine(customer, domain_counts[customer], tuple(found))
        lines.setdefault(managers[customer], []).append(line)
    return FleetSummary(
        domains=len(owners),
        customers=len(domain_counts),
        managers=len({m for m in managers.values() if m is not None}),
        discovery=dict(sorted(Counter(o.discovery for o in owners).items())),
        endpoints=len(endpoints),
        uses=len(exposures),
        results=dict(sorted(results.items())),
        by_service=dict(sorted(Counter(e.endpoint.service for e in endpoints.values()).items())),
        protocols=protocols,
        errors=dict(
            sorted(Counter(str(e.error_kind) for e in endpoints.values() if e.error_kind).items())
        ),
        certificates=dict(sorted(certificates.items())),
        findings=findings,
        by_manager=tuple(
            ManagerLine(name, emails.get(name), tuple(customers))
            for name, customers in sorted(lines.items(), key=lambda kv: (kv[0] is None, kv[0]))
        ),
    )
