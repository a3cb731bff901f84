"""Reports on the fleet's current state: filtered result lists, statistics and trends.

The current state is denormalised so that filters and counts never look for "the
newest result per endpoint" among millions of rows:

- ``endpoint_latest``: one row per endpoint, its newest result's id and filter columns;
- ``domain_latest``: each domain's current sweep (the newest in which one of its
  endpoints got a result);
- ``domain_endpoint_latest``: the endpoints each domain uses in that sweep: the path
  endpoint → domain → customer → account manager.

:func:`advance_latest` keeps them current; ``record_result(s)`` calls it for every
result stored anew, in the same transaction. It only moves forward: a result replaces
an endpoint's current one only if its ``(scanned_at, id)`` is later, and a domain moves
only to a newer sweep. Everything else here reads.

Statistics (:class:`FleetCounts`) count endpoints, each once however many domains use
it, with ``count(*) FILTER (WHERE …)`` in one statement. Per closed sweep they are
stored in ``sweep_stats`` (:func:`store_sweep_stats`, for the close path, or on first
request by :func:`sweep_trend`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    and_,
    bindparam,
    func,
    literal,
    or_,
    select,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import FromClause

from fleet.db.models import (
    AccountManager,
    Customer,
    Domain,
    DomainEndpoint,
    DomainEndpointLatest,
    DomainLatest,
    Endpoint,
    EndpointLatest,
    ScanResult,
    Sweep,
    SweepStats,
)
from fleet.repositories._sql import table_of
from scanner.errors import ERROR_KINDS
from scanner.models import PROTOCOLS

__all__ = [
    "CERT_STATUSES",
    "FINDINGS",
    "LEGACY_MAX_RANK",
    "PROTOCOL_FLAGS",
    "FleetCounts",
    "LatestRow",
    "ManagerCounts",
    "ResultFilter",
    "SweepCounts",
    "advance_latest",
    "customer_documents",
    "endpoint_domains",
    "fleet_stats",
    "latest_page",
    "settle_empty_domains",
    "state_version",
    "store_sweep_stats",
    "sweep_stats",
    "sweep_trend",
]

#: Protocol name (as in the result document) → flag column, in rank order (0 SSLv2 …).
PROTOCOL_FLAGS: dict[str, str] = dict(
    zip(PROTOCOLS, ("ssl2", "ssl3", "tls10", "tls11", "tls12", "tls13"), strict=True)
)
_RANK_NAMES: tuple[str, ...] = PROTOCOLS
#: ``lowest_protocol`` ranks up to this one are legacy: 0 SSLv2 … 3 TLS 1.1.
LEGACY_MAX_RANK = 3
#: TLS 1.2: endpoints whose highest version is below it break on the cut-off day.
_MODERN_RANK = 4
CERT_STATUSES: tuple[str, ...] = (
    "valid",
    "expired",
    "not_yet_valid",
    "self_signed",
    "untrusted",
    "hostname_mismatch",
)
#: Error kinds counted by name; anything else counts as ``other``.
_ERROR_KINDS: tuple[str, ...] = tuple(k for k in (*ERROR_KINDS, "internal") if k != "error")
#: The findings every statistic counts (docs/results-api.md says what each means).
FINDINGS: tuple[str, ...] = (
    "legacy_tls",
    "tls10",
    "tls11",
    "ssl",
    "no_modern_tls",
    "plaintext_before_tls",
    "starttls_missing",
    "cert_expired",
    "cert_expiring",
    "cert_untrusted",
    "cert_hostname_mismatch",
    "errors",
)
#: Days ahead a certificate counts as expiring, unless the caller says otherwise.
DEFAULT_EXPIRING_DAYS = 30


# -- maintenance ----------------------------------------------------------------------------

_FLAG_COLUMNS = (
    "status",
    "error_kind",
    "ssl2",
    "ssl3",
    "tls10",
    "tls11",
    "tls12",
    "tls13",
    "lowest_protocol",
    "highest_protocol",
    "plaintext_before_tls",
    "starttls_offered",
    "cert_status",
    "cert_not_after",
)
_COPIED = ("result_id", "sweep_id", "scanned_at", "port", "service", *_FLAG_COLUMNS)

_ADVANCE_ENDPOINTS = text(
    f"""
    INSERT INTO endpoint_latest (endpoint_id, {", ".join(_COPIED)})
    SELECT r.endpoint_id, r.id, r.sweep_id, r.scanned_at, e.port, e.service,
           {", ".join(f"r.{c}" for c in _FLAG_COLUMNS)}
    FROM scan_results AS r JOIN endpoints AS e ON e.id = r.endpoint_id
    WHERE r.sweep_id = :sweep_id AND r.endpoint_id = ANY(:endpoint_ids)
    ORDER BY r.endpoint_id
    ON CONFLICT (endpoint_id) DO UPDATE
    SET {", ".join(f"{c} = excluded.{c}" for c in _COPIED)}
    WHERE (endpoint_latest.scanned_at, endpoint_latest.result_id)
        < (excluded.scanned_at, excluded.result_id)
    """
).bindparams(bindparam("endpoint_ids", type_=ARRAY(Integer)))

# Domains already at this sweep (or a newer one) are left alone: no row lock, so that
# workers storing results of endpoints shared by thousands of domains do not queue.
_ADVANCE_DOMAINS = text(
    """
    INSERT INTO domain_latest (domain_id, sweep_id)
    SELECT DISTINCT de.domain_id, CAST(:sweep_id AS integer)
    FROM domain_endpoints AS de
    WHERE de.sweep_id = :sweep_id AND de.endpoint_id = ANY(:endpoint_ids)
      AND NOT EXISTS (
          SELECT 1 FROM domain_latest AS dl
          WHERE dl.domain_id = de.domain_id AND dl.sweep_id >= :sweep_id
      )
    ORDER BY 1
    ON CONFLICT (domain_id) DO UPDATE SET sweep_id = excluded.sweep_id
    WHERE domain_latest.sweep_id < excluded.sweep_id
    RETURNING domain_id
    """
).bindparams(bindparam("endpoint_ids", type_=ARRAY(Integer)))

_FORGET_USES = text(
    "DELETE FROM domain_endpoint_latest WHERE domain_id = ANY(:domain_ids)"
).bindparams(bindparam("domain_ids", type_=ARRAY(Integer)))

_RECORD_USES = text(
    """
    INSERT INTO domain_endpoint_latest (domain_id, endpoint_id)
    SELECT DISTINCT domain_id, endpoint_id FROM domain_endpoints
    WHERE sweep_id = :sweep_id AND domain_id = ANY(:domain_ids)
    ORDER BY 1, 2
    ON CONFLICT DO NOTHING
    """
).bindparams(bindparam("domain_ids", type_=ARRAY(Integer)))


_SETTLE_EMPTY_DOMAINS = text(
    """
    WITH empty AS (
        SELECT sd.domain_id FROM sweep_domains AS sd
        WHERE sd.sweep_id = :sweep_id AND sd.status <> 'error'
          AND NOT EXISTS (
              SELECT 1 FROM domain_endpoints AS de
              WHERE de.sweep_id = sd.sweep_id AND de.domain_id = sd.domain_id
          )
        ORDER BY 1
    ), moved AS (
        INSERT INTO domain_latest (domain_id, sweep_id)
        SELECT domain_id, CAST(:sweep_id AS integer) FROM empty
        ON CONFLICT (domain_id) DO UPDATE SET sweep_id = excluded.sweep_id
        WHERE domain_latest.sweep_id < excluded.sweep_id
        RETURNING domain_id
    )
    DELETE FROM domain_endpoint_latest WHERE domain_id IN (SELECT domain_id FROM moved)
    """
)


async def settle_empty_domains(session: AsyncSession, sweep_id: int) -> None:
    """When ``sweep_id`` closes: a domain whose discovery in it was definite (not a DNS
    error) but found no endpoint — its MX removed, a null MX, NXDOMAIN — uses no
    endpoint now. :func:`advance_latest` only sees domains through their results, so
    without this such a domain would keep its previous endpoints for ever. A domain
    whose discovery failed keeps them: a resolver failure says nothing."""
    await session.execute(_SETTLE_EMPTY_DOMAINS, {"sweep_id": sweep_id})


async def advance_latest(
    session: AsyncSession, sweep_id: int, endpoint_ids: Collection[int]
) -> None:
    """Bring the current state forward for results just stored in ``sweep_id``.

    Each endpoint's ``endpoint_latest`` row becomes this result unless it already holds
    a later one (by ``scanned_at``, then result id): a late, older result changes
    nothing. Every domain that used one of these endpoints in this sweep moves to it
    (``domain_latest``) unless it is already at this sweep or a newer one, and its
    ``domain_endpoint_latest`` rows become its endpoints in this sweep (its discovery
    is complete before any of its endpoints is scanned). Rows are locked in id order,
    so concurrent callers do not deadlock; three or four statements, whatever the size.
    """
    ids = sorted(set(endpoint_ids))
    if not ids:
        return
    await session.execute(_ADVANCE_ENDPOINTS, {"sweep_id": sweep_id, "endpoint_ids": ids})
    moved = list(
        await session.scalars(_ADVANCE_DOMAINS, {"sweep_id": sweep_id, "endpoint_ids": ids})
    )
    if moved:
        await session.execute(_FORGET_USES, {"domain_ids": moved})
        await session.execute(_RECORD_USES, {"sweep_id": sweep_id, "domain_ids": moved})


# -- filters ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResultFilter:
    """Which endpoints a list or a statistic covers; every condition given must hold.

    ``protocols``: flag columns (``tls10``, …): the endpoint accepts *any* of them.
    ``legacy``: accepts something below TLS 1.2 (or, False, does not).
    ``starttls_missing``: a STARTTLS service that does not offer STARTTLS.
    ``cert_expires_before``: the certificate's ``not_after`` is before this time.
    ``customer_id``, ``account_manager_id``, ``domain_id``: used by one of that
    customer's / manager's domains, or by that domain. ``manager``: the caller's scope
    (an account manager's key): only endpoints its customers' domains use, and only
    those domains are shown.
    """

    protocols: tuple[str, ...] = ()
    legacy: bool | None = None
    plaintext_before_tls: bool | None = None
    starttls_missing: bool | None = None
    cert_expires_before: dt.datetime | None = None
    cert_status: tuple[str, ...] = ()
    status: str | None = None
    error_kind: tuple[str, ...] = ()
    port: int | None = None
    service: str | None = None
    customer_id: int | None = None
    account_manager_id: int | None = None
    domain_id: int | None = None
    manager: int | None = None

    def __post_init__(self) -> None:
        unknown = set(self.protocols) - set(PROTOCOL_FLAGS.values())
        if unknown:
            raise ValueError(f"unknown protocol flag(s): {', '.join(sorted(unknown))}")

    @property
    def by_domain(self) -> bool:
        """Whether a condition goes through the domains that use an endpoint."""
        return any(
            v is not None
            for v in (self.customer_id, self.account_manager_id, self.domain_id, self.manager)
        )


_EL = table_of(EndpointLatest)
_USES = table_of(DomainEndpointLatest)
_DOMAINS = table_of(Domain)
_CUSTOMERS = table_of(Customer)


def _uses(f: ResultFilter, *, names: bool = False) -> tuple[FromClause, list[Any]]:
    """The current uses (``domain_endpoint_latest``) the filter's domain side selects:
    a FROM (joined to domains and customers as needed; to domains always when
    ``names``) and its conditions."""
    from_: FromClause = _USES
    conditions: list[Any] = []
    managers = [m for m in (f.account_manager_id, f.manager) if m is not None]
    if names or f.customer_id is not None or managers:
        from_ = from_.join(_DOMAINS, _DOMAINS.c.id == _USES.c.domain_id)
    if managers:
        from_ = from_.join(_CUSTOMERS, _CUSTOMERS.c.id == _DOMAINS.c.customer_id)
    if f.domain_id is not None:
        conditions.append(_USES.c.domain_id == f.domain_id)
    if f.customer_id is not None:
        conditions.append(_DOMAINS.c.customer_id == f.customer_id)
    conditions += [_CUSTOMERS.c.account_manager_id == m for m in managers]
    return from_, conditions


def _conditions(f: ResultFilter, t: FromClause = _EL) -> list[ColumnElement[bool]]:
    """The filter's conditions on a table with the result columns (``endpoint_latest``)."""
    c = t.c
    out: list[ColumnElement[bool]] = []
    if f.protocols:
        out.append(or_(*(c[flag].is_(True) for flag in f.protocols)))
    if f.legacy is True:
        out.append(c.lowest_protocol <= LEGACY_MAX_RANK)
    elif f.legacy is False:
        out.append(func.coalesce(c.lowest_protocol > LEGACY_MAX_RANK, true()))
    if f.plaintext_before_tls is not None:
        out.append(c.plaintext_before_tls.is_(f.plaintext_before_tls))
    if f.starttls_missing is True:
        out.append(c.starttls_offered.is_(False))
    elif f.starttls_missing is False:
        out.append(c.starttls_offered.is_not(False))
    if f.cert_expires_before is not None:
        out.append(c.cert_not_after < f.cert_expires_before)
    if f.cert_status:
        out.append(c.cert_status.in_(f.cert_status))
    if f.status is not None:
        out.append(c.status == f.status)
    if f.error_kind:
        out.append(c.error_kind.in_(f.error_kind))
    if f.port is not None:
        out.append(c.port == f.port)
    if f.service is not None:
        out.append(c.service == f.service)
    if f.by_domain:
        from_, where = _uses(f)
        out.append(c.endpoint_id.in_(select(_USES.c.endpoint_id).select_from(from_).where(*where)))
    return out


# -- the list -------------------------------------------------------------------------------

#: Domain names shown per endpoint in a list.
DOMAINS_SHOWN = 10
#: ``domains_total`` counts up to this many (this number means "at least").
DOMAINS_COUNTED = 100


@dataclass(frozen=True, slots=True)
class LatestRow:
    """An endpoint with its latest result's summary and the domains (of those the
    filter and scope select) that use it now."""

    endpoint_id: int
    ip: str
    port: int
    service: str
    host: str
    result_id: int
    sweep_id: int
    scanned_at: dt.datetime
    status: str
    error_kind: str | None
    protocols: dict[str, bool | None]
    lowest_protocol: str | None
    highest_protocol: str | None
    plaintext_before_tls: bool | None
    starttls_offered: bool | None
    cert_status: str | None
    cert_not_after: dt.datetime | None
    domains: tuple[str, ...]
    domains_total: int

    @property
    def id(self) -> int:
        """The keyset key (pages are in endpoint id order)."""
        return self.endpoint_id


def _rank_name(rank: int | None) -> str | None:
    return _RANK_NAMES[rank] if rank is not None else None


def _list_statement(f: ResultFilter, after: int | None, limit: int) -> Select[Any]:
    endpoints = table_of(Endpoint)
    from_, where = _uses(f, names=True)
    mine = [_USES.c.endpoint_id == _EL.c.endpoint_id, *where]
    # Correlated per row (endpoint_latest of the outer query): the first few names by
    # domain id, read off the (endpoint_id, domain_id) index, and the count.
    shown = (
        select(_DOMAINS.c.name)
        .select_from(from_)
        .where(*mine)
        .order_by(_USES.c.domain_id)
        .limit(DOMAINS_SHOWN)
        .scalar_subquery()
    )
    # Counted up to a cap: an MX cluster used by 50,000 domains must not cost a
    # 50,000-entry count on every page it appears on.
    capped = (
        select(literal(1))
        .select_from(from_)
        .where(*mine)
        .limit(DOMAINS_COUNTED)
        .correlate(_EL)
        .subquery()
    )
    total = select(func.count()).select_from(capped).scalar_subquery()
    stmt = (
        select(
            _EL,
            endpoints.c.ip,
            endpoints.c.host,
            func.array(shown).label("domains"),
            total.label("total"),
        )
        .join(endpoints, endpoints.c.id == _EL.c.endpoint_id)
        .where(*_conditions(f))
    )
    if after is not None:
        stmt = stmt.where(_EL.c.endpoint_id > after)
    return stmt.order_by(_EL.c.endpoint_id).limit(limit + 1)


async def latest_page(
    session: AsyncSession, f: ResultFilter, *, after: int | None, limit: int
) -> list[LatestRow]:
    """Up to ``limit + 1`` endpoints matching ``f`` after endpoint id ``after``, in id
    order, each with its latest result's summary (a keyset page)."""
    rows = await session.execute(_list_statement(f, after, limit))
    return [
        LatestRow(
            endpoint_id=row.endpoint_id,
            ip=row.ip,
            port=row.port,
            service=row.service,
            host=row.host,
            result_id=row.result_id,
            sweep_id=row.sweep_id,
            scanned_at=row.scanned_at,
            status=row.status,
            error_kind=row.error_kind,
            protocols={name: getattr(row, flag) for name, flag in PROTOCOL_FLAGS.items()},
            lowest_protocol=_rank_name(row.lowest_protocol),
            highest_protocol=_rank_name(row.highest_protocol),
            plaintext_before_tls=row.plaintext_before_tls,
            starttls_offered=row.starttls_offered,
            cert_status=row.cert_status,
            cert_not_after=row.cert_not_after,
            domains=tuple(row.domains or ()),
            domains_total=int(row.total),
        )
        for row in rows
    ]


# -- statistics -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FleetCounts:
    """Endpoint counts: per accepted version, per lowest and highest version, per
    finding, per certificate status and per error kind (only kinds that occur)."""

    endpoints: int = 0
    protocols: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PROTOCOLS, 0))
    lowest_protocol: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PROTOCOLS, 0))
    highest_protocol: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PROTOCOLS, 0))
    findings: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FINDINGS, 0))
    cert_status: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CERT_STATUSES, 0))
    errors: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "endpoints": self.endpoints,
            "protocols": dict(self.protocols),
            "lowest_protocol": dict(self.lowest_protocol),
            "highest_protocol": dict(self.highest_protocol),
            "findings": dict(self.findings),
            "cert_status": dict(self.cert_status),
            "errors": dict(self.errors),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FleetCounts:
        return cls(
            endpoints=int(data["endpoints"]),
            protocols=dict(data["protocols"]),
            lowest_protocol=dict(data["lowest_protocol"]),
            highest_protocol=dict(data["highest_protocol"]),
            findings=dict(data["findings"]),
            cert_status=dict(data["cert_status"]),
            errors=dict(data["errors"]),
        )


