"""``/v1/account-managers``, ``/v1/customers``, ``/v1/domains``: the inventory.

Reads: admin, operator, viewer (everything) and account managers (their own record,
their customers and those customers' domains; anything else is 404). Writes: admin and
operator.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Sequence
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from api.deps import RuntimeDep, ScopedReader, SessionDep, Writer
from api.errors import BatchTooLarge, Invalid, NotFound
from api.export import FormatQuery, csv_responses, page_or_csv, schema_columns
from api.pagination import CursorQuery, LimitQuery, decode_cursor
from api.schemas.common import MAX_ID, Page, problems
from api.schemas.inventory import (
    MAX_IMPORT_ROWS,
    AccountManagerCreate,
    AccountManagerRead,
    AccountManagerUpdate,
    CustomerCreate,
    CustomerRead,
    CustomerUpdate,
    DomainCreate,
    DomainImport,
    DomainRead,
    DomainUpdate,
    ImportReport,
    ImportRowError,
)
from fleet.db.models import AccountManager, Customer, Domain
from fleet.inventory import RawRow, parse_tags, validate_email, validate_rows
from fleet.repositories import inventory as repo
from fleet.repositories.inventory import InventoryModel, upsert_inventory
from scanner.discovery import normalise_domain
from scanner.errors import TargetError

router = APIRouter(prefix="/v1", tags=["inventory"], responses=problems(401, 429, 403, 422))


def _email(value: str) -> str:
    try:
        return validate_email(value)
    except ValueError as exc:
        raise Invalid(f"email: {exc}") from None


def _domain(value: str) -> str:
    try:
        return normalise_domain(value)
    except TargetError as exc:
        raise Invalid(f"name: {exc.message}") from None


def _tags(value: list[str]) -> list[str]:
    try:
        return list(parse_tags(value))
    except ValueError as exc:
        raise Invalid(f"tags: {exc}") from None


R = TypeVar("R")
M = TypeVar("M", bound=BaseModel)


def _found(row: R | None, what: str) -> R:
    """``row``, or a 404 problem saying there is no ``what``."""
    if row is None:
        raise NotFound(f"no {what}")
    return row


async def _saved(session: AsyncSession, row: InventoryModel, schema: type[M]) -> M:
    """Commit the request's change to ``row`` and return it as ``schema``."""
    await session.flush()
    await session.commit()
    await session.refresh(row)
    return schema.model_validate(row)


async def _deleted(
    session: AsyncSession, model: type[InventoryModel], row_id: int, what: str
) -> Response:
    if not await repo.delete_row(session, model, row_id):
        raise NotFound(f"no {what} {row_id}")
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


MANAGER_COLUMNS = schema_columns(AccountManagerRead)
CUSTOMER_COLUMNS = schema_columns(CustomerRead)
DOMAIN_COLUMNS = schema_columns(DomainRead)


async def _manager_exists(session: SessionDep, manager_id: int | None) -> None:
    if manager_id is not None and await repo.get_manager(session, manager_id) is None:
        raise Invalid(f"no account manager {manager_id}")


async def _customer_exists(session: SessionDep, customer_id: int) -> None:
    if await repo.get_customer(session, customer_id) is None:
        raise Invalid(f"no customer {customer_id}")


# -- account managers ---------------------------------------------------------------------


@router.get(
    "/account-managers",
    summary="List account managers",
    response_model=Page[AccountManagerRead],
    responses=csv_responses(MANAGER_COLUMNS, "id,name,email,created_at\r\n"),
)
async def list_managers(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    caller: ScopedReader,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    format_: FormatQuery = None,
) -> Any:
    """Account managers in id order (an account manager's key sees only itself);
    `format=csv` streams them all as CSV."""

    def fetch(s: AsyncSession, after: int | None, n: int) -> Awaitable[Sequence[Any]]:
        return repo.list_managers(s, after=after, limit=n, manager=caller.scope)

    return await page_or_csv(
        request,
        session,
        runtime.sessions,
        fetch,
        AccountManagerRead,
        after=decode_cursor(cursor),
        limit=limit,
        format_=format_,
        filename="account-managers.csv",
    )


@router.post(
    "/account-managers",
    status_code=status.HTTP_201_CREATED,
    summary="Create an account manager",
    responses=problems(409),
)
async def create_manager(
    body: AccountManagerCreate, session: SessionDep, _caller: Writer
) -> AccountManagerRead:
    """Create an account manager; the e-mail address is unique (409 otherwise)."""
    manager = AccountManager(name=body.name.strip(), email=_email(body.email))
    session.add(manager)
    return await _saved(session, manager, AccountManagerRead)


