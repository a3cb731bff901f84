"""``/v1/results/latest``: endpoints with their latest result, filtered (JSON pages or the
whole list as CSV); ``/v1/stats`` and ``/v1/stats/trend``: the fleet in numbers.

Readers see everything; an account manager's key sees only endpoints its customers'
domains use (and only those domains), and an explicit id of another manager's
customer, domain or of another manager is 404. The SQL is in
:mod:`fleet.repositories.reports`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth import Principal
from api.deps import RuntimeDep, ScopedReader, SessionDep, SettingsDep
from api.errors import Invalid, NotFound
from api.export import Column, FormatQuery, csv_response, csv_responses, keyset_rows, wants_csv
from api.pagination import CursorQuery, LimitQuery, decode_cursor, next_link
from api.schemas.common import IdPath, Page, problems
from api.schemas.results import (
    CountsRead,
    CutoffRead,
    EndpointCutoffRead,
    ImpactRead,
    LatestResultRead,
    ManagerCountsRead,
    StatsRead,
    TrendPoint,
    TrendRead,
)
from fleet.findings import profile_for
from fleet.repositories import inventory as inventory_repo
from fleet.repositories import reports
from fleet.repositories.reports import CERT_STATUSES, PROTOCOL_FLAGS, LatestRow, ResultFilter
from policy import RULES_VERSION, assess, customer_rollup

router = APIRouter(
    prefix="/v1", tags=["results and statistics"], responses=problems(401, 429, 403, 422)
)

# "TLSv1.0", "tls1.0", "tls10", "TLS1_0" … → the flag column.
_PROTOCOL_NAMES = {
    name.lower().replace("v", "").replace(".", ""): flag for name, flag in PROTOCOL_FLAGS.items()
}


#: Ids are PostgreSQL integers.
_MAX_ID = 2**31 - 1


def _protocol(value: str) -> str:
    key = value.strip().lower().replace("v", "").replace(".", "").replace("_", "")
    if key not in _PROTOCOL_NAMES:
        raise Invalid(
            f"protocol: unknown version {value!r} (one of: ssl2, ssl3, tls1.0, tls1.1, "
            "tls1.2, tls1.3)"
        )
    return _PROTOCOL_NAMES[key]


def _split(values: Sequence[str] | None) -> list[str]:
    """Repeated parameters and comma lists alike: ``a,b&x=c`` → ``[a, b, c]``."""
    return [v.strip() for value in values or () for v in value.split(",") if v.strip()]


def _aware(moment: dt.datetime | None) -> dt.datetime | None:
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    return moment


async def result_filter(
    protocol: Annotated[
        list[str] | None,
        Query(description="accepts any of these versions (repeat or comma list): tls1.0, …"),
    ] = None,
    legacy: Annotated[
        bool | None, Query(description="accepts (true) or not (false) anything below TLS 1.2")
    ] = None,
    plaintext_before_tls: Annotated[
        bool | None, Query(description="a password can (true) or cannot be sent in clear")
    ] = None,
    starttls_missing: Annotated[
        bool | None, Query(description="a STARTTLS service that does not offer STARTTLS")
    ] = None,
    cert_expires_before: Annotated[
        dt.datetime | None,
        Query(description="certificate not_after before this date or time (UTC if naive)"),
    ] = None,
    cert_status: Annotated[
        list[str] | None, Query(description=f"any of: {', '.join(CERT_STATUSES)}")
    ] = None,
    status: Annotated[Literal["ok", "error"] | None, Query(description="result status")] = None,
    error_kind: Annotated[
        list[str] | None, Query(description="any of these error kinds (implies failed scans)")
    ] = None,
    port: Annotated[int | None, Query(ge=1, le=65535)] = None,
    service: Annotated[str | None, Query(max_length=20, description="smtp, imaps, …")] = None,
    customer_id: Annotated[
        int | None, Query(ge=1, le=_MAX_ID, description="used by this customer's domains")
    ] = None,
    account_manager_id: Annotated[
        int | None,
        Query(ge=1, le=_MAX_ID, description="used by this account manager's customers' domains"),
    ] = None,
    domain_id: Annotated[
        int | None, Query(ge=1, le=_MAX_ID, description="used by this domain")
    ] = None,
) -> ResultFilter:
    """The filter the query string describes (visibility is checked by the route)."""
    statuses = _split(cert_status)
    unknown = sorted(set(statuses) - set(CERT_STATUSES))
    if unknown:
        raise Invalid(f"cert_status: unknown status {unknown[0]!r}")
    return ResultFilter(
        protocols=tuple(dict.fromkeys(_protocol(p) for p in _split(protocol))),
        legacy=legacy,
        plaintext_before_tls=plaintext_before_tls,
        starttls_missing=starttls_missing,
        cert_expires_before=_aware(cert_expires_before),
        cert_status=tuple(statuses),
        status=status,
        error_kind=tuple(_split(error_kind)),
        port=port,
        service=service,
        customer_id=customer_id,
        account_manager_id=account_manager_id,
        domain_id=domain_id,
    )


FilterDep = Annotated[ResultFilter, Depends(result_filter)]


async def _scoped(session: AsyncSession, caller: Principal, f: ResultFilter) -> ResultFilter:
    """The filter with the caller's scope; 404 for an explicit id it may not see."""
    scope = caller.scope
    if f.customer_id is not None and (
        await inventory_repo.get_customer(session, f.customer_id, manager=scope) is None
    ):
        raise NotFound(f"no customer {f.customer_id}")
    if f.account_manager_id is not None and (
        await inventory_repo.get_manager(session, f.account_manager_id, manager=scope) is None
    ):
        raise NotFound(f"no account manager {f.account_manager_id}")
    if f.domain_id is not None and (
        await inventory_repo.get_domain(session, f.domain_id, manager=scope) is None
    ):
        raise NotFound(f"no domain {f.domain_id}")
    return dataclasses.replace(f, manager=scope)