@dataclass(frozen=True, slots=True)
class ManagerCounts:
    """One account manager's counts: endpoints used by their customers' domains."""

    account_manager_id: int
    name: str
    counts: FleetCounts


def _count_columns(c: Any, now: Any, days: int) -> list[Any]:
    """``count(*) FILTER (WHERE …)`` for every number of :class:`FleetCounts`."""

    def n(label: str, condition: ColumnElement[bool] | None = None) -> Any:
        count = func.count() if condition is None else func.count().filter(condition)
        return count.label(label)

    soon = now + func.make_interval(0, 0, 0, days)
    findings: dict[str, ColumnElement[bool]] = {
        "legacy_tls": c.lowest_protocol <= LEGACY_MAX_RANK,
        "tls10": c.tls10.is_(True),
        "tls11": c.tls11.is_(True),
        "ssl": or_(c.ssl2.is_(True), c.ssl3.is_(True)),
        "no_modern_tls": c.highest_protocol < _MODERN_RANK,
        "plaintext_before_tls": c.plaintext_before_tls.is_(True),
        "starttls_missing": c.starttls_offered.is_(False),
        "cert_expired": c.cert_not_after < now,
        "cert_expiring": and_(c.cert_not_after >= now, c.cert_not_after < soon),
        "cert_untrusted": c.cert_status.in_(("untrusted", "self_signed")),
        "cert_hostname_mismatch": c.cert_status == "hostname_mismatch",
        "errors": c.status == "error",
    }
    assert tuple(findings) == FINDINGS
    columns = [n("endpoints")]
    for rank, flag in enumerate(PROTOCOL_FLAGS.values()):
        columns.append(n(f"p_{rank}", c[flag].is_(True)))
        columns.append(n(f"lo_{rank}", c.lowest_protocol == rank))
        columns.append(n(f"hi_{rank}", c.highest_protocol == rank))
    columns += [n(f"f_{name}", condition) for name, condition in findings.items()]
    columns += [n(f"c_{i}", c.cert_status == s) for i, s in enumerate(CERT_STATUSES)]
    columns += [
        n(f"e_{i}", and_(c.status == "error", c.error_kind == kind))
        for i, kind in enumerate(_ERROR_KINDS)
    ]
    columns.append(
        n(
            "e_other",
            and_(
                c.status == "error",
                or_(c.error_kind.is_(None), c.error_kind.not_in(_ERROR_KINDS)),
            ),
        )
    )
    return columns


