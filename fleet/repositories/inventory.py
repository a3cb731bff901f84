"""The inventory: account managers, customers and domains; the domains of a sweep scope.

Lists are keyset pages: ``after`` is the last id of the previous page, and a list
returns up to ``limit + 1`` rows so that the caller knows whether there is a next one.
``manager`` scopes a read to one account manager's customers (None: everything). Like
every repository, these functions only flush; the caller commits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, delete, func, select, tuple_
from sqlalchemy.dialects.postgresql import Insert, insert
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.db.models import AccountManager, Customer, Domain
from fleet.inventory import InventoryRecord
from fleet.repositories._sql import any_int, any_text, table_of

__all__ = [
    "DomainRef",
    "InventoryModel",
    "UpsertCounts",
    "delete_row",
    "domains_in_scope",
    "get_customer",
    "get_domain",
    "get_manager",
    "iter_inventory",
    "list_customers",
    "list_domains",
    "list_managers",
    "upsert_inventory",
    "validate_scope",
]

#: The three inventory tables.
InventoryModel = AccountManager | Customer | Domain

#: Records per batch in :func:`upsert_inventory`.
BATCH = 1000


@dataclass(slots=True)
class UpsertCounts:
    """What an import did, counted per row (domain)."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0

    def __iadd__(self, other: UpsertCounts) -> UpsertCounts:
        self.created += other.created
        self.updated += other.updated
        self.unchanged += other.unchanged
        return self


@dataclass(frozen=True, slots=True)
class DomainRef:
    """A domain as a sweep needs it: id, A-label name, customer."""

    id: int
    name: str
    customer_id: int


async def upsert_inventory(
    session: AsyncSession, records: Sequence[InventoryRecord], *, batch_size: int = BATCH
) -> UpsertCounts:
    """Create or update account managers, customers and domains from validated records.

    Idempotent: importing the same records again changes nothing and counts every row
    ``unchanged``. Keys: account managers by e-mail (the name is updated), customers by
    name, domains by name (customer and tags are replaced; an inactive domain becomes
    active again). A record without an account manager leaves its customer's as it is.
    Nothing is deleted. Records must be unique by domain (:func:`fleet.inventory.
    validate_rows` guarantees it). Seven statements per batch of ``batch_size``, whatever its size.
    """
    counts = UpsertCounts()
    for start in range(0, len(records), batch_size):
        counts += await _upsert_batch(session, records[start : start + batch_size])
    return counts


def _upserts() -> tuple[Insert, Insert, Insert]:
    """The three upserts of an import, built once (each runs as one executemany)."""
    managers = table_of(AccountManager)
    manager = insert(managers)
    manager = manager.on_conflict_do_update(
        index_elements=[managers.c.email],
        set_={"name": manager.excluded.name},
        where=managers.c.name.is_distinct_from(manager.excluded.name),
    )
    customers = table_of(Customer)
    customer = insert(customers)
    # A record without a manager leaves the customer's as it is.
    new_manager = func.coalesce(
        customer.excluded.account_manager_id, customers.c.account_manager_id
    )
    customer = customer.on_conflict_do_update(
        index_elements=[customers.c.name],
        set_={"account_manager_id": new_manager},
        where=customers.c.account_manager_id.is_distinct_from(new_manager),
    )
    domains = table_of(Domain)
    domain = insert(domains)
    domain = domain.on_conflict_do_update(
        index_elements=[domains.c.name],
        set_={
            "customer_id": domain.excluded.customer_id,
            "tags": domain.excluded.tags,
            "active": True,
            "updated_at": func.now(),
        },
        where=tuple_(domains.c.customer_id, domains.c.tags, domains.c.active).is_distinct_from(
            tuple_(domain.excluded.customer_id, domain.excluded.tags, True)
        ),
    )
    return manager, customer, domain


_UPSERT_MANAGER, _UPSERT_CUSTOMER, _UPSERT_DOMAIN = _upserts()


