"""Mail-client telemetry: accounts, per-day counters, ingest checkpoints, and the reads
behind the legacy-client findings, the impact view, notices and the dashboard.

An account reaches its customer and account manager through ``domains.name =
mail_accounts.domain``; accounts whose domain the inventory does not have are
*unmapped* (counted, never shown to an account manager). "In the window" means on a
day ``>= since``. Like every repository, these functions only flush; the caller commits.

The findings, derived from the counters in the window (not stored):

- ``clients.legacy_tls`` — accounts that logged in over TLS 1.0/1.1 (or SSL);
- ``clients.plaintext_login`` — accounts that logged in without TLS.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, func, or_, select, text
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.db.models import (
    Customer,
    Domain,
    LogSource,
    MailAccount,
    MailClientDay,
)
from fleet.repositories._sql import any_int, any_text, table_of

__all__ = [
    "FINDING_LEGACY",
    "FINDING_PLAINTEXT",
    "MAX_CLIENT_IPS",
    "ClientAccount",
    "Impact",
    "ImpactCustomer",
    "Kind",
    "add_days",
    "claim_connections",
    "customer_accounts",
    "impact",
    "list_accounts",
    "lock_source",
    "open_source",
    "prune_seen",
    "save_source",
    "unmapped_among",
    "upsert_accounts",
    "window_start",
]

FINDING_LEGACY = "clients.legacy_tls"
FINDING_PLAINTEXT = "clients.plaintext_login"
#: Client addresses kept per account and day (and shown per account).
MAX_CLIENT_IPS = 20
#: Keys kept in the other counter maps (there are a few dozen suites at most).
_MAX_KEYS = 200

#: ``legacy``: TLS 1.0/1.1 (or SSL) logins; ``plaintext``: logins without TLS; ``any``.
Kind = Literal["legacy", "plaintext", "any"]


# -- writing ------------------------------------------------------------------------------


async def upsert_accounts(
    session: AsyncSession, domains: Mapping[str, str | None]
) -> dict[str, int]:
    """Create the accounts not stored yet (or move them to a new domain); their ids."""
    if not domains:
        return {}
    table = table_of(MailAccount)
    statement = insert(table)
    statement = statement.on_conflict_do_update(
        index_elements=[table.c.account],
        set_={"domain": statement.excluded.domain},
        where=table.c.domain.is_distinct_from(statement.excluded.domain),
    )
    # Sorted, so that concurrent ingests lock rows in the same order.
    await session.execute(
        statement, [{"account": a, "domain": domains[a]} for a in sorted(domains)]
    )
    rows = await session.execute(
        select(MailAccount.account, MailAccount.id).where(any_text(MailAccount.account, domains))
    )
    return {account: int(id_) for account, id_ in rows.all()}


def _add_days_statement() -> Any:
    table = table_of(MailClientDay)
    statement = insert(table)
    new = statement.excluded
    c = table.c

    def counts(name: str, keep: int = _MAX_KEYS) -> ColumnElement[Any]:
        return func.tlsfleet_add_counts(c[name], new[name], keep, type_=JSONB)

    merged_ips = counts("client_ips", MAX_CLIENT_IPS)
    return statement.on_conflict_do_update(
        index_elements=[c.account_id, c.day],
        set_={
            "logins": c.logins + new.logins,
            "legacy_logins": c.legacy_logins + new.legacy_logins,
            "plaintext_logins": c.plaintext_logins + new.plaintext_logins,
            "unknown_logins": c.unknown_logins + new.unknown_logins,
            "protocols": counts("protocols"),
            "ciphers": counts("ciphers"),
            "mechanisms": counts("mechanisms"),
            "services": counts("services"),
            "client_ips": merged_ips,
            # Whatever the merged map dropped joins the "other" count.
            "client_ips_other": c.client_ips_other
            + new.client_ips_other
            + func.tlsfleet_sum_counts(c.client_ips)
            + func.tlsfleet_sum_counts(new.client_ips)
            - func.tlsfleet_sum_counts(merged_ips),
            "first_seen": func.least(c.first_seen, new.first_seen),
            "last_seen": func.greatest(c.last_seen, new.last_seen),
            "legacy_first": func.least(c.legacy_first, new.legacy_first),
            "legacy_last": func.greatest(c.legacy_last, new.legacy_last),
            "plaintext_first": func.least(c.plaintext_first, new.plaintext_first),
            "plaintext_last": func.greatest(c.plaintext_last, new.plaintext_last),
        },
    )


_ADD_DAYS = _add_days_statement()


async def add_days(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Add per-(account, day) counters (``mail_client_days`` columns) to the stored
    ones: one executemany, rows sorted by key (concurrent ingests lock in one order)."""
    if rows:
        ordered = sorted(rows, key=lambda r: (r["account_id"], r["day"]))
        await session.execute(_ADD_DAYS, ordered)


