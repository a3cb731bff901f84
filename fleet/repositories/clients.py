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
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, func, or_, select, text
from sqlalchemy.dialects.postgresql import insert
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


#: ``mail_client_days`` columns after the key, in the order of :data:`_WRITE_DAYS`.
_DAY_COLUMNS = (
    "logins",
    "legacy_logins",
    "plaintext_logins",
    "unknown_logins",
    "protocols",
    "ciphers",
    "mechanisms",
    "services",
    "client_ips",
    "client_ips_other",
    "first_seen",
    "last_seen",
    "legacy_first",
    "legacy_last",
    "plaintext_first",
    "plaintext_last",
)
#: The counter maps and how many keys each keeps.
_MAPS = {
    "protocols": _MAX_KEYS,
    "ciphers": _MAX_KEYS,
    "mechanisms": _MAX_KEYS,
    "services": _MAX_KEYS,
    "client_ips": MAX_CLIENT_IPS,
}
#: Serialises the writers of ``mail_client_days`` (a transaction-level advisory lock):
#: the maps of a stored row are read, merged here and written back, so two ingests
#: must not interleave between the read and the write.
_DAYS_LOCK = 0x746C_7366_6461_7973  # "tlsfdays"

_LOCK_DAYS = text("SELECT pg_advisory_xact_lock(:key)")
# Keys and rows travel as one JSON document each: encoding and decoding it is one C
# call on either side, where array parameters cost a Python call per element.
_STORED_MAPS = text(
    "SELECT json_agg(json_build_array(account_id, day, "
    + ", ".join(_MAPS)
    + "))::text FROM (SELECT d.* FROM mail_client_days AS d"
    " JOIN (SELECT (k->>0)::integer AS account_id, (k->>1)::date AS day"
    " FROM json_array_elements(CAST(:keys AS json)) AS k) AS k"
    " ON d.account_id = k.account_id AND d.day = k.day"
    " FOR UPDATE OF d) AS d"
)


def _write_days_statement() -> Any:
    types = dict.fromkeys(_DAY_COLUMNS, "integer") | dict.fromkeys(_MAPS, "jsonb")
    types |= dict.fromkeys(_DAY_COLUMNS[10:], "timestamptz")
    values = ["(r->>0)::integer", "(r->>1)::date"] + [
        f"(r->{n})::jsonb" if types[c] == "jsonb" else f"(r->>{n})::{types[c]}"
        for n, c in enumerate(_DAY_COLUMNS, start=2)
    ]
    merged = {c: f"d.{c} + EXCLUDED.{c}" for c in _DAY_COLUMNS[:4]}
    merged |= {c: f"EXCLUDED.{c}" for c in _MAPS}  # merged before, under the lock
    merged["client_ips_other"] = "d.client_ips_other + EXCLUDED.client_ips_other"
    merged |= {c: f"least(d.{c}, EXCLUDED.{c})" for c in _DAY_COLUMNS[10::2]}
    merged |= {c: f"greatest(d.{c}, EXCLUDED.{c})" for c in _DAY_COLUMNS[11::2]}
    return text(
        "INSERT INTO mail_client_days AS d (account_id, day, "
        + ", ".join(_DAY_COLUMNS)
        + ") SELECT "
        + ", ".join(values)
        + " FROM json_array_elements(CAST(:rows AS json)) AS r"
        " ON CONFLICT (account_id, day) DO UPDATE SET "
        + ", ".join(f"{c} = {merged[c]}" for c in _DAY_COLUMNS)
    )


_WRITE_DAYS = _write_days_statement()


def _add_counts(into: dict[str, int], new: Mapping[str, int], keep: int) -> int:
    """Add ``new``'s counts to ``into``, in ``new``'s order; a key not in ``into`` joins
    while it has fewer than ``keep``. The sum of the counts that did not fit."""
    dropped = 0
    for key, n in new.items():
        if key in into:
            into[key] += n
        elif len(into) < keep:
            into[key] = n
        else:
            dropped += n
    return dropped


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


async def add_days(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Add per-(account, day) counters (``mail_client_days`` columns; one row per key)
    to the stored ones, in three statements however many rows: lock, read the maps of
    the rows already stored (``FOR UPDATE``), write every row (``ON CONFLICT DO UPDATE``
    adds the counts, keeps the earliest and latest times, and takes the maps merged
    here). A map keeps the keys it has and takes new ones in the given order while
    there is room (first come, first kept: adding counts in any number of steps gives
    the same maps as adding them at once). A row's ``client_ips`` may name more than
    :data:`MAX_CLIENT_IPS` addresses, first seen first; logins from those that find no
    room are counted in ``client_ips_other``."""
    if not rows:
        return
    await session.execute(_LOCK_DAYS, {"key": _DAYS_LOCK})
    keys = [(r["account_id"], r["day"].isoformat()) for r in rows]
    found = await session.scalar(_STORED_MAPS, {"keys": json.dumps(keys)})
    stored = {(s[0], s[1]): s[2:] for s in json.loads(found)} if found else {}
    payload = []
    for key, row in zip(keys, rows, strict=True):
        other = row["client_ips_other"]
        maps = []
        old = stored.get(key)
        for n, (name, keep) in enumerate(_MAPS.items()):
            counts = row[name]
            if old is not None:
                dropped = _add_counts(old[n], counts, keep)
                counts = old[n]
            elif len(counts) > keep:
                counts = {}
                dropped = _add_counts(counts, row[name], keep)
            else:
                dropped = 0
            if name == "client_ips":
                other += dropped
            maps.append(counts)
        payload.append(
            [
                *key,
                row["logins"],
                row["legacy_logins"],
                row["plaintext_logins"],
                row["unknown_logins"],
                *maps,
                other,
                *(_iso(row[c]) for c in _DAY_COLUMNS[10:]),
            ]
        )
    await session.execute(_WRITE_DAYS, {"rows": json.dumps(payload)})


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