async def _upsert_batch(session: AsyncSession, batch: Sequence[InventoryRecord]) -> UpsertCounts:
    counts = UpsertCounts()
    before = await _current_state(session, [r.domain for r in batch])

    managers = {
        r.account_manager_email: r.account_manager
        for r in batch
        if r.account_manager_email is not None and r.account_manager is not None
    }
    manager_ids: dict[str, int] = {}
    if managers:
        await session.execute(
            _UPSERT_MANAGER,
            [{"email": email, "name": name} for email, name in sorted(managers.items())],
        )
        rows = await session.execute(
            select(AccountManager.email, AccountManager.id).where(
                any_text(AccountManager.email, managers)
            )
        )
        manager_ids = dict(rows.all())

    customer_manager: dict[str, int | None] = {}
    for record in batch:
        manager = (
            manager_ids[record.account_manager_email]
            if record.account_manager_email is not None
            else None
        )
        if customer_manager.get(record.customer) is None:
            customer_manager[record.customer] = manager
    await session.execute(
        _UPSERT_CUSTOMER,
        [{"name": name, "account_manager_id": am} for name, am in sorted(customer_manager.items())],
    )
    rows_c = await session.execute(
        select(Customer.name, Customer.id).where(any_text(Customer.name, customer_manager))
    )
    customer_ids = dict(rows_c.all())

    await session.execute(
        _UPSERT_DOMAIN,
        [
            {"name": r.domain, "customer_id": customer_ids[r.customer], "tags": list(r.tags)}
            for r in sorted(batch, key=lambda r: r.domain)
        ],
    )

    # Compare what each domain looked like before and after: exact, one more query.
    after = await _current_state(session, [r.domain for r in batch])
    for record in batch:
        old = before.get(record.domain)
        if old is None:
            counts.created += 1
        elif old == after.get(record.domain):
            counts.unchanged += 1
        else:
            counts.updated += 1
    return counts


_State = tuple[str, tuple[str, ...], bool, str | None, str | None]


async def _current_state(session: AsyncSession, names: Sequence[str]) -> dict[str, _State]:
    rows = await session.execute(
        select(
            Domain.name,
            Customer.name,
            Domain.tags,
            Domain.active,
            AccountManager.email,
            AccountManager.name,
        )
        .join(Customer, Customer.id == Domain.customer_id)
        .outerjoin(AccountManager, AccountManager.id == Customer.account_manager_id)
        .where(any_text(Domain.name, names))
    )
    return {
        domain: (customer, tuple(tags), active, email, manager)
        for domain, customer, tags, active, email, manager in rows
    }


async def iter_inventory(
    session: AsyncSession, *, include_inactive: bool = False, batch_size: int = BATCH
) -> AsyncIterator[list[InventoryRecord]]:
    """The inventory in domain-name order, in lists of up to ``batch_size`` records.

    Streamed with a server-side cursor, so exporting a large fleet needs little memory.
    """
    stmt = (
        select(
            Domain.name,
            Customer.name,
            AccountManager.name,
            AccountManager.email,
            Domain.tags,
        )
        .join(Customer, Customer.id == Domain.customer_id)
        .outerjoin(AccountManager, AccountManager.id == Customer.account_manager_id)
        .order_by(Domain.name)
        .execution_options(yield_per=batch_size)
    )
    if not include_inactive:
        stmt = stmt.where(Domain.active)
    result = await session.stream(stmt)
    async for partition in result.partitions():
        yield [
            InventoryRecord(domain, customer, manager, email, tuple(tags))
            for domain, customer, manager, email, tags in partition
        ]


def validate_scope(scope: Mapping[str, Any]) -> dict[str, Any]:
    """A sweep scope in its stored form; ValueError for anything else.

    ``{"all": true}``, ``{"customers": [ids]}`` or ``{"domains": [A-label names]}``
    (lists non-empty, de-duplicated and sorted).
    """
    if set(scope) == {"all"} and scope["all"] is True:
        return {"all": True}
    if set(scope) == {"customers"}:
        ids = scope["customers"]
        if (
            not isinstance(ids, list | tuple)
            or not ids
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
        ):
            raise ValueError("scope 'customers' must be a non-empty list of customer ids")
        return {"customers": sorted(set(ids))}
    if set(scope) == {"domains"}:
        names = scope["domains"]
        if (
            not isinstance(names, list | tuple)
            or not names
            or not all(isinstance(n, str) and n for n in names)
        ):
            raise ValueError("scope 'domains' must be a non-empty list of domain names")
        return {"domains": sorted(set(names))}
    raise ValueError('a sweep scope is {"all": true}, {"customers": [ids]} or {"domains": [names]}')