def _counts(row: Any) -> FleetCounts:
    m = row._mapping
    errors = {kind: int(m[f"e_{i}"]) for i, kind in enumerate(_ERROR_KINDS) if m[f"e_{i}"]}
    if m["e_other"]:
        errors["other"] = int(m["e_other"])
    return FleetCounts(
        endpoints=int(m["endpoints"]),
        protocols={name: int(m[f"p_{r}"]) for r, name in enumerate(PROTOCOLS)},
        lowest_protocol={name: int(m[f"lo_{r}"]) for r, name in enumerate(PROTOCOLS)},
        highest_protocol={name: int(m[f"hi_{r}"]) for r, name in enumerate(PROTOCOLS)},
        findings={name: int(m[f"f_{name}"]) for name in FINDINGS},
        cert_status={s: int(m[f"c_{i}"]) for i, s in enumerate(CERT_STATUSES)},
        errors=errors,
    )


def _manager_uses(manager: int | None) -> Select[Any]:
    """Distinct (account_manager_id, endpoint_id) of the current uses."""
    stmt = (
        select(_CUSTOMERS.c.account_manager_id.label("manager"), _USES.c.endpoint_id)
        .select_from(_USES)
        .join(_DOMAINS, _DOMAINS.c.id == _USES.c.domain_id)
        .join(_CUSTOMERS, _CUSTOMERS.c.id == _DOMAINS.c.customer_id)
        .where(_CUSTOMERS.c.account_manager_id.is_not(None))
        .distinct()
    )
    if manager is not None:
        stmt = stmt.where(_CUSTOMERS.c.account_manager_id == manager)
    return stmt


