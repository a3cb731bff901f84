"""``/v1/apikeys``: create, list, show and revoke API keys (admin only)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, status

from api import queries
from api.deps import Admin, SessionDep
from api.errors import Invalid, NotFound
from api.pagination import CursorQuery, LimitQuery, decode_cursor, next_link
from api.schemas.apikeys import ApiKeyCreate, ApiKeyCreated, ApiKeyRead
from api.schemas.common import IdPath, Page, problems
from fleet.repositories import apikeys

router = APIRouter(prefix="/v1/apikeys", tags=["API keys"], responses=problems(401, 403, 422))
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
        await queries.get_manager(session, body.account_manager_id) is None
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


@router.get("", summary="List API keys")
async def list_keys(
    request: Request,
    session: SessionDep,
    _caller: Admin,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> Page[ApiKeyRead]:
    """Every key (revoked ones too), oldest first. Secrets are never shown again."""
    rows = await apikeys.list_keys(session, after=decode_cursor(cursor), limit=limit + 1)
    items, link = next_link(request, list(rows), limit)
    return Page(items=[ApiKeyRead.model_validate(k) for k in items], next=link)


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
