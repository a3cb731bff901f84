"""Notices: the queries :mod:`fleet.notices` builds its lifecycle on, and the API's reads.

A notice belongs to a customer; an account manager's key sees the notices of the
customers it manages now (``customers.account_manager_id``), whatever manager was
recorded when the notice opened.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Collection

from sqlalchemy import Select, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.db.models import (
    NOTICE_ACTIVE,
    CertificateWarning,
    Customer,
    Domain,
    DomainEndpoint,
    Endpoint,
    Finding,
    FindingRun,
    MailAccount,
    MailClientDay,
    Notice,
    ScanResult,
    Sweep,
    SweepDomain,
)
from fleet.repositories._sql import any_int
from fleet.repositories.clients import FINDING_LEGACY, FINDING_PLAINTEXT

__all__ = [
    "certificate_dates",
    "customer_notices",
    "customers_by_id",
    "customers_in_sweep",
    "customers_with_account_notices",
    "domains_by_endpoint",
    "endpoints_by_id",
    "expire_exceptions",
    "get_notice",
    "latest_synced_sweep",
    "list_notices",
    "lock_customer",
    "mailbox_problems",
    "mark_synced",
    "newer_synced_sweep",
    "notices_due_for_confirmation",
    "problem_pairs",
    "record_certificate_warning",
    "unsynced_sweeps",
]


async def customers_in_sweep(session: AsyncSession, sweep_id: int) -> list[Customer]:
    """The customers with a domain in the sweep, by id."""
    rows = await session.scalars(
        select(Customer)
        .where(
            Customer.id.in_(
                select(Domain.customer_id)
                .join(SweepDomain, SweepDomain.domain_id == Domain.id)
                .where(SweepDomain.sweep_id == sweep_id)
            )
        )
        .order_by(Customer.id)
    )
    return list(rows)


async def problem_pairs(
    session: AsyncSession, sweep_id: int, min_rank: int
) -> dict[int, set[tuple[int, str]]]:
    """Per customer: the (endpoint, rule code) of the sweep's findings of at least
    ``min_rank`` on endpoints its domains used in the sweep."""
    rows = await session.execute(
        select(Domain.customer_id, Finding.endpoint_id, Finding.code)
        .join(
            DomainEndpoint,
            (DomainEndpoint.sweep_id == Finding.sweep_id)
            & (DomainEndpoint.endpoint_id == Finding.endpoint_id),
        )
        .join(Domain, Domain.id == DomainEndpoint.domain_id)
        .where(Finding.sweep_id == sweep_id, Finding.severity_rank >= min_rank)
        .distinct()
    )
    found: dict[int, set[tuple[int, str]]] = defaultdict(set)
    for customer_id, endpoint_id, code in rows.all():
        found[customer_id].add((endpoint_id, code))
    return dict(found)


async def certificate_dates(
    session: AsyncSession, sweep_id: int, before: dt.datetime
) -> dict[int, dict[int, dt.datetime]]:
    """Per customer: the certificate expiry (``not_after``) of each endpoint its domains
    used in the sweep whose certificate expires after the sweep's judgement but before
    ``before``."""
    rows = await session.execute(
        select(Domain.customer_id, ScanResult.endpoint_id, ScanResult.cert_not_after)
        .join(
            DomainEndpoint,
            (DomainEndpoint.sweep_id == ScanResult.sweep_id)
            & (DomainEndpoint.endpoint_id == ScanResult.endpoint_id),
        )
        .join(Domain, Domain.id == DomainEndpoint.domain_id)
        .where(
            ScanResult.sweep_id == sweep_id,
            ScanResult.status == "ok",
            ScanResult.cert_not_after.is_not(None),
            ScanResult.cert_not_after < before,
        )
        .distinct()
    )
    found: dict[int, dict[int, dt.datetime]] = defaultdict(dict)
    for customer_id, endpoint_id, not_after in rows.all():
        if not_after is not None:
            found[customer_id][endpoint_id] = not_after
    return dict(found)


async def lock_customer(session: AsyncSession, customer_id: int) -> Customer | None:
    """The customer, its row locked until the transaction ends: notice changes for one
    customer (a sync, a confirmation, an API call) happen one at a time."""
    return await session.scalar(
        select(Customer)
        .where(Customer.id == customer_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


async def customer_notices(session: AsyncSession, customer_id: int) -> list[Notice]:
    """Every notice of a customer, newest first."""
    rows = await session.scalars(
        select(Notice)
        .where(Notice.customer_id == customer_id)
        .order_by(Notice.id.desc())
        .execution_options(populate_existing=True)
    )
    return list(rows)


async def newer_synced_sweep(session: AsyncSession, sweep_id: int, customer_id: int) -> bool:
    """Whether a later sweep covering one of the customer's domains has brought its
    notices up to date already (a late job must not turn the clock back)."""
    found = await session.scalar(
        select(FindingRun.sweep_id)
        .join(SweepDomain, SweepDomain.sweep_id == FindingRun.sweep_id)
        .join(Domain, Domain.id == SweepDomain.domain_id)
        .where(
            FindingRun.sweep_id > sweep_id,
            FindingRun.notices_synced_at.is_not(None),
            Domain.customer_id == customer_id,
        )
        .limit(1)
    )
    return found is not None


async def record_certificate_warning(
    session: AsyncSession,
    *,
    customer_id: int,
    endpoint_id: int,
    not_after: dt.datetime,
    step: int,
    notice_id: int | None,
    sweep_id: int,
) -> bool:
    """Remember that a certificate step was warned about; False if it was before."""
    new = await session.scalar(
        insert(CertificateWarning)
        .values(
            customer_id=customer_id,
            endpoint_id=endpoint_id,
            not_after=not_after,
            step=step,
            notice_id=notice_id,
            sweep_id=sweep_id,
        )
        .on_conflict_do_nothing()
        .returning(CertificateWarning.step)
    )
    return new is not None


async def endpoints_by_id(session: AsyncSession, ids: Collection[int]) -> dict[int, Endpoint]:
    """Endpoints by id (unknown ids left out)."""
    if not ids:
        return {}
    rows = await session.scalars(select(Endpoint).where(any_int(Endpoint.id, ids)))
    return {e.id: e for e in rows}


async def domains_by_endpoint(
    session: AsyncSession, sweep_id: int, customer_id: int, endpoint_ids: Collection[int]
) -> dict[int, list[str]]:
    """Per endpoint: the customer's domains that used it in the sweep, by name."""
    rows = await session.execute(
        select(DomainEndpoint.endpoint_id, Domain.name)
        .join(Domain, Domain.id == DomainEndpoint.domain_id)
        .where(
            DomainEndpoint.sweep_id == sweep_id,
            Domain.customer_id == customer_id,
            any_int(DomainEndpoint.endpoint_id, endpoint_ids),
        )
        .distinct()
    )
    found: dict[int, set[str]] = defaultdict(set)
    for endpoint_id, name in rows.all():
        found[endpoint_id].add(name)
    return {e: sorted(names) for e, names in found.items()}