async def state_version(session: AsyncSession) -> tuple[int, int, int, int]:
    """A cheap fingerprint of the current state (index-only reads): the newest current
    result, the newest current sweep of any domain, the newest closed sweep and the
    newest domain. Any result stored anew, any sweep closing (which settles domains
    without endpoints) changes it; caches of statistics are keyed on it."""
    row = (
        await session.execute(
            select(
                select(func.coalesce(func.max(EndpointLatest.result_id), 0)).scalar_subquery(),
                select(func.coalesce(func.max(DomainLatest.sweep_id), 0)).scalar_subquery(),
                select(func.coalesce(func.max(Sweep.id), 0))
                .where(Sweep.status == "done")
                .scalar_subquery(),
                select(func.coalesce(func.max(Domain.id), 0)).scalar_subquery(),
            )
        )
    ).one()
    return (int(row[0]), int(row[1]), int(row[2]), int(row[3]))


async def fleet_stats(
    session: AsyncSession,
    f: ResultFilter,
    *,
    expiring_days: int = DEFAULT_EXPIRING_DAYS,
    now: dt.datetime | None = None,
    per_manager: bool = True,
) -> tuple[FleetCounts, list[ManagerCounts]]:
    """The counts of the endpoints ``f`` selects (one statement), and, with
    ``per_manager``, the same counts per account manager (a second statement; only
    the caller's own manager when ``f.manager`` is set), in manager name order."""
    moment: Any = literal(now, type_=EndpointLatest.scanned_at.type) if now else func.now()
    total = (
        await session.execute(
            select(*_count_columns(_EL.c, moment, expiring_days)).where(*_conditions(f))
        )
    ).one()
    managers: list[ManagerCounts] = []
    if per_manager:
        uses = _manager_uses(f.manager).subquery("mu")
        stmt = (
            select(
                uses.c.manager,
                AccountManager.name,
                *_count_columns(_EL.c, moment, expiring_days),
            )
            .select_from(uses)
            .join(_EL, _EL.c.endpoint_id == uses.c.endpoint_id)
            .join(AccountManager, AccountManager.id == uses.c.manager)
            .where(*_conditions(f))
            .group_by(uses.c.manager, AccountManager.name)
            .order_by(AccountManager.name, uses.c.manager)
        )
        managers = [
            ManagerCounts(row.manager, row.name, _counts(row))
            for row in await session.execute(stmt)
        ]
    return _counts(total), managers