@router.get(
    "/account-managers/{manager_id}", summary="Show an account manager", responses=problems(404)
)
async def get_manager(
    manager_id: int, session: SessionDep, caller: ScopedReader
) -> AccountManagerRead:
    """One account manager."""
    manager = _found(
        await repo.get_manager(session, manager_id, manager=caller.scope),
        f"account manager {manager_id}",
    )
    return AccountManagerRead.model_validate(manager)


@router.patch(
    "/account-managers/{manager_id}",
    summary="Change an account manager",
    responses=problems(404, 409),
)
async def update_manager(
    manager_id: int, body: AccountManagerUpdate, session: SessionDep, _caller: Writer
) -> AccountManagerRead:
    """Change the name or e-mail address."""
    manager = _found(await repo.get_manager(session, manager_id), f"account manager {manager_id}")
    if body.name is not None:
        manager.name = body.name.strip()
    if body.email is not None:
        manager.email = _email(body.email)
    return await _saved(session, manager, AccountManagerRead)


@router.delete(
    "/account-managers/{manager_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete an account manager",
    responses=problems(404),
)
async def delete_manager(manager_id: int, session: SessionDep, _caller: Writer) -> Response:
    """Delete an account manager; their customers stay, without an account manager,
    and keys bound to them are deleted."""
    return await _deleted(session, AccountManager, manager_id, "account manager")


# -- customers ------------------------------------------------------------------------------


@router.get(
    "/customers",
    summary="List customers",
    response_model=Page[CustomerRead],
    responses=csv_responses(CUSTOMER_COLUMNS, "id,name,account_manager_id,created_at\r\n"),
)
async def list_customers(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    caller: ScopedReader,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    account_manager_id: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="only this account manager's customers")
    ] = None,
    format_: FormatQuery = None,
) -> Any:
    """Customers in id order (an account manager's key sees only its customers);
    `format=csv` streams them all as CSV."""

    def fetch(s: AsyncSession, after: int | None, n: int) -> Awaitable[Sequence[Any]]:
        return repo.list_customers(
            s, after=after, limit=n, manager=caller.scope, account_manager_id=account_manager_id
        )

    return await page_or_csv(
        request,
        session,
        runtime.sessions,
        fetch,
        CustomerRead,
        after=decode_cursor(cursor),
        limit=limit,
        format_=format_,
        filename="customers.csv",
    )


@router.post(
    "/customers",
    status_code=status.HTTP_201_CREATED,
    summary="Create a customer",
    responses=problems(409),
)
async def create_customer(
    body: CustomerCreate, session: SessionDep, _caller: Writer
) -> CustomerRead:
    """Create a customer (names are unique), optionally with an account manager."""
    await _manager_exists(session, body.account_manager_id)
    customer = Customer(name=body.name.strip(), account_manager_id=body.account_manager_id)
    session.add(customer)
    return await _saved(session, customer, CustomerRead)


@router.get("/customers/{customer_id}", summary="Show a customer", responses=problems(404))
async def get_customer(customer_id: int, session: SessionDep, caller: ScopedReader) -> CustomerRead:
    """One customer (404 for another account manager's customer)."""
    customer = _found(
        await repo.get_customer(session, customer_id, manager=caller.scope),
        f"customer {customer_id}",
    )
    return CustomerRead.model_validate(customer)


@router.patch("/customers/{customer_id}", summary="Change a customer", responses=problems(404, 409))
async def update_customer(
    customer_id: int, body: CustomerUpdate, session: SessionDep, _caller: Writer
) -> CustomerRead:
    """Rename a customer or change (``null``: remove) its account manager."""
    customer = _found(await repo.get_customer(session, customer_id), f"customer {customer_id}")
    if body.name is not None:
        customer.name = body.name.strip()
    if "account_manager_id" in body.model_fields_set:
        await _manager_exists(session, body.account_manager_id)
        customer.account_manager_id = body.account_manager_id
    return await _saved(session, customer, CustomerRead)


@router.delete(
    "/customers/{customer_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a customer",
    responses=problems(404),
)
async def delete_customer(customer_id: int, session: SessionDep, _caller: Writer) -> Response:
    """Delete a customer and its domains (their scan history stays with the sweeps)."""
    return await _deleted(session, Customer, customer_id, "customer")


# -- domains --------------------------------------------------------------------------------


