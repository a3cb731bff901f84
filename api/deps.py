"""Dependencies of the routes, as ``Annotated`` aliases: ``SessionDep``, ``SettingsDep``,
``RuntimeDep``, ``PrincipalDep`` and the role gates ``Reader``, ``Writer``, ``Admin``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth import ACCOUNT_MANAGER, READERS, WRITERS, Principal
from api.errors import Forbidden, Unauthorized
from api.runtime import ApiRuntime
from api.throttle import AuthThrottle
from fleet.repositories import apikeys
from fleet.settings import Settings


def get_runtime(request: Request) -> ApiRuntime:
    runtime = request.app.state.runtime
    assert isinstance(runtime, ApiRuntime)
    return runtime


def get_settings(request: Request) -> Settings:
    settings = request.app.state.settings
    assert isinstance(settings, Settings)
    return settings


RuntimeDep = Annotated[ApiRuntime, Depends(get_runtime)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_session(runtime: RuntimeDep) -> AsyncIterator[AsyncSession]:
    """A session for the request; the route commits (once) when it writes."""
    async with runtime.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]

_bearer = HTTPBearer(auto_error=False, description="an API key: tlsf_<prefix>_<secret>")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="tlsfleet"'}


def client_address(request: Request) -> str | None:
    """The caller's address (the proxy's, unless uvicorn trusts its forwarded headers)."""
    return request.client.host if request.client is not None else None


async def get_principal(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller's key; 401 without one, or for an unknown or revoked one; 429 for an
    address that sent too many unknown keys (api/throttle.py)."""
    if credentials is None:
        raise Unauthorized("send an API key: 'Authorization: Bearer <key>'", headers=_CHALLENGE)
    throttle, client = AuthThrottle.from_settings(settings), client_address(request)
    await throttle.check(runtime, client)
    key = await apikeys.authenticate(session, credentials.credentials)
    if key is None:
        await throttle.failed(runtime, client)
        raise Unauthorized("the API key is unknown or revoked", headers=_CHALLENGE)
    return Principal(key.id, key.prefix, key.role, key.account_manager_id)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def _role_gate(
    allowed: frozenset[str], what: str
) -> Callable[[Principal], Coroutine[Any, Any, Principal]]:
    async def gate(principal: PrincipalDep) -> Principal:
        if principal.role not in allowed:
            raise Forbidden(f"a {principal.role} key may not {what}")
        return principal

    return gate


#: Any valid key (account managers are scoped by the route).
Caller = PrincipalDep
#: admin, operator, viewer: read everything.
Reader = Annotated[Principal, Depends(_role_gate(READERS, "read this"))]
#: admin, operator (or account managers, scoped, for inventory reads).
ScopedReader = Annotated[Principal, Depends(_role_gate(READERS | {ACCOUNT_MANAGER}, "read this"))]
#: admin, operator: change the inventory, start sweeps.
Writer = Annotated[Principal, Depends(_role_gate(WRITERS, "change this"))]
#: admin, operator, or an account manager for what is its own (webhook subscriptions).
ScopedWriter = Annotated[Principal, Depends(_role_gate(WRITERS | {ACCOUNT_MANAGER}, "change this"))]
#: admin only: API keys.
Admin = Annotated[Principal, Depends(_role_gate(frozenset({"admin"}), "manage API keys"))]