# -- per sweep and the trend ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SweepCounts:
    """The counts of one closed sweep, as of its end (expiry relative to then)."""

    sweep_id: int
    kind: str
    finished_at: dt.datetime | None
    counts: FleetCounts
    account_managers: dict[int, FleetCounts]


async def sweep_stats(
    session: AsyncSession, sweep_id: int, *, expiring_days: int = DEFAULT_EXPIRING_DAYS
) -> dict[str, Any]:
    """The statistics of one sweep's results, in the form stored in ``sweep_stats``:
    ``{"as_of", "expiring_days", "all": counts, "account_managers": {id: counts}}``.

    Expiry counts are relative to the sweep's end (its creation when it has none);
    managers are those of the domains that used each endpoint in the sweep, as the
    inventory assigns them now. Two statements, on the sweep's own rows.
    """
    results = table_of(ScanResult)
    uses = table_of(DomainEndpoint)
    sweeps = table_of(Sweep)
    as_of = (
        select(func.coalesce(sweeps.c.finished_at, sweeps.c.created_at))
        .where(sweeps.c.id == sweep_id)
        .scalar_subquery()
    )
    when = await session.scalar(select(as_of))
    moment = literal(
        when if when is not None else dt.datetime.now(dt.UTC), type_=Sweep.created_at.type
    )
    total = (
        await session.execute(
            select(*_count_columns(results.c, moment, expiring_days)).where(
                results.c.sweep_id == sweep_id
            )
        )
    ).one()
    pairs = (
        select(_CUSTOMERS.c.account_manager_id.label("manager"), uses.c.endpoint_id)
        .select_from(uses)
        .join(_DOMAINS, _DOMAINS.c.id == uses.c.domain_id)
        .join(_CUSTOMERS, _CUSTOMERS.c.id == _DOMAINS.c.customer_id)
        .where(uses.c.sweep_id == sweep_id, _CUSTOMERS.c.account_manager_id.is_not(None))
        .distinct()
        .subquery("mu")
    )
    per_manager = await session.execute(
        select(pairs.c.manager, *_count_columns(results.c, moment, expiring_days))
        .select_from(pairs)
        .join(
            results,
            and_(results.c.endpoint_id == pairs.c.endpoint_id, results.c.sweep_id == sweep_id),
        )
        .group_by(pairs.c.manager)
    )
    return {
        "as_of": when.isoformat() if when is not None else None,
        "expiring_days": expiring_days,
        "all": _counts(total).to_dict(),
        "account_managers": {str(row.manager): _counts(row).to_dict() for row in per_manager},
    }


