"""What the built-in dashboard (``api/dashboard``) and ``/metrics`` read beyond the API's
own repositories: log-in sessions, worst offenders, a customer's domains, a domain's
history, a sweep's errors by kind, and the latest judged sweep's findings by severity.

Sessions store only the SHA-256 of the random id the browser holds; a session is good
while it has not expired *and* its API key is not revoked, so revoking a key ends its
sessions at once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, distinct, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.db.models import (
    AccountManager,
    ApiKey,
    Customer,
    DashboardSession,
    Domain,
    DomainEndpoint,
    DomainEndpointLatest,
    EndpointLatest,
    Finding,
    FindingRun,
    ScanResult,
    Sweep,
    SweepDomain,
)
from fleet.repositories.reports import LEGACY_MAX_RANK

__all__ = [
    "DomainSummary",
    "DomainSweep",
    "Offender",
    "OpenedSession",
    "close_session",
    "customer_domains",
    "domain_history",
    "find_session",
    "findings_by_severity",
    "open_session",
    "sweep_errors",
    "worst_offenders",
]

#: Below TLS 1.2 as the highest version: the endpoint breaks on the cut-off day.
_MODERN_RANK = 4


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# -- sessions ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenedSession:
    """A session just opened: the id for the cookie (never stored) and its form token."""

    token: str
    csrf_token: str
    expires_at: dt.datetime


async def open_session(
    session: AsyncSession, key_id: int, *, lifetime: dt.timedelta
) -> OpenedSession:
    """A new session for the key (flushed); expired sessions of any key are removed."""
    await session.execute(delete(DashboardSession).where(DashboardSession.expires_at < func.now()))
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    expires = dt.datetime.now(dt.UTC) + lifetime
    session.add(
        DashboardSession(digest=_digest(token), key_id=key_id, csrf_token=csrf, expires_at=expires)
    )
    await session.flush()
    return OpenedSession(token, csrf, expires)


async def find_session(session: AsyncSession, token: str) -> tuple[ApiKey, str] | None:
    """The key and form token of a live session: not expired, its key not revoked."""
    row = (
        await session.execute(
            select(ApiKey, DashboardSession.csrf_token)
            .join(DashboardSession, DashboardSession.key_id == ApiKey.id)
            .where(
                DashboardSession.digest == _digest(token),
                DashboardSession.expires_at > func.now(),
                ApiKey.revoked_at.is_(None),
            )
        )
    ).one_or_none()
    return None if row is None else (row[0], str(row[1]))


async def close_session(session: AsyncSession, token: str) -> bool:
    """Delete a session (log-out); False if there was none."""
    gone = await session.scalar(
        delete(DashboardSession)
        .where(DashboardSession.digest == _digest(token))
        .returning(DashboardSession.digest)
    )
    return gone is not None


# -- worst offenders ----------------------------------------------------------------------------


def _problems(e: Any) -> dict[str, Any]:
    """The problems the dashboard counts per customer and domain, by label."""
    return {
        "breaks": e.highest_protocol < _MODERN_RANK,
        "legacy": e.lowest_protocol <= LEGACY_MAX_RANK,
        "plaintext": e.plaintext_before_tls.is_(True),
        "starttls_missing": e.starttls_offered.is_(False),
        "cert_expired": e.cert_not_after < func.now(),
        "errors": e.status == "error",
    }


def _problem_counts(e: Any) -> list[Any]:
    return [func.count(e.endpoint_id).label("endpoints")] + [
        func.count(e.endpoint_id).filter(condition).label(label)
        for label, condition in _problems(e).items()
    ]


@dataclass(frozen=True, slots=True)
class Offender:
    """A customer and the problems of the endpoints its domains use now (each once)."""

    customer_id: int
    customer: str
    account_manager: str | None
    endpoints: int
    breaks: int
    legacy: int
    plaintext: int
    starttls_missing: int
    cert_expired: int
    errors: int


async def worst_offenders(
    session: AsyncSession, *, manager: int | None, limit: int = 20
) -> list[Offender]:
    """Customers with a problem, worst first: most endpoints that break at the cut-off,
    then legacy TLS, passwords before TLS, STARTTLS missing, expired certificates.
    ``manager``: only that account manager's customers."""
    uses = (
        select(Domain.customer_id, DomainEndpointLatest.endpoint_id)
        .join(Domain, Domain.id == DomainEndpointLatest.domain_id)
        .distinct()
    )
    if manager is not None:
        uses = uses.join(Customer, Customer.id == Domain.customer_id).where(
            Customer.account_manager_id == manager
        )
    u = uses.subquery("u")
    e = EndpointLatest.__table__.c
    counts = _problem_counts(e)
    stmt = (
        select(Customer.id, Customer.name, AccountManager.name.label("manager"), *counts)
        .select_from(u)
        .join(EndpointLatest, EndpointLatest.endpoint_id == u.c.endpoint_id)
        .join(Customer, Customer.id == u.c.customer_id)
        .outerjoin(AccountManager, AccountManager.id == Customer.account_manager_id)
        .group_by(Customer.id, Customer.name, AccountManager.name)
    )
    stmt = stmt.having(
        or_(*(func.count(e.endpoint_id).filter(c) > 0 for c in _problems(e).values()))
    ).order_by(*(c.desc() for c in counts[1:]), Customer.name)
    rows = (await session.execute(stmt.limit(limit))).all()
    return [
        Offender(
            r.id,
            r.name,
            r.manager,
            r.endpoints,
            r.breaks,
            r.legacy,
            r.plaintext,
            r.starttls_missing,
            r.cert_expired,
            r.errors,
        )
        for r in rows
    ]


