"""``/v1/apikeys``: create, list, show and revoke API keys (admin only)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Sequence
from typing import Any

from fastapi import APIRouter, Request, status
from sqlalchemy.ext.asyncio import AsyncSession

from api.deps import Admin, RuntimeDep, SessionDep
from api.errors import Invalid, NotFound
from api.export import FormatQuery, csv_responses, page_or_csv, schema_columns
from api.pagination import CursorQuery, LimitQuery, decode_cursor
from api.schemas.apikeys import ApiKeyCreate, ApiKeyCreated, ApiKeyRead
from api.schemas.common import IdPath, Page, problems
from fleet.repositories import apikeys
from fleet.repositories.inventory import get_manager

KEY_COLUMNS = schema_columns(ApiKeyRead)

router = APIRouter(prefix="/v1/apikeys", tags=["API keys"], responses=problems(401, 429, 403, 422))
log = logging.getLogger(__name__)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create an API key",
    responses=problems(422),
)
async def create_key(body: ApiKeyCreate, session: SessionDep, caller: Admin) -> ApiKeyCreated:
    """Create a key and return it with its secret — the only time the secret is shown.
    An ``account_manager`` key needs ``account_manager_id``; other roles must not have one."""
    if body.account_manager_id is not None and (
        await get_manager(session, body.account_manager_id) is None
    ):
        raise Invalid(f"no account manager {body.account_manager_id}")
    try:
        new = await apikeys.create_key(
            session, role=body.role, name=body.name, account_manager_id=body.account_manager_id
        )
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    await session.commit()
    log.info("key %s (%s) created by key %s", new.key.prefix, new.key.role, caller.prefix)
    read = ApiKeyRead.model_validate(new.key)
    return ApiKeyCreated(**read.model_dump(), key=new.secret)


@router.get(
    "",
    summary="List API keys",
    response_model=Page[ApiKeyRead],
    responses=csv_responses(
        KEY_COLUMNS, "id,prefix,name,role,account_manager_id,created_at,revoked_at\r\n"
    ),
)
async def list_keys(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    _caller: Admin,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    format_: FormatQuery = None,
) -> Any:
    """Every key (revoked ones too), oldest first. Secrets are never shown again;
    `format=csv` streams them all as CSV."""

    def fetch(s: AsyncSession, after: int | None, n: int) -> Awaitable[Sequence[Any]]:
        return apikeys.list_keys(s, after=after, limit=n + 1)

    return await page_or_csv(
        request,
        session,
        runtime.sessions,
        fetch,
        ApiKeyRead,
        after=decode_cursor(cursor),
        limit=limit,
        format_=format_,
        filename="api-keys.csv",
    )


@router.get("/{key_id}", summary="Show an API key", responses=problems(404))
async def get_key(key_id: IdPath, session: SessionDep, _caller: Admin) -> ApiKeyRead:
    """One key's public facts."""
    key = await apikeys.get_key(session, key_id)
    if key is None:
        raise NotFound(f"no API key {key_id}")
    return ApiKeyRead.model_validate(key)


@router.delete("/{key_id}", summary="Revoke an API key", responses=problems(404))
async def revoke_key(key_id: IdPath, session: SessionDep, caller: Admin) -> ApiKeyRead:
    """Revoke a key: it stops working at once. Revoking twice changes nothing."""
    key = await apikeys.revoke_key(session, key_id)
    if key is None:
        raise NotFound(f"no API key {key_id}")
    await session.commit()
    log.info("key %s revoked by key %s", key.prefix, caller.prefix)
    return ApiKeyRead.model_validate(key)