@router.get(
    "/domains",
    summary="List domains",
    response_model=Page[DomainRead],
    responses=csv_responses(
        DOMAIN_COLUMNS, "id,name,customer_id,tags,active,created_at,updated_at\r\n"
    ),
)
async def list_domains(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    caller: ScopedReader,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    customer_id: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="only this customer's domains")
    ] = None,
    tag: Annotated[
        str | None, Query(max_length=64, description="only domains with this tag")
    ] = None,
    active: Annotated[bool | None, Query(description="only (in)active domains")] = None,
    format_: FormatQuery = None,
) -> Any:
    """Domains in id order (an account manager's key sees only its customers' domains),
    optionally only one customer's, those with a tag, or only (in)active ones;
    `format=csv` streams the whole filtered list as CSV."""

    def fetch(s: AsyncSession, after: int | None, n: int) -> Awaitable[Sequence[Any]]:
        return repo.list_domains(
            s,
            after=after,
            limit=n,
            manager=caller.scope,
            customer_id=customer_id,
            tag=tag,
            active=active,
        )

    return await page_or_csv(
        request,
        session,
        runtime.sessions,
        fetch,
        DomainRead,
        after=decode_cursor(cursor),
        limit=limit,
        format_=format_,
        filename="domains.csv",
    )


@router.post(
    "/domains",
    status_code=status.HTTP_201_CREATED,
    summary="Create a domain",
    responses=problems(409),
)
async def create_domain(body: DomainCreate, session: SessionDep, _caller: Writer) -> DomainRead:
    """Add a domain to a customer. IDNs are stored as A-labels; names are unique."""
    name = _domain(body.name)
    tags = _tags(body.tags)
    await _customer_exists(session, body.customer_id)
    domain = Domain(name=name, customer_id=body.customer_id, tags=tags)
    session.add(domain)
    return await _saved(session, domain, DomainRead)


@router.post(
    "/domains/import",
    summary="Import up to 10,000 domains",
    responses=problems(413),
)
async def import_domains(body: DomainImport, session: SessionDep, _caller: Writer) -> ImportReport:
    """Create or update domains (with their customers and account managers) from
    inventory rows, as ``tlsfleet inventory import`` does: bad rows are reported with
    their reason and left out, good rows are kept. More than 10,000 rows is a 413
    problem and nothing is imported."""
    if len(body.rows) > MAX_IMPORT_ROWS:
        raise BatchTooLarge(
            f"at most {MAX_IMPORT_ROWS:,} rows per import; this request has "
            f"{len(body.rows):,} — split it",
            extra={"max_rows": MAX_IMPORT_ROWS, "rows": len(body.rows)},
        )
    checked = validate_rows(RawRow(i, values) for i, values in enumerate(body.rows, start=1))
    counts = await upsert_inventory(session, checked.records)
    await session.commit()
    return ImportReport(
        rows=checked.rows,
        created=counts.created,
        updated=counts.updated,
        unchanged=counts.unchanged,
        rejected=len(checked.errors),
        errors=[
            ImportRowError(row=e.row, domain=e.domain, reason=e.reason) for e in checked.errors
        ],
    )


@router.get("/domains/{domain_id}", summary="Show a domain", responses=problems(404))
async def get_domain(domain_id: int, session: SessionDep, caller: ScopedReader) -> DomainRead:
    """One domain (404 for a domain of another account manager's customer)."""
    domain = _found(
        await repo.get_domain(session, domain_id, manager=caller.scope), f"domain {domain_id}"
    )
    return DomainRead.model_validate(domain)


@router.patch("/domains/{domain_id}", summary="Change a domain", responses=problems(404))
async def update_domain(
    domain_id: int, body: DomainUpdate, session: SessionDep, _caller: Writer
) -> DomainRead:
    """Move a domain to another customer, replace its tags, or (de)activate it."""
    domain = _found(await repo.get_domain(session, domain_id), f"domain {domain_id}")
    changes: dict[str, Any] = {}
    if body.customer_id is not None:
        await _customer_exists(session, body.customer_id)
        changes["customer_id"] = body.customer_id
    if body.tags is not None:
        changes["tags"] = _tags(body.tags)
    if body.active is not None:
        changes["active"] = body.active
    if changes:
        changes["updated_at"] = dt.datetime.now(dt.UTC)
    for field, value in changes.items():
        setattr(domain, field, value)
    return await _saved(session, domain, DomainRead)


@router.delete(
    "/domains/{domain_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a domain",
    responses=problems(404),
)
async def delete_domain(domain_id: int, session: SessionDep, _caller: Writer) -> Response:
    """Delete a domain (and its discovery records)."""
    return await _deleted(session, Domain, domain_id, "domain")