async def domains_in_scope(session: AsyncSession, scope: Mapping[str, Any]) -> list[DomainRef]:
    """The active domains a sweep scope covers, by name (unknown names are left out)."""
    checked = validate_scope(scope)
    stmt = select(Domain.id, Domain.name, Domain.customer_id).where(Domain.active)
    if "customers" in checked:
        stmt = stmt.where(any_int(Domain.customer_id, checked["customers"]))
    elif "domains" in checked:
        stmt = stmt.where(any_text(Domain.name, checked["domains"]))
    rows = await session.execute(stmt.order_by(Domain.name))
    return [DomainRef(id_, name, customer) for id_, name, customer in rows]


# -- reads and deletes for the API --------------------------------------------------------------


async def _page(
    session: AsyncSession, stmt: Select[Any], column: Any, after: int | None, limit: int
) -> list[Any]:
    if after is not None:
        stmt = stmt.where(column > after)
    return list((await session.scalars(stmt.order_by(column).limit(limit + 1))).all())


async def list_managers(
    session: AsyncSession, *, after: int | None, limit: int, manager: int | None = None
) -> list[AccountManager]:
    """Account managers in id order (``manager``: only that one)."""
    stmt = select(AccountManager)
    if manager is not None:
        stmt = stmt.where(AccountManager.id == manager)
    return await _page(session, stmt, AccountManager.id, after, limit)


async def get_manager(
    session: AsyncSession, manager_id: int, *, manager: int | None = None
) -> AccountManager | None:
    if manager is not None and manager != manager_id:
        return None
    return await session.get(AccountManager, manager_id)


def _customers(manager: int | None, account_manager_id: int | None) -> Select[Customer]:
    stmt = select(Customer)
    for value in {manager, account_manager_id} - {None}:
        stmt = stmt.where(Customer.account_manager_id == value)
    return stmt


async def list_customers(
    session: AsyncSession,
    *,
    after: int | None,
    limit: int,
    manager: int | None = None,
    account_manager_id: int | None = None,
) -> list[Customer]:
    """Customers in id order, optionally only one account manager's."""
    stmt = _customers(manager, account_manager_id)
    return await _page(session, stmt, Customer.id, after, limit)


async def get_customer(
    session: AsyncSession, customer_id: int, *, manager: int | None = None
) -> Customer | None:
    return await session.scalar(_customers(manager, None).where(Customer.id == customer_id))


def _domains(manager: int | None) -> Select[Domain]:
    stmt = select(Domain)
    if manager is not None:
        stmt = stmt.join(Customer, Customer.id == Domain.customer_id).where(
            Customer.account_manager_id == manager
        )
    return stmt


async def list_domains(
    session: AsyncSession,
    *,
    after: int | None,
    limit: int,
    manager: int | None = None,
    customer_id: int | None = None,
    tag: str | None = None,
    active: bool | None = None,
) -> list[Domain]:
    """Domains in id order, optionally of one customer, with a tag, (in)active."""
    stmt = _domains(manager)
    if customer_id is not None:
        stmt = stmt.where(Domain.customer_id == customer_id)
    if tag is not None:
        stmt = stmt.where(Domain.tags.contains([tag]))
    if active is not None:
        stmt = stmt.where(Domain.active.is_(active))
    return await _page(session, stmt, Domain.id, after, limit)


async def get_domain(
    session: AsyncSession, domain_id: int, *, manager: int | None = None
) -> Domain | None:
    return await session.scalar(_domains(manager).where(Domain.id == domain_id))


async def delete_row(session: AsyncSession, model: type[InventoryModel], row_id: int) -> bool:
    """Delete one inventory row by id (the database cascades); False if there was none.

    A Core DELETE: the ORM would load relationships (``lazy="raise"``) to cascade.
    """
    deleted = await session.scalar(delete(model).where(model.id == row_id).returning(model.id))
    return deleted is not None