_STORE_STATS = insert(table_of(SweepStats)).on_conflict_do_nothing(index_elements=["sweep_id"])


async def store_sweep_stats(session: AsyncSession, sweep_id: int) -> dict[str, Any]:
    """Compute and store a sweep's statistics (the close path calls this once the sweep
    is ``done``); stored statistics are kept (insert once). Returns what is stored."""
    stats = await sweep_stats(session, sweep_id)
    await session.execute(_STORE_STATS, {"sweep_id": sweep_id, "stats": stats})
    stored = await session.scalar(select(SweepStats.stats).where(SweepStats.sweep_id == sweep_id))
    return stored if stored is not None else stats


async def sweep_trend(
    session: AsyncSession, *, sweeps: int, manager: int | None = None
) -> list[SweepCounts]:
    """The statistics of the last ``sweeps`` closed (``done``) full-fleet sweeps
    (scope ``{"all": true}``), oldest first. Sweeps closed without stored statistics
    get them computed and stored now (the caller commits). ``manager``: that account
    manager's counts instead of the fleet's."""
    closed: Sequence[Sweep] = (
        await session.scalars(
            select(Sweep)
            .where(Sweep.status == "done", Sweep.scope == literal({"all": True}, Sweep.scope.type))
            .order_by(Sweep.id.desc())
            .limit(sweeps)
        )
    ).all()
    rows = await session.execute(
        select(SweepStats.sweep_id, SweepStats.stats).where(
            SweepStats.sweep_id.in_([s.id for s in closed])
        )
    )
    stored: dict[int, dict[str, Any]] = {row.sweep_id: row.stats for row in rows}
    out: list[SweepCounts] = []
    for sweep in reversed(closed):
        stats = stored.get(sweep.id)
        if stats is None:
            stats = await store_sweep_stats(session, sweep.id)
        managers = {int(k): FleetCounts.from_dict(v) for k, v in stats["account_managers"].items()}
        if manager is not None:
            counts = managers.get(manager, FleetCounts())
            managers = {manager: counts} if manager in managers else {}
        else:
            counts = FleetCounts.from_dict(stats["all"])
        out.append(SweepCounts(sweep.id, sweep.kind, sweep.finished_at, counts, managers))
    return out


