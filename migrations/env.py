"""Alembic environment: async psycopg 3, the fleet's models as the target metadata.

The database URL comes from ``config.attributes["database_url"]`` (``tlsfleet migrate``
and the tests set it), else ``TLSFLEET_DATABASE_URL``, else the embedded PostgreSQL
under the data directory — the same resolution as every other command.
A caller that already holds a connection may pass it as ``attributes["connection"]``.
"""

from __future__ import annotations

import asyncio
from contextlib import ExitStack
from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from fleet.db.models import Base
from fleet.db.session import async_url, create_engine

config = context.config
target_metadata = Base.metadata

if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

_OPTIONS: dict[str, Any] = {
    "target_metadata": target_metadata,
    "compare_type": True,
    "compare_server_default": True,
}


def _database_url(stack: ExitStack) -> str:
    url = config.attributes.get("database_url")
    if url:
        return str(url)
    from fleet.embedded import embedded_postgres
    from fleet.settings import load_settings

    settings = load_settings()
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    return stack.enter_context(embedded_postgres(settings))


def run_migrations_offline() -> None:
    """``alembic upgrade --sql``: print the SQL instead of running it."""
    with ExitStack() as stack:
        context.configure(
            url=async_url(_database_url(stack)).set(drivername="postgresql"),
            literal_binds=True,
            dialect_opts={"paramstyle": "named"},
            **_OPTIONS,
        )
        with context.begin_transaction():
            context.run_migrations()


def _run(connection: Connection) -> None:
    context.configure(connection=connection, **_OPTIONS)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str) -> None:
    engine = create_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    with ExitStack() as stack:
        asyncio.run(_run_async(_database_url(stack)))


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
