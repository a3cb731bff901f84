"""``/v1/clients``: which mail accounts still log in with TLS 1.0/1.1 or without TLS
(from the mail servers' logs, docs/logs.md), and the impact of switching them off.

Readers see every account; an account manager's key sees only its customers' accounts
(unmapped ones never; another manager's customer or manager id is a 404).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from api.deps import RuntimeDep, ScopedReader, SessionDep, SettingsDep
from api.errors import NotFound
from api.export import FormatQuery, csv_responses, page_or_csv, schema_columns
from api.pagination import CursorQuery, LimitQuery, decode_cursor
from api.schemas.clients import ClientAccountRead, ClientKind, ImpactRead
from api.schemas.common import MAX_ID, Page, problems
from fleet.repositories import clients as repo
from fleet.repositories import inventory

ACCOUNT_COLUMNS = schema_columns(ClientAccountRead)

router = APIRouter(prefix="/v1", tags=["clients"], responses=problems(401, 429, 403, 422))

IdQuery = Annotated[int | None, Query(ge=1, le=MAX_ID)]
DaysQuery = Annotated[
    int | None,
    Query(ge=1, le=366, description="the window in days (default TLSFLEET_CLIENT_WINDOW_DAYS)"),
]


async def _check_filters(
    session: AsyncSession, scope: int | None, customer_id: int | None, manager_id: int | None
) -> None:
    """Another manager's customer or manager id in a filter is a 404 for an account
    manager's key, as its own path would be."""
    if scope is None:
        return
    if manager_id is not None and manager_id != scope:
        raise NotFound(f"no account manager {manager_id}")
    if (
        customer_id is not None
        and await inventory.get_customer(session, customer_id, manager=scope) is None
    ):
        raise NotFound(f"no customer {customer_id}")


class _Row:
    def __init__(self, account: repo.ClientAccount) -> None:
        self.id = account.id
        self.read = ClientAccountRead.model_validate(account)


@router.get(
    "/clients/legacy",
    summary="List accounts with TLS 1.0/1.1 or plaintext logins",
    response_model=Page[ClientAccountRead],
    responses={
        **csv_responses(ACCOUNT_COLUMNS, ",".join(c.name for c in ACCOUNT_COLUMNS) + "\r\n"),
        **problems(404),
    },
)
async def list_legacy_clients(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    settings: SettingsDep,
    caller: ScopedReader,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    days: DaysQuery = None,
    kind: Annotated[
        ClientKind,
        Query(description="legacy: TLS 1.0/1.1 logins; plaintext: logins without TLS; any"),
    ] = "any",
    customer_id: IdQuery = None,
    account_manager_id: IdQuery = None,
    domain: Annotated[str | None, Query(max_length=253, description="only this domain")] = None,
    format_: FormatQuery = None,
) -> Any:
    """Accounts that logged in over TLS 1.0/1.1 (or SSL) or without TLS in the last
    `days` days, in id order, with protocols, mechanisms, client addresses and since
    when; filtered by customer, account manager or domain (an account manager's key
    sees only its customers' accounts). `format=csv` streams them all."""
    await _check_filters(session, caller.scope, customer_id, account_manager_id)
    since = repo.window_start(dt.datetime.now(dt.UTC).date(), days or settings.client_window_days)
    wanted = domain.strip().rstrip(".").lower() if domain is not None else None

    async def fetch(s: AsyncSession, after: int | None, n: int) -> Sequence[_Row]:
        rows = await repo.list_accounts(
            s,
            since,
            after=after,
            limit=n,
            kind=kind,
            manager=caller.scope,
            customer_id=customer_id,
            account_manager_id=account_manager_id,
            domain=wanted,
        )
        return [_Row(r) for r in rows]

    return await page_or_csv(
        request,
        session,
        runtime.sessions,
        fetch,
        ClientAccountRead,
        after=decode_cursor(cursor),
        limit=limit,
        format_=format_,
        filename=f"legacy-clients-{since.isoformat()}.csv",
        convert=lambda row: row.read,
    )


@router.get(
    "/clients/impact", summary="Who loses mail access at the cut-off", responses=problems(404)
)
async def client_impact(
    session: SessionDep,
    settings: SettingsDep,
    caller: ScopedReader,
    days: DaysQuery = None,
    kind: Annotated[
        ClientKind,
        Query(description="legacy: TLS 1.0/1.1 off; plaintext: login without TLS off; any"),
    ] = "legacy",
    customer_id: IdQuery = None,
    account_manager_id: IdQuery = None,
) -> ImpactRead:
    """'If TLS 1.0/1.1 were switched off today, these N customers and M accounts would
    lose mail access': counts and the customers (most affected accounts first), from
    the logins of the last `days` days. An account manager's key sees its customers."""
    await _check_filters(session, caller.scope, customer_id, account_manager_id)
    window = days or settings.client_window_days
    since = repo.window_start(dt.datetime.now(dt.UTC).date(), window)
    found = await repo.impact(
        session,
        since,
        kind=kind,
        manager=caller.scope,
        customer_id=customer_id,
        account_manager_id=account_manager_id,
    )
    return ImpactRead.model_validate(
        {
            "since": found.since,
            "days": window,
            "kind": found.kind,
            "customers": found.customers,
            "accounts": found.accounts,
            "only_affected_accounts": found.only_affected_accounts,
            "unmapped_accounts": found.unmapped_accounts,
            "customer_list": found.customer_list,
        }
    )
