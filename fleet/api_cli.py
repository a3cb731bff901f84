"""``tlsfleet api`` (serve the HTTP API) and ``tlsfleet apikey create|list|revoke``.

A key's secret is printed once, on creation, to standard output, and never logged or
stored: only its SHA-256 digest is kept.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from fleet.console import err, fail
from fleet.runtime import run
from fleet.settings import Settings, load_settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from fleet.embedded import ResolvedServices

T = TypeVar("T")

ROLES = ("admin", "operator", "viewer", "account_manager")

apikey_app = typer.Typer(
    help="API keys: create (the secret is shown once), list, revoke.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add ``api`` and ``apikey`` to the ``tlsfleet`` command."""
    app.command("api")(api)
    app.add_typer(apikey_app, name="apikey")


def _ready(services: ResolvedServices) -> None:
    """Migrate the embedded database; refuse a configured one that is not at head."""
    from fleet.db.migrate import current_revision, head_revision, upgrade

    if services.embedded_database:
        upgrade(services.database_url)
        return
    try:
        current = current_revision(services.database_url)
    except Exception as exc:  # the driver's errors vary; one line
        raise fail(f"cannot reach the database: {type(exc).__name__}") from None
    if current != head_revision():
        raise fail(
            f"the database schema is at {current or 'nothing'}, not {head_revision()}: "
            "run `tlsfleet migrate`"
        )


def api(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on", min=1, max=65535)] = 8000,
) -> None:
    """Serve the HTTP API (docs/api.md) with uvicorn.

    Uses TLSFLEET_DATABASE_URL and TLSFLEET_REDIS_URL, or the embedded services. With
    TLSFLEET_BOOTSTRAP_API_KEY set, that admin key is stored (as its hash) first, unless
    it is there already.
    """
    import uvicorn
    from pydantic import SecretStr

    from api.app import create_app
    from fleet.embedded import services

    settings = load_settings()
    with services(settings) as resolved:
        _ready(resolved)
        if settings.bootstrap_api_key is not None:
            _bootstrap(resolved.database_url, settings.bootstrap_api_key.get_secret_value())
        configured = settings.model_copy(
            update={
                "database_url": SecretStr(resolved.database_url),
                "redis_url": SecretStr(resolved.redis_url),
            }
        )
        uvicorn.run(create_app(configured), host=host, port=port, log_level="info")


@apikey_app.command("create")
def apikey_create(
    role: Annotated[str, typer.Option(help=f"one of: {', '.join(ROLES)}")],
    account_manager: Annotated[
        str | None,
        typer.Option(help="e-mail of the account manager (role account_manager only)"),
    ] = None,
    name: Annotated[str, typer.Option(help="what the key is for")] = "",
) -> None:
    """Create an API key and print it once (it is stored only as a hash)."""
    if role not in ROLES:
        raise fail(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    if (role == "account_manager") != (account_manager is not None):
        raise fail("--account-manager is required for, and only for, --role account_manager")
    settings = load_settings()
    secret, prefix = run(
        _with_sessions(settings, lambda session: _create(session, role, account_manager, name))
    )
    err.print(f"API key {prefix} ({role}) created; it is shown only now:", highlight=False)
    sys.stdout.write(secret + "\n")


@apikey_app.command("generate")
def apikey_generate() -> None:
    """Print a new key's secret without storing it: for TLSFLEET_BOOTSTRAP_API_KEY (the
    deployment's Secret), which `tlsfleet api` stores as a hash when it starts."""
    from fleet.repositories.apikeys import generate_secret

    sys.stdout.write(generate_secret() + "\n")


def _bootstrap(database_url: str, secret: str) -> None:
    """Store TLSFLEET_BOOTSTRAP_API_KEY as an admin key unless it is stored already."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        key, created = run(_ensure_bootstrap(database_url, secret))
    except ValueError as exc:
        raise fail(f"TLSFLEET_BOOTSTRAP_API_KEY: {exc}") from None
    except SQLAlchemyError as exc:
        raise fail(f"cannot store the bootstrap API key: {type(exc).__name__}") from None
    if created:
        state = "created"
    elif key.revoked_at is not None:
        state = "revoked (left so)"
    else:
        state = "present"
    err.print(f"bootstrap API key {key.prefix} ({key.role}): {state}", highlight=False)


async def _ensure_bootstrap(database_url: str, secret: str) -> tuple[Any, bool]:
    from fleet.db.session import create_engine, create_sessionmaker
    from fleet.repositories import apikeys

    engine = create_engine(database_url, pool_size=1)
    try:
        async with create_sessionmaker(engine)() as session:
            key, created = await apikeys.ensure_key(session, secret)
            await session.commit()
            return key, created
    finally:
        await engine.dispose()


@apikey_app.command("list")
def apikey_list(
    json_out: Annotated[bool, typer.Option("--json", help="JSON lines")] = False,
) -> None:
    """List API keys (id, prefix, role, account manager, created, revoked)."""
    rows = run(_with_sessions(load_settings(), _list))
    for row in rows:
        if json_out:
            sys.stdout.write(json.dumps(row) + "\n")
        else:
            state = f"revoked {row['revoked_at']}" if row["revoked_at"] else "active"
            manager = f" manager={row['account_manager_id']}" if row["account_manager_id"] else ""
            sys.stdout.write(
                f"{row['id']}\t{row['prefix']}\t{row['role']}{manager}\t{row['name']}\t{state}\n"
            )


@apikey_app.command("revoke")
def apikey_revoke(key_id: Annotated[int, typer.Argument(help="the key's id")]) -> None:
    """Revoke an API key: it stops working at once."""
    if not run(_with_sessions(load_settings(), lambda session: _revoke(session, key_id))):
        raise fail(f"no API key {key_id}")
    err.print(f"API key {key_id} revoked", highlight=False)


async def _with_sessions(settings: Settings, action: Callable[[AsyncSession], Awaitable[T]]) -> T:
    from fleet.db.session import create_engine, create_sessionmaker
    from fleet.embedded import services

    with services(settings) as resolved:
        _ready(resolved)
        engine = create_engine(resolved.database_url, pool_size=1)
        try:
            async with create_sessionmaker(engine)() as session:
                return await action(session)
        finally:
            await engine.dispose()


async def _create(
    session: AsyncSession, role: str, email: str | None, name: str
) -> tuple[str, str]:
    from fleet.repositories import apikeys

    manager_id = None
    if email is not None:
        manager = await apikeys.manager_by_email(session, email)
        if manager is None:
            raise fail(f"no account manager with e-mail {email}")
        manager_id = manager.id
    new = await apikeys.create_key(session, role=role, name=name, account_manager_id=manager_id)
    await session.commit()
    return new.secret, new.key.prefix


async def _list(session: AsyncSession) -> list[dict[str, Any]]:
    from fleet.repositories import apikeys

    return [
        {
            "id": k.id,
            "prefix": k.prefix,
            "role": k.role,
            "name": k.name,
            "account_manager_id": k.account_manager_id,
            "created_at": k.created_at.isoformat(),
            "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
        }
        for k in await apikeys.list_keys(session)
    ]


async def _revoke(session: AsyncSession, key_id: int) -> bool:
    from fleet.repositories import apikeys

    key = await apikeys.revoke_key(session, key_id)
    await session.commit()
    return key is not None
