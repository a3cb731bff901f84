"""The API's queries on the inventory.

These belong with the repositories in :mod:`fleet.repositories` (the rule: all SQL
there); they live here only until those modules can take them (issue 5 follow-up). Like
the repositories, every function only flushes: the request commits.

Lists are keyset pages: ``after`` is the last id of the previous page; a function
returns up to ``limit + 1`` rows so that the caller knows whether there is a next page.
``manager`` scopes a query to one account manager's customers (None: everything).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, delete, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.db.models import AccountManager, Customer, Domain

__all__ = [
    "delete_by_id",
    "get_customer",
    "get_domain",
    "get_manager",
    "list_customers",
    "list_domains",
    "list_managers",
    "ping",
]


async def _page(
    session: AsyncSession, stmt: Select[Any], column: Any, after: int | None, limit: int
) -> list[Any]:
    if after is not None:
        stmt = stmt.where(column > after)
    return list((await session.scalars(stmt.order_by(column).limit(limit + 1))).all())


async def list_managers(
    session: AsyncSession, *, after: int | None, limit: int, manager: int | None = None
) -> list[AccountManager]:
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


async def list_customers(
    session: AsyncSession, *, after: int | None, limit: int, manager: int | None = None
) -> list[Customer]:
    stmt = select(Customer)
    if manager is not None:
        stmt = stmt.where(Customer.account_manager_id == manager)
    return await _page(session, stmt, Customer.id, after, limit)


async def get_customer(
    session: AsyncSession, customer_id: int, *, manager: int | None = None
) -> Customer | None:
    stmt = select(Customer).where(Customer.id == customer_id)
    if manager is not None:
        stmt = stmt.where(Customer.account_manager_id == manager)
    return await session.scalar(stmt)


def _domains(manager: int | None) -> Select[Domain]:
    stmt = select(Domain)
    if manager is not None:
        stmt = stmt.join(Customer, Customer.id == Domain.customer_id).where(
            Customer.account_manager_id == manager
        )
    return stmt


async def list_domains(
    session: AsyncSession, *, after: int | None, limit: int, manager: int | None = None
) -> list[Domain]:
    return await _page(session, _domains(manager), Domain.id, after, limit)


async def get_domain(
    session: AsyncSession, domain_id: int, *, manager: int | None = None
) -> Domain | None:
    return await session.scalar(_domains(manager).where(Domain.id == domain_id))


async def ping(session: AsyncSession) -> None:
    """Raise unless the database answers."""
    await session.execute(text("SELECT 1"))


async def delete_by_id(
    session: AsyncSession, model: type[AccountManager | Customer | Domain], row_id: int
) -> bool:
    """Delete one inventory row by id (the database cascades); False if there was none.

    A Core DELETE: the ORM would load relationships (``lazy="raise"``) to cascade.
    """
    deleted = await session.scalar(delete(model).where(model.id == row_id).returning(model.id))
    return deleted is not None