# -- the cut-off view ---------------------------------------------------------------------------


async def customer_documents(
    session: AsyncSession, customer_id: int
) -> list[tuple[int, str, str, int, dict[str, Any]]]:
    """The current result documents of one customer's endpoints: (endpoint id, ip,
    service, port, document) once per endpoint, whatever number of its domains use it,
    in (host, port) order."""
    rows = await session.execute(
        select(Endpoint.id, Endpoint.ip, Endpoint.service, Endpoint.port, ScanResult.document)
        .select_from(_USES)
        .join(_DOMAINS, _DOMAINS.c.id == _USES.c.domain_id)
        .join(_EL, _EL.c.endpoint_id == _USES.c.endpoint_id)
        .join(ScanResult, ScanResult.id == _EL.c.result_id)
        .join(Endpoint, Endpoint.id == _USES.c.endpoint_id)
        .where(_DOMAINS.c.customer_id == customer_id)
        .distinct()
        .order_by(Endpoint.service, Endpoint.port, Endpoint.id)
    )
    return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]


async def endpoint_domains(
    session: AsyncSession, endpoint_ids: Collection[int], customer_id: int
) -> dict[int, list[str]]:
    """For each endpoint, the customer's domains that use it now (sorted)."""
    rows = await session.execute(
        select(_USES.c.endpoint_id, _DOMAINS.c.name)
        .select_from(_USES)
        .join(_DOMAINS, _DOMAINS.c.id == _USES.c.domain_id)
        .where(_DOMAINS.c.customer_id == customer_id, _USES.c.endpoint_id.in_(list(endpoint_ids)))
        .order_by(_DOMAINS.c.name)
    )
    out: dict[int, list[str]] = {}
    for endpoint_id, name in rows:
        out.setdefault(endpoint_id, []).append(name)
    return out
