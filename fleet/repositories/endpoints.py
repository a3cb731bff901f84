"""Endpoints: one row per ``(ip, port, service)`` for all time; which domains use them,
and their results across sweeps.

``manager`` scopes a read to one account manager: an endpoint is visible when one of
the manager's customers' domains used it in some sweep (None: everything).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Row, exists, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import ReturningInsert

from fleet.db.models import Customer, Domain, DomainEndpoint, Endpoint, ScanResult
from fleet.repositories._sql import any_int, table_of
from scanner.discovery import EndpointKey
from scanner.models import Target
from scanner.services import service_named

__all__ = [
    "EndpointUse",
    "endpoint_results",
    "endpoint_target",
    "endpoint_uses",
    "ensure_endpoints",
    "get_endpoint",
    "get_targets",
]


def endpoint_target(endpoint: Endpoint) -> Target:
    """The scanner's :class:`~scanner.models.Target` for a stored endpoint.

    The SNI is the endpoint's ``host`` (the name the latest discovery reached it by).
    """
    service = service_named(endpoint.service)
    return Target(
        host=endpoint.host,
        ip=endpoint.ip,
        port=endpoint.port,
        service=service.name,
        tls_mode=service.tls_mode,
        sni=endpoint.host,
    )


def _upsert_endpoint() -> ReturningInsert[int, str, int, str]:
    table = table_of(Endpoint)
    stmt = insert(table)
    return stmt.on_conflict_do_update(
        constraint="uq_endpoints_ip_port_service",
        set_={"host": stmt.excluded.host, "last_seen": func.now()},
    ).returning(table.c.id, table.c.ip, table.c.port, table.c.service)


# Built once; executemany with RETURNING runs as batched multi-row INSERTs
# ("insertmanyvalues"), rows returned for inserted and updated endpoints alike.
_UPSERT_ENDPOINT = _upsert_endpoint()


async def ensure_endpoints(
    session: AsyncSession, endpoints: Mapping[EndpointKey, str] | Iterable[tuple[EndpointKey, str]]
) -> dict[EndpointKey, int]:
    """Get or create the endpoints, given as ``{(ip, port, service): host}``; their ids.

    ``INSERT … ON CONFLICT (ip, port, service) DO UPDATE`` in bulk: existing rows
    get ``last_seen = now()`` and the latest ``host`` (the name the scan will use as
    SNI), new rows are created; concurrent callers never create duplicates.
    """
    pairs = dict(endpoints.items() if isinstance(endpoints, Mapping) else endpoints)
    ids: dict[EndpointKey, int] = {}
    # A fixed order makes concurrent upserts lock rows in the same order (no deadlocks).
    items = sorted(pairs.items())
    if not items:
        return ids
    rows = await session.execute(
        _UPSERT_ENDPOINT,
        [
            {"ip": key.ip, "port": key.port, "service": key.service, "host": host}
            for key, host in items
        ],
    )
    for row in rows:
        ids[EndpointKey(row.ip, row.port, row.service)] = row.id
    return ids


async def get_targets(session: AsyncSession, endpoint_ids: Collection[int]) -> dict[int, Target]:
    """The scan target of each endpoint id that exists (unknown ids are left out)."""
    if not endpoint_ids:
        return {}
    rows = await session.scalars(select(Endpoint).where(any_int(Endpoint.id, endpoint_ids)))
    return {endpoint.id: endpoint_target(endpoint) for endpoint in rows}


@dataclass(frozen=True, slots=True)
class EndpointUse:
    """A domain's use of an endpoint in a sweep: through which host name, found how
    (``mx``, ``srv``, ``web``, …)."""

    domain_id: int
    domain: str
    host: str
    how: str


def _managed_by(manager: int) -> ColumnElement[bool]:
    """``domain_endpoints`` rows whose domain belongs to one of ``manager``'s customers."""
    return DomainEndpoint.domain_id.in_(
        select(Domain.id)
        .join(Customer, Customer.id == Domain.customer_id)
        .where(Customer.account_manager_id == manager)
    )


async def get_endpoint(
    session: AsyncSession, endpoint_id: int, *, manager: int | None = None
) -> Endpoint | None:
    """The endpoint, if it exists and (with ``manager``) that manager may see it."""
    stmt = select(Endpoint).where(Endpoint.id == endpoint_id)
    if manager is not None:
        stmt = stmt.where(
            exists().where(DomainEndpoint.endpoint_id == Endpoint.id, _managed_by(manager))
        )
    return await session.scalar(stmt)


async def endpoint_uses(
    session: AsyncSession, endpoint_id: int, *, manager: int | None = None
) -> tuple[int | None, list[EndpointUse]]:
    """The latest sweep that used the endpoint, and every use of it in that sweep, by
    domain name and host; (None, []) if no sweep used it. With ``manager``, only that
    manager's domains count (the latest sweep in which one of them used it)."""
    latest = select(func.max(DomainEndpoint.sweep_id)).where(
        DomainEndpoint.endpoint_id == endpoint_id
    )
    if manager is not None:
        latest = latest.where(_managed_by(manager))
    sweep_id = await session.scalar(latest)
    if sweep_id is None:
        return None, []
    stmt = (
        select(Domain.id, Domain.name, DomainEndpoint.host, DomainEndpoint.how)
        .join(Domain, Domain.id == DomainEndpoint.domain_id)
        .where(DomainEndpoint.endpoint_id == endpoint_id, DomainEndpoint.sweep_id == sweep_id)
        .order_by(Domain.name, DomainEndpoint.host, DomainEndpoint.how)
    )
    if manager is not None:
        stmt = stmt.where(_managed_by(manager))
    rows = await session.execute(stmt)
    return sweep_id, [EndpointUse(r.id, r.name, r.host, r.how) for r in rows]


async def endpoint_results(
    session: AsyncSession,
    endpoint_id: int,
    *,
    before: int | None,
    limit: int,
    documents: bool = True,
) -> list[Row[Any]]:
    """A page of the endpoint's results across sweeps, newest (last stored) first:
    rows of ``id`` (the result's), ``sweep_id``, ``scanned_at``, ``status``,
    ``error_kind`` and, with ``documents``, ``document``. Up to ``limit + 1`` rows
    with ids below ``before`` (the last id of the previous page)."""
    columns: list[Any] = [
        ScanResult.id,
        ScanResult.sweep_id,
        ScanResult.scanned_at,
        ScanResult.status,
        ScanResult.error_kind,
    ]
    if documents:
        columns.append(ScanResult.document)
    stmt = select(*columns).where(ScanResult.endpoint_id == endpoint_id)
    if before is not None:
        stmt = stmt.where(ScanResult.id < before)
    rows = await session.execute(stmt.order_by(ScanResult.id.desc()).limit(limit + 1))
    return list(rows.all())