def _visible(manager: int | None) -> Select[Notice]:
    stmt = select(Notice)
    if manager is not None:
        stmt = stmt.where(
            Notice.customer_id.in_(
                select(Customer.id).where(Customer.account_manager_id == manager)
            )
        )
    return stmt


async def get_notice(
    session: AsyncSession,
    notice_id: int,
    *,
    manager: int | None = None,
    for_update: bool = False,
) -> Notice | None:
    """One notice (``manager``: only if its customer is that account manager's)."""
    stmt = _visible(manager).where(Notice.id == notice_id)
    if for_update:
        stmt = stmt.with_for_update(of=Notice)
    return await session.scalar(stmt.execution_options(populate_existing=True))


async def list_notices(
    session: AsyncSession,
    *,
    after: int | None,
    limit: int,
    manager: int | None = None,
    status: str | None = None,
    customer_id: int | None = None,
    account_manager_id: int | None = None,
) -> list[Notice]:
    """Notices in id order (keyset page: up to ``limit + 1``)."""
    stmt = _visible(manager)
    if after is not None:
        stmt = stmt.where(Notice.id > after)
    if status is not None:
        stmt = stmt.where(Notice.status == status)
    if customer_id is not None:
        stmt = stmt.where(Notice.customer_id == customer_id)
    if account_manager_id is not None:
        stmt = stmt.where(
            Notice.customer_id.in_(
                select(Customer.id).where(Customer.account_manager_id == account_manager_id)
            )
        )
    return list(await session.scalars(stmt.order_by(Notice.id).limit(limit + 1)))