def _flag(name: str) -> Any:
    def value(row: LatestRow) -> bool | None:
        return row.protocols[name]

    return value


#: The CSV form of the list, column by column (docs/results-api.md).
LATEST_COLUMNS: tuple[Column[LatestRow], ...] = (
    Column("endpoint_id", "the endpoint's id", lambda r: r.endpoint_id),
    Column("ip", "address", lambda r: r.ip),
    Column("port", "port", lambda r: r.port),
    Column("service", "smtp, submission, imaps, https, …", lambda r: r.service),
    Column("host", "the name it is scanned under (and SNI)", lambda r: r.host),
    Column("status", "ok or error", lambda r: r.status),
    Column("error_kind", "why the scan failed", lambda r: r.error_kind),
    *(
        Column(name, f"{name} accepted (true/false, empty: undecided)", _flag(name))
        for name in PROTOCOL_FLAGS
    ),
    Column("lowest_protocol", "lowest accepted version", lambda r: r.lowest_protocol),
    Column("highest_protocol", "highest accepted version", lambda r: r.highest_protocol),
    Column(
        "plaintext_before_tls", "a password can be sent in clear", lambda r: r.plaintext_before_tls
    ),
    Column(
        "starttls_offered", "STARTTLS offered (empty: implicit TLS)", lambda r: r.starttls_offered
    ),
    Column("cert_status", "certificate status at scan time", lambda r: r.cert_status),
    Column("cert_not_after", "certificate expiry (ISO 8601)", lambda r: r.cert_not_after),
    Column("scanned_at", "when the latest result was taken", lambda r: r.scanned_at),
    Column("sweep_id", "the sweep of the latest result", lambda r: r.sweep_id),
    Column("result_id", "the latest result's id", lambda r: r.result_id),
    Column("domains_total", "domains using the endpoint", lambda r: r.domains_total),
    Column("domains", "up to 10 of them, space-separated", lambda r: r.domains),
)

_CSV_EXAMPLE = (
    ",".join(c.name for c in LATEST_COLUMNS)
    + "\r\n17,192.0.2.25,587,submission,mail.example.net,ok,,false,false,true,true,true,true,"
    "TLSv1.0,TLSv1.3,true,true,valid,2026-12-30T00:00:00+00:00,2026-11-28T02:00:13+00:00,"
    "31,90211,2,example.org example.com\r\n"
)


@router.get(
    "/results/latest",
    summary="Endpoints with their latest result, filtered (JSON or CSV)",
    response_model=Page[LatestResultRead],
    responses={**csv_responses(LATEST_COLUMNS, _CSV_EXAMPLE), **problems(404)},
)
async def latest_results(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    caller: ScopedReader,
    filters: FilterDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    format_: FormatQuery = None,
) -> Any:
    """Every endpoint's latest result as a summary, in endpoint id order, with the
    domains that use it now; the filters combine (all must hold). `format=csv` (or
    `Accept: text/csv`) streams the whole filtered list, every page, as CSV. An account
    manager's key sees only endpoints its customers' domains use; a customer, domain or
    manager id it may not see is 404."""
    f = await _scoped(session, caller, filters)
    if wants_csv(request, format_):

        async def fetch(s: AsyncSession, after: int | None, n: int) -> list[LatestRow]:
            return await reports.latest_page(s, f, after=after, limit=n)

        return csv_response(keyset_rows(runtime.sessions, fetch), LATEST_COLUMNS, "results.csv")
    rows = await reports.latest_page(session, f, after=decode_cursor(cursor), limit=limit)
    items, link = next_link(request, rows, limit)
    return Page[LatestResultRead](items=[LatestResultRead.of(r) for r in items], next=link)


ExpiringQuery = Annotated[
    int, Query(ge=1, le=365, description="a certificate expiring within this many days counts")
]


