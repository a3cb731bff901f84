"""Findings per sweep: storing them once, reading them for notices and the API.

A finding reaches domains, customers and account managers through the sweep's
``domain_endpoints`` (``(endpoint_id, sweep_id)``), so a finding is listed under every
customer whose domain used the endpoint in that sweep.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.db.models import (
    Customer,
    Domain,
    DomainEndpoint,
    Endpoint,
    Finding,
    FindingRun,
    ScanResult,
)
from fleet.repositories._sql import any_int, table_of

__all__ = [
    "get_run",
    "latest_judged_sweep",
    "list_findings",
    "result_documents",
    "store_findings",
    "sweep_findings",
]


async def get_run(session: AsyncSession, sweep_id: int) -> FindingRun | None:
    """The marker of a sweep whose findings are stored, if they are."""
    return await session.scalar(
        select(FindingRun)
        .where(FindingRun.sweep_id == sweep_id)
        .execution_options(populate_existing=True)
    )


async def result_documents(
    session: AsyncSession, sweep_id: int, *, after: int, limit: int
) -> list[tuple[int, int, dict[str, Any]]]:
    """``(result id, endpoint id, document)`` of a sweep's results in id order, after
    ``after`` (keyset batches)."""
    rows = await session.execute(
        select(ScanResult.id, ScanResult.endpoint_id, ScanResult.document)
        .where(ScanResult.sweep_id == sweep_id, ScanResult.id > after)
        .order_by(ScanResult.id)
        .limit(limit)
    )
    return [(int(r[0]), int(r[1]), r[2]) for r in rows.all()]


def _insert_finding() -> Any:
    return insert(table_of(Finding)).on_conflict_do_nothing(
        constraint="uq_findings_sweep_endpoint_code"
    )


_INSERT_FINDING = _insert_finding()


async def store_findings(
    session: AsyncSession,
    sweep_id: int,
    rows: Sequence[dict[str, Any]],
    *,
    rules_version: str,
    profile: str,
    judged_at: dt.datetime,
) -> bool:
    """Store a sweep's findings and its run marker, once; True if this call did.

    The marker row is inserted first: of two jobs racing, the second waits on it and
    then stores nothing.
    """
    marker = await session.scalar(
        insert(FindingRun)
        .values(
            sweep_id=sweep_id,
            rules_version=rules_version,
            profile=profile,
            judged_at=judged_at,
            findings=len(rows),
        )
        .on_conflict_do_nothing(index_elements=["sweep_id"])
        .returning(FindingRun.sweep_id)
    )
    if marker is None:
        return False
    if rows:
        await session.execute(_INSERT_FINDING, list(rows))
    return True


async def sweep_findings(
    session: AsyncSession, sweep_id: int, endpoint_ids: Collection[int] | None = None
) -> list[Finding]:
    """A sweep's findings (optionally of some endpoints), by endpoint and code."""
    stmt = select(Finding).where(Finding.sweep_id == sweep_id)
    if endpoint_ids is not None:
        stmt = stmt.where(any_int(Finding.endpoint_id, endpoint_ids))
    return list(await session.scalars(stmt.order_by(Finding.endpoint_id, Finding.id)))


async def latest_judged_sweep(session: AsyncSession) -> int | None:
    """The newest closed sweep whose findings are stored."""
    return await session.scalar(
        select(FindingRun.sweep_id).order_by(FindingRun.sweep_id.desc()).limit(1)
    )


async def list_findings(
    session: AsyncSession,
    *,
    sweep_id: int,
    after: int | None,
    limit: int,
    min_rank: int | None = None,
    code: str | None = None,
    customer_id: int | None = None,
    account_manager_id: int | None = None,
) -> list[tuple[Finding, Endpoint]]:
    """A page of one sweep's findings in id order (up to ``limit + 1``), each with its
    endpoint; ``customer_id`` / ``account_manager_id``: only endpoints a domain of that
    customer (of that manager's customers) used in the sweep."""
    stmt = (
        select(Finding, Endpoint)
        .join(Endpoint, Endpoint.id == Finding.endpoint_id)
        .where(Finding.sweep_id == sweep_id)
    )
    if after is not None:
        stmt = stmt.where(Finding.id > after)
    if min_rank is not None:
        stmt = stmt.where(Finding.severity_rank >= min_rank)
    if code is not None:
        stmt = stmt.where(Finding.code == code)
    if customer_id is not None or account_manager_id is not None:
        used = (
            select(DomainEndpoint.id)
            .join(Domain, Domain.id == DomainEndpoint.domain_id)
            .where(
                DomainEndpoint.sweep_id == Finding.sweep_id,
                DomainEndpoint.endpoint_id == Finding.endpoint_id,
            )
        )
        if customer_id is not None:
            used = used.where(Domain.customer_id == customer_id)
        if account_manager_id is not None:
            used = used.join(Customer, Customer.id == Domain.customer_id).where(
                Customer.account_manager_id == account_manager_id
            )
        stmt = stmt.where(exists(used))
    rows = await session.execute(stmt.order_by(Finding.id).limit(limit + 1))
    return [(f, e) for f, e in rows.all()]
