"""Endpoints: one row per ``(ip, port, service)`` for all time."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import ReturningInsert

from fleet.db.models import Endpoint
from fleet.repositories._sql import any_int, table_of
from scanner.discovery import EndpointKey
from scanner.models import Target
from scanner.services import service_named

__all__ = ["endpoint_target", "ensure_endpoints", "get_targets"]


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