async def open_source(session: AsyncSession, identity: str, name: str) -> LogSource:
    """The checkpoint of a file by identity, created at offset 0 if new, locked."""
    table = table_of(LogSource)
    await session.execute(
        insert(table)
        .values(identity=identity, name=name)
        .on_conflict_do_nothing(index_elements=[table.c.identity])
    )
    source = await session.scalar(
        select(LogSource)
        .where(LogSource.identity == identity)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert source is not None
    return source


async def lock_source(session: AsyncSession, source_id: int) -> LogSource | None:
    """A checkpoint, locked until the transaction ends (a second ingest of the same
    file waits here, then sees the offset moved)."""
    return await session.scalar(
        select(LogSource)
        .where(LogSource.id == source_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


async def save_source(
    session: AsyncSession,
    source: LogSource,
    *,
    offset: int,
    lines: int,
    state: list[dict[str, Any]],
    name: str,
) -> None:
    """Move a (locked) checkpoint forward."""
    source.offset = offset
    source.lines = lines
    source.state = state
    source.name = name
    source.updated_at = dt.datetime.now(dt.UTC)
    await session.flush()


async def claim_connections(
    session: AsyncSession, keys: Sequence[tuple[dt.date, bytes]]
) -> set[tuple[dt.date, bytes]]:
    """Record stream connections as counted; the ones not recorded before (count
    those). ``keys`` must be unique."""
    if not keys:
        return set()
    rows = await session.execute(
        text(
            "INSERT INTO log_seen_connections (day, key) "
            "SELECT * FROM unnest(CAST(:days AS date[]), CAST(:keys AS bytea[])) "
            "ON CONFLICT DO NOTHING RETURNING day, key"
        ),
        {"days": [d for d, _ in keys], "keys": [k for _, k in keys]},
    )
    return {(r[0], bytes(r[1])) for r in rows.all()}


async def prune_seen(session: AsyncSession, before: dt.date) -> int:
    """Forget stream connection keys of days before ``before``; how many."""
    result = await session.execute(
        text("DELETE FROM log_seen_connections WHERE day < :before"), {"before": before}
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def unmapped_among(session: AsyncSession, account_ids: Sequence[int]) -> int:
    """How many of these accounts have no domain in the inventory."""
    if not account_ids:
        return 0
    known = select(Domain.id).where(Domain.name == MailAccount.domain).exists()
    count = await session.scalar(
        select(func.count())
        .select_from(MailAccount)
        .where(any_int(MailAccount.id, account_ids), ~known)
    )
    return int(count or 0)


# -- reading ------------------------------------------------------------------------------


@dataclass(slots=True)
class ClientAccount:
    """One account's logins in the window, with its customer where it is mapped."""

    id: int
    account: str
    domain: str | None
    customer_id: int | None
    customer: str | None
    account_manager_id: int | None
    logins: int
    legacy_logins: int
    plaintext_logins: int
    first_seen: dt.datetime
    last_seen: dt.datetime
    legacy_first: dt.datetime | None
    legacy_last: dt.datetime | None
    plaintext_first: dt.datetime | None
    plaintext_last: dt.datetime | None
    protocols: dict[str, int] = field(default_factory=dict)
    mechanisms: dict[str, int] = field(default_factory=dict)
    services: dict[str, int] = field(default_factory=dict)
    ciphers: dict[str, int] = field(default_factory=dict)
    client_ips: dict[str, int] = field(default_factory=dict)
    client_ips_other: int = 0

    @property
    def findings(self) -> list[str]:
        """The finding codes this account's window gives."""
        codes = []
        if self.legacy_logins:
            codes.append(FINDING_LEGACY)
        if self.plaintext_logins:
            codes.append(FINDING_PLAINTEXT)
        return codes


def _having(kind: Kind) -> ColumnElement[bool]:
    legacy = func.sum(MailClientDay.legacy_logins) > 0
    plaintext = func.sum(MailClientDay.plaintext_logins) > 0
    if kind == "legacy":
        return legacy
    if kind == "plaintext":
        return plaintext
    return or_(legacy, plaintext)


def _accounts_query(since: dt.date, kind: Kind) -> Any:
    m = MailClientDay
    query: Any = (
        select(
            MailAccount.id,
            MailAccount.account,
            MailAccount.domain,
            Customer.id,
            Customer.name,
            Customer.account_manager_id,
            func.sum(m.logins),
            func.sum(m.legacy_logins),
            func.sum(m.plaintext_logins),
            func.min(m.first_seen),
            func.max(m.last_seen),
            func.min(m.legacy_first),
            func.max(m.legacy_last),
            func.min(m.plaintext_first),
            func.max(m.plaintext_last),
        )
        .select_from(m)
        .join(MailAccount, MailAccount.id == m.account_id)
        .outerjoin(Domain, Domain.name == MailAccount.domain)
        .outerjoin(Customer, Customer.id == Domain.customer_id)
        .where(m.day >= since)
        .group_by(MailAccount.id, Customer.id)
        .having(_having(kind))
    )
    return query


def _scope(
    query: Select[Any],
    *,
    manager: int | None,
    customer_id: int | None,
    account_manager_id: int | None,
    domain: str | None,
) -> Select[Any]:
    if manager is not None:
        query = query.where(Customer.account_manager_id == manager)
    if account_manager_id is not None:
        query = query.where(Customer.account_manager_id == account_manager_id)
    if customer_id is not None:
        query = query.where(Customer.id == customer_id)
    if domain is not None:
        query = query.where(MailAccount.domain == domain)
    return query


def _merge(target: dict[str, int], counts: Mapping[str, Any]) -> None:
    for key, value in counts.items():
        target[key] = target.get(key, 0) + int(value)


async def _with_details(
    session: AsyncSession, since: dt.date, accounts: list[ClientAccount]
) -> list[ClientAccount]:
    if not accounts:
        return accounts
    by_id = {a.id: a for a in accounts}
    m = MailClientDay
    rows = await session.execute(
        select(
            m.account_id,
            m.protocols,
            m.mechanisms,
            m.services,
            m.ciphers,
            m.client_ips,
            m.client_ips_other,
        ).where(any_int(m.account_id, by_id), m.day >= since)
    )
    ips: dict[int, Counter[str]] = {}
    for account_id, protocols, mechanisms, services, ciphers, client_ips, other in rows.all():
        a = by_id[account_id]
        _merge(a.protocols, protocols)
        _merge(a.mechanisms, mechanisms)
        _merge(a.services, services)
        _merge(a.ciphers, ciphers)
        ips.setdefault(account_id, Counter()).update({k: int(v) for k, v in client_ips.items()})
        a.client_ips_other += int(other)
    for account_id, counter in ips.items():
        a = by_id[account_id]
        ranked = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
        a.client_ips = dict(ranked[:MAX_CLIENT_IPS])
        a.client_ips_other += sum(v for _, v in ranked[MAX_CLIENT_IPS:])
    return accounts


def _account(row: Any) -> ClientAccount:
    return ClientAccount(
        id=int(row[0]),
        account=row[1],
        domain=row[2],
        customer_id=row[3],
        customer=row[4],
        account_manager_id=row[5],
        logins=int(row[6]),
        legacy_logins=int(row[7]),
        plaintext_logins=int(row[8]),
        first_seen=row[9],
        last_seen=row[10],
        legacy_first=row[11],
        legacy_last=row[12],
        plaintext_first=row[13],
        plaintext_last=row[14],
    )


async def list_accounts(
    session: AsyncSession,
    since: dt.date,
    *,
    after: int | None = None,
    limit: int = 50,
    kind: Kind = "any",
    manager: int | None = None,
    customer_id: int | None = None,
    account_manager_id: int | None = None,
    domain: str | None = None,
) -> list[ClientAccount]:
    """Accounts with legacy (or plaintext, or either) logins in the window, in id order
    after ``after``: up to ``limit + 1`` (keyset pages), with their merged counters."""
    query = _scope(
        _accounts_query(since, kind),
        manager=manager,
        customer_id=customer_id,
        account_manager_id=account_manager_id,
        domain=domain,
    )
    if after is not None:
        query = query.where(MailAccount.id > after)
    rows = await session.execute(query.order_by(MailAccount.id).limit(limit + 1))
    return await _with_details(session, since, [_account(r) for r in rows.all()])


async def customer_accounts(
    session: AsyncSession, customer_id: int, since: dt.date, *, limit: int = 100
) -> list[ClientAccount]:
    """A customer's accounts with legacy or plaintext logins in the window (for its
    notice), most legacy and plaintext logins first, at most ``limit``."""
    query = _scope(
        _accounts_query(since, "any"),
        manager=None,
        customer_id=customer_id,
        account_manager_id=None,
        domain=None,
    )
    m = MailClientDay
    rows = await session.execute(
        query.order_by(
            (func.sum(m.legacy_logins) + func.sum(m.plaintext_logins)).desc(), MailAccount.account
        ).limit(limit)
    )
    return await _with_details(session, since, [_account(r) for r in rows.all()])


@dataclass(frozen=True, slots=True)
class ImpactCustomer:
    customer_id: int
    customer: str
    account_manager_id: int | None
    accounts: int
    legacy_accounts: int
    plaintext_accounts: int
    only_legacy_accounts: int
    last_seen: dt.datetime


@dataclass(frozen=True, slots=True)
class Impact:
    """Who would lose mail access if TLS 1.0/1.1 (``legacy``), plaintext login
    (``plaintext``) or both (``any``) were switched off now."""

    since: dt.date
    kind: Kind
    customers: int
    accounts: int
    #: Accounts that used nothing but what is switched off in the window: all of
    #: their clients stop (the others have at least one client that keeps working).
    only_affected_accounts: int
    unmapped_accounts: int
    customer_list: list[ImpactCustomer]


async def impact(
    session: AsyncSession,
    since: dt.date,
    *,
    kind: Kind = "legacy",
    manager: int | None = None,
    customer_id: int | None = None,
    account_manager_id: int | None = None,
) -> Impact:
    """Counts and the customers affected (most affected accounts first); unmapped
    accounts are counted only without a manager scope or filter."""
    m = MailClientDay
    affected = {
        "legacy": m.legacy_logins,
        "plaintext": m.plaintext_logins,
        "any": m.legacy_logins + m.plaintext_logins,
    }[kind]
    per_account = (
        select(
            m.account_id.label("account_id"),
            func.sum(affected).label("affected"),
            func.sum(m.logins - m.unknown_logins).label("known"),
            func.sum(m.legacy_logins).label("legacy"),
            func.sum(m.plaintext_logins).label("plaintext"),
            func.max(m.last_seen).label("last_seen"),
        )
        .where(m.day >= since)
        .group_by(m.account_id)
        .having(func.sum(affected) > 0)
        .subquery()
    )
    only = per_account.c.affected >= per_account.c.known
    totals: Any = (
        select(
            Customer.id,
            Customer.name,
            Customer.account_manager_id,
            func.count(),
            func.count().filter(per_account.c.legacy > 0),
            func.count().filter(per_account.c.plaintext > 0),
            func.count().filter(only),
            func.max(per_account.c.last_seen),
        )
        .select_from(per_account)
        .join(MailAccount, MailAccount.id == per_account.c.account_id)
        .join(Domain, Domain.name == MailAccount.domain)
        .join(Customer, Customer.id == Domain.customer_id)
        .group_by(Customer.id)
    )
    query = _scope(
        totals,
        manager=manager,
        customer_id=customer_id,
        account_manager_id=account_manager_id,
        domain=None,
    )
    rows = (await session.execute(query)).all()
    customers = sorted(
        (
            ImpactCustomer(
                customer_id=int(r[0]),
                customer=r[1],
                account_manager_id=r[2],
                accounts=int(r[3]),
                legacy_accounts=int(r[4]),
                plaintext_accounts=int(r[5]),
                only_legacy_accounts=int(r[6]),
                last_seen=r[7],
            )
            for r in rows
        ),
        key=lambda c: (-c.accounts, c.customer),
    )
    unmapped = 0
    if manager is None and customer_id is None and account_manager_id is None:
        known = select(Domain.id).where(Domain.name == MailAccount.domain).exists()
        unmapped = int(
            await session.scalar(
                select(func.count())
                .select_from(per_account)
                .join(MailAccount, MailAccount.id == per_account.c.account_id)
                .where(~known)
            )
            or 0
        )
    return Impact(
        since=since,
        kind=kind,
        customers=len(customers),
        accounts=sum(c.accounts for c in customers),
        only_affected_accounts=sum(c.only_legacy_accounts for c in customers),
        unmapped_accounts=unmapped,
        customer_list=customers,
    )


def window_start(today: dt.date, days: int) -> dt.date:
    """The first day of a window of ``days`` days ending today."""
    return today - dt.timedelta(days=max(days, 1) - 1)