# -- a customer, a domain -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DomainSummary:
    """A domain and the problems of the endpoints it uses now."""

    id: int
    name: str
    active: bool
    endpoints: int
    breaks: int
    legacy: int
    plaintext: int
    starttls_missing: int
    cert_expired: int
    errors: int


async def customer_domains(session: AsyncSession, customer_id: int) -> list[DomainSummary]:
    """The customer's domains by name, each with its current endpoints' problems."""
    e = EndpointLatest.__table__.c
    rows = await session.execute(
        select(Domain.id, Domain.name, Domain.active, *_problem_counts(e))
        .select_from(Domain)
        .outerjoin(DomainEndpointLatest, DomainEndpointLatest.domain_id == Domain.id)
        .outerjoin(EndpointLatest, EndpointLatest.endpoint_id == DomainEndpointLatest.endpoint_id)
        .where(Domain.customer_id == customer_id)
        .group_by(Domain.id, Domain.name, Domain.active)
        .order_by(Domain.name)
    )
    return [
        DomainSummary(
            r.id,
            r.name,
            r.active,
            r.endpoints,
            r.breaks,
            r.legacy,
            r.plaintext,
            r.starttls_missing,
            r.cert_expired,
            r.errors,
        )
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class DomainSweep:
    """A sweep that covered a domain: what its discovery said, how many endpoints the
    domain used in it, how many of those accepted legacy TLS and how many failed."""

    sweep_id: int
    created_at: dt.datetime
    sweep_status: str
    discovery_status: str
    endpoints: int
    legacy: int
    errors: int


async def domain_history(
    session: AsyncSession, domain_id: int, *, limit: int = 10
) -> list[DomainSweep]:
    """The last ``limit`` sweeps that covered the domain, newest first."""
    rows = await session.execute(
        select(
            SweepDomain.sweep_id,
            Sweep.created_at,
            Sweep.status.label("sweep_status"),
            SweepDomain.status.label("discovery_status"),
            func.count(distinct(DomainEndpoint.endpoint_id)).label("endpoints"),
            func.count(distinct(ScanResult.endpoint_id))
            .filter(ScanResult.lowest_protocol <= LEGACY_MAX_RANK)
            .label("legacy"),
            func.count(distinct(ScanResult.endpoint_id))
            .filter(ScanResult.status == "error")
            .label("errors"),
        )
        .join(Sweep, Sweep.id == SweepDomain.sweep_id)
        .outerjoin(
            DomainEndpoint,
            and_(
                DomainEndpoint.sweep_id == SweepDomain.sweep_id,
                DomainEndpoint.domain_id == SweepDomain.domain_id,
            ),
        )
        .outerjoin(
            ScanResult,
            and_(
                ScanResult.sweep_id == DomainEndpoint.sweep_id,
                ScanResult.endpoint_id == DomainEndpoint.endpoint_id,
            ),
        )
        .where(SweepDomain.domain_id == domain_id)
        .group_by(SweepDomain.sweep_id, Sweep.created_at, Sweep.status, SweepDomain.status)
        .order_by(SweepDomain.sweep_id.desc())
        .limit(limit)
    )
    return [
        DomainSweep(
            r.sweep_id,
            r.created_at,
            r.sweep_status,
            r.discovery_status,
            r.endpoints,
            r.legacy,
            r.errors,
        )
        for r in rows
    ]


# -- sweeps and findings ------------------------------------------------------------------------


async def sweep_errors(session: AsyncSession, sweep_id: int) -> dict[str, int]:
    """A sweep's failed results per error kind (most first); reads the partial index of
    failed results."""
    kind = func.coalesce(ScanResult.error_kind, "other")
    rows = await session.execute(
        select(kind, func.count())
        .where(ScanResult.sweep_id == sweep_id, ScanResult.status == "error")
        .group_by(kind)
        .order_by(func.count().desc(), kind)
    )
    return {str(k): int(n) for k, n in rows.all()}


async def findings_by_severity(session: AsyncSession) -> tuple[int | None, dict[str, int]]:
    """The newest judged sweep and its findings per severity (severities that occur)."""
    sweep_id = await session.scalar(select(func.max(FindingRun.sweep_id)))
    if sweep_id is None:
        return None, {}
    rows = await session.execute(
        select(Finding.severity, func.count())
        .where(Finding.sweep_id == sweep_id)
        .group_by(Finding.severity)
    )
    return int(sweep_id), {str(s): int(n) for s, n in rows.all()}