async def expire_exceptions(session: AsyncSession, today: dt.date) -> list[int]:
    """Exceptions whose ``exception_until`` has passed go back to ``open`` (to be
    confirmed by a re-scan and sent again); their ids."""
    rows = await session.scalars(
        update(Notice)
        .where(Notice.status == "exception", Notice.exception_until < today)
        .values(status="open", updated_at=func.now())
        .returning(Notice.id)
        .execution_options(synchronize_session=False)
    )
    return list(rows)


async def notices_due_for_confirmation(session: AsyncSession) -> list[int]:
    """Open notices (waiting for their confirming re-scan), oldest first."""
    return list(
        await session.scalars(select(Notice.id).where(Notice.status == "open").order_by(Notice.id))
    )


async def unsynced_sweeps(session: AsyncSession, *, limit: int = 20) -> list[int]:
    """Closed sweeps whose findings or notices are not done (their job was lost),
    among the newest ``limit`` closed ones."""
    recent = (
        select(Sweep.id)
        .where(Sweep.status == "done")
        .order_by(Sweep.id.desc())
        .limit(limit)
        .subquery()
    )
    rows = await session.scalars(
        select(recent.c.id)
        .outerjoin(FindingRun, FindingRun.sweep_id == recent.c.id)
        .where(FindingRun.notices_synced_at.is_(None))
        .order_by(recent.c.id)
    )
    return list(rows)


async def mark_synced(session: AsyncSession, sweep_id: int) -> None:
    """Record that a sweep's notices are up to date."""
    await session.execute(
        update(FindingRun)
        .where(FindingRun.sweep_id == sweep_id)
        .values(notices_synced_at=func.now())
        .execution_options(synchronize_session=False)
    )


async def latest_synced_sweep(session: AsyncSession) -> int | None:
    """The newest sweep whose notices were brought up to date (the sweep a notice
    opened by mail-log telemetry alone records), or None before the first one."""
    return await session.scalar(
        select(func.max(FindingRun.sweep_id)).where(FindingRun.notices_synced_at.is_not(None))
    )


async def customers_with_account_notices(session: AsyncSession) -> set[int]:
    """Customers with an active notice that has an account problem (mail-log
    telemetry: ``{"account", "code"}``)."""
    rows = await session.scalars(
        select(Notice.customer_id)
        .where(
            Notice.status.in_(NOTICE_ACTIVE),
            func.jsonb_path_exists(Notice.problems, text("'$[*].account'::jsonpath")),
        )
        .distinct()
    )
    return set(rows)


async def customers_by_id(session: AsyncSession, ids: Collection[int]) -> list[Customer]:
    """Customers by id, in id order (unknown ids left out)."""
    if not ids:
        return []
    rows = await session.scalars(
        select(Customer).where(any_int(Customer.id, ids)).order_by(Customer.id)
    )
    return list(rows)


async def mailbox_problems(
    session: AsyncSession, since: dt.date
) -> dict[int, set[tuple[str, str]]]:
    """Per customer: the ``(account, finding code)`` of its mailboxes with TLS 1.0/1.1
    (``clients.legacy_tls``) or plaintext (``clients.plaintext_login``) logins on a day
    ``>= since`` — the mailbox part of its problem set. Accounts whose domain the
    inventory does not have belong to no customer and are left out."""
    m = MailClientDay
    legacy = func.sum(m.legacy_logins)
    plaintext = func.sum(m.plaintext_logins)
    rows = await session.execute(
        select(Customer.id, MailAccount.account, legacy, plaintext)
        .select_from(m)
        .join(MailAccount, MailAccount.id == m.account_id)
        .join(Domain, Domain.name == MailAccount.domain)
        .join(Customer, Customer.id == Domain.customer_id)
        .where(m.day >= since)
        .group_by(Customer.id, MailAccount.id)
        .having((legacy > 0) | (plaintext > 0))
    )
    found: dict[int, set[tuple[str, str]]] = defaultdict(set)
    for customer_id, account, legacy_logins, plaintext_logins in rows.all():
        if legacy_logins:
            found[customer_id].add((account, FINDING_LEGACY))
        if plaintext_logins:
            found[customer_id].add((account, FINDING_PLAINTEXT))
    return dict(found)