@router.get("/stats", summary="Fleet statistics now", responses=problems(404))
async def stats(
    session: SessionDep,
    runtime: RuntimeDep,
    caller: ScopedReader,
    filters: FilterDep,
    expiring_days: ExpiringQuery = reports.DEFAULT_EXPIRING_DAYS,
    by_account_manager: Annotated[
        bool,
        Query(
            description="also the counts per account manager (for the whole fleet this "
            "reads every current domain-endpoint use: seconds at 100,000 domains)"
        ),
    ] = False,
) -> StatsRead:
    """Counts over every endpoint's latest result: per accepted, lowest and highest
    protocol version, per finding (legacy TLS, TLS 1.0, TLS 1.1, SSL, no TLS 1.2+,
    plaintext password before TLS, STARTTLS missing, certificate expired / expiring /
    untrusted / name mismatch, scan errors), per certificate status and error kind; with
    `by_account_manager=true`, the same per account manager. The list's filters apply.
    An account manager's key gets its own numbers only. Answers are cached per API
    process until a result is stored or a sweep closes, and for at most a minute
    (`as_of` is when they were counted)."""
    f = await _scoped(session, caller, filters)

    async def compute() -> StatsRead:
        now = dt.datetime.now(dt.UTC)
        counts, managers = await reports.fleet_stats(
            session, f, expiring_days=expiring_days, now=now, per_manager=by_account_manager
        )
        return StatsRead(
            as_of=now,
            expiring_days=expiring_days,
            counts=CountsRead.of(counts),
            account_managers=[ManagerCountsRead.of(m) for m in managers],
        )

    # Cached while no result has been stored since (and for at most a minute): `as_of`
    # says when the numbers were counted.
    version = await reports.state_version(session)
    key = ("stats", f, expiring_days, by_account_manager)
    return await runtime.stats_cache.get(key, version, compute)


@router.get("/stats/trend", summary="Fleet statistics per closed sweep")
async def trend(
    session: SessionDep,
    runtime: RuntimeDep,
    caller: ScopedReader,
    sweeps: Annotated[int, Query(ge=1, le=100, description="how many sweeps")] = 10,
) -> TrendRead:
    """The same counts as `/v1/stats` for each of the last closed (`done`) full-fleet
    sweeps, oldest first; certificate expiry is counted relative to each sweep's end,
    30 days ahead. Computed once per sweep and stored. An account manager's key gets
    its own numbers."""

    async def compute() -> TrendRead:
        points = await reports.sweep_trend(session, sweeps=sweeps, manager=caller.scope)
        await session.commit()  # statistics computed just now are kept
        return TrendRead(sweeps=[TrendPoint.of(p) for p in points])

    version = await reports.state_version(session)  # a newly closed sweep changes it
    return await runtime.stats_cache.get(("trend", sweeps, caller.scope), version, compute)


@router.get(
    "/customers/{customer_id}/cutoff",
    summary="What breaks for a customer on the cut-off date",
    responses=problems(404, 422),
)
async def customer_cutoff(
    customer_id: IdPath, session: SessionDep, settings: SettingsDep, caller: ScopedReader
) -> CutoffRead:
    """The future view: for each endpoint the customer's domains use now, judged from
    its latest result with the deployment's policy profile, what happens on the cut-off
    date if nothing changes (`breaks`: no client can connect or log in; `partly_breaks`:
    some clients fail; `degraded`: nothing fails but protection is lost; `unknown`: the
    scan failed or left the deciding facts open), and the customer's roll-up. An
    account manager's key sees only its own customers (404 otherwise)."""
    customer = await inventory_repo.get_customer(session, customer_id, manager=caller.scope)
    if customer is None:
        raise NotFound(f"no customer {customer_id}")
    try:
        profile = profile_for(settings)
    except ValueError as exc:
        raise Invalid(f"the deployment's policy profile: {exc}") from None
    now = dt.datetime.now(dt.UTC)
    rows = await reports.customer_documents(session, customer_id)
    domains = await reports.endpoint_domains(session, [r[0] for r in rows], customer_id)
    judged = [(row, assess(row[4], profile, now)) for row in rows]
    rollup = customer_rollup([a for _, a in judged], profile)
    return CutoffRead(
        customer_id=customer.id,
        customer=customer.name,
        cutoff=profile.cutoff,
        profile=profile.name,
        rules_version=RULES_VERSION,
        summary=rollup.summary,
        outcomes=dict(rollup.outcomes),
        worst=rollup.worst.value if rollup.worst else None,
        endpoints=[
            EndpointCutoffRead(
                endpoint_id=endpoint_id,
                ip=ip,
                port=port,
                service=service,
                port_class=a.port_class.value,
                domains=domains.get(endpoint_id, []),
                outcome=a.future.outcome,
                impacts=[ImpactRead(**i.to_dict()) for i in a.future.impacts],
                undecided=list(a.future.undecided),
                findings=sorted({f.code for f in a.findings}),
            )
            for (endpoint_id, ip, service, port, _), a in judged
        ],
    )
