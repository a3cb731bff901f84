"""Queries the sweep commands need beyond :mod:`fleet.repositories.sweeps`: naming a
sweep's scope from the command line, listing sweeps with their counts, and reading
the extra certificates a sweep stored."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.db.models import Customer, Domain, ScanCertificate, ScanResult, Sweep, SweepDomain

__all__ = [
    "SweepSummary",
    "customer_ids",
    "known_domains",
    "list_sweeps",
    "sweep_certificates",
    "sweep_discoveries",
]


async def customer_ids(session: AsyncSession, names: Collection[str]) -> dict[str, int]:
    """The ids of the customers named (exactly, as imported); unknown names are left out."""
    if not names:
        return {}
    rows = await session.execute(
        select(Customer.name, Customer.id).where(Customer.name.in_(list(names)))
    )
    return {row.name: row.id for row in rows}


async def known_domains(session: AsyncSession, names: Collection[str]) -> set[str]:
    """Those of the (A-label) domain names that are in the inventory and active."""
    if not names:
        return set()
    rows = await session.scalars(
        select(Domain.name).where(Domain.name.in_(list(names)), Domain.active)
    )
    return set(rows)


@dataclass(frozen=True, slots=True)
class SweepSummary:
    """One line of ``tlsfleet sweep list``."""

    id: int
    kind: str
    status: str
    scope: dict[str, Any]
    created_at: dt.datetime
    finished_at: dt.datetime | None
    total: int
    done: int
    failed: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "scope": self.scope,
            "created_at": self.created_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "total": self.total,
            "done": self.done,
            "failed": self.failed,
        }


async def list_sweeps(session: AsyncSession, *, limit: int = 20) -> list[SweepSummary]:
    """The latest ``limit`` sweeps, newest first, with their result counts (one query)."""
    counts = (
        select(
            ScanResult.sweep_id,
            func.count().label("done"),
            func.count().filter(ScanResult.status == "error").label("failed"),
        )
        .group_by(ScanResult.sweep_id)
        .subquery()
    )
    latest = select(Sweep).order_by(Sweep.id.desc()).limit(limit).subquery()
    rows = await session.execute(
        select(
            latest.c.id,
            latest.c.kind,
            latest.c.status,
            latest.c.scope,
            latest.c.created_at,
            latest.c.finished_at,
            latest.c.total_endpoints,
            func.coalesce(counts.c.done, 0),
            func.coalesce(counts.c.failed, 0),
        )
        .outerjoin(counts, counts.c.sweep_id == latest.c.id)
        .order_by(latest.c.id.desc())
    )
    return [SweepSummary(*row) for row in rows]


async def sweep_certificates(
    session: AsyncSession, sweep_id: int, endpoint_id: int
) -> dict[str, dict[str, Any] | None]:
    """The certificates stored for an endpoint's further SNI names in a sweep, by name
    (None: no handshake succeeded under that name)."""
    rows = await session.execute(
        select(ScanCertificate.sni, ScanCertificate.certificate).where(
            ScanCertificate.sweep_id == sweep_id, ScanCertificate.endpoint_id == endpoint_id
        )
    )
    return {row.sni: row.certificate for row in rows}


async def sweep_discoveries(session: AsyncSession, sweep_id: int) -> dict[str, dict[str, Any]]:
    """What discovery stored for each domain of a sweep (the Discovery document), by
    domain name."""
    rows = await session.execute(
        select(Domain.name, SweepDomain.discovery)
        .join(SweepDomain, SweepDomain.domain_id == Domain.id)
        .where(SweepDomain.sweep_id == sweep_id)
    )
    return {row.name: row.discovery for row in rows}
