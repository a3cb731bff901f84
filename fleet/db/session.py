"""The database runtime: one async engine and its session factory per process.

Nothing here runs at import time. The process's start-up code (a CLI command, the API's
``create_app``, the worker's ``on_startup``) calls :func:`create_engine` with the URL
from the settings (or from :func:`fleet.embedded.services`), builds a session factory
with :func:`create_sessionmaker`, passes both down, and disposes of the engine on exit.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine

__all__ = ["async_url", "create_engine", "create_sessionmaker", "ping", "sync_url"]

_DRIVERS = ("postgresql", "postgresql+psycopg", "postgres")


def async_url(url: str | URL) -> URL:
    """``url`` with the psycopg 3 driver: ``postgresql://…`` → ``postgresql+psycopg://…``.

    Accepts what people paste (``postgres://``, ``postgresql://``, pgserver's
    ``postgresql://postgres:@/db?host=/socket/dir``); other drivers raise ValueError.
    """
    parsed = make_url(url) if isinstance(url, str) else url
    if parsed.drivername not in _DRIVERS:
        raise ValueError(
            f"unsupported database URL scheme {parsed.drivername!r}: use postgresql://"
        )
    if parsed.password == "":
        # pgserver writes "postgres:@"; an empty password would be sent as one.
        parsed = parsed.set(password=None)
    return parsed.set(drivername="postgresql+psycopg")


def sync_url(url: str | URL) -> str:
    """The URL as a libpq connection string (for psycopg directly), password included."""
    parsed = async_url(url).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


def create_engine(
    url: str | URL,
    *,
    pool_size: int = 5,
    max_overflow: int = 10,
    pool_timeout: float = 30.0,
    pool_recycle: int = 1800,
    echo: bool = False,
    **kwargs: Any,
) -> AsyncEngine:
    """An async engine on psycopg 3 for ``url``.

    ``pool_pre_ping`` checks a pooled connection before handing it out, so a restarted
    PostgreSQL costs one failed ping per stale connection instead of an error in a job;
    ``pool_recycle`` retires connections before idle-timeouts in proxies cut them.
    Extra keyword arguments go to :func:`sqlalchemy.ext.asyncio.create_async_engine`
    (tests pass ``poolclass=NullPool``).
    """
    options: dict[str, Any] = {
        "pool_pre_ping": True,
        "echo": echo,
        **kwargs,
    }
    if "poolclass" not in kwargs:
        options.update(
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=pool_timeout,
            pool_recycle=pool_recycle,
        )
    return _create_async_engine(async_url(url), **options)


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for ``engine``; objects stay usable after the boundary commits.

    ``expire_on_commit=False`` because an expired attribute would need a lazy load,
    which an async session cannot do implicitly (``MissingGreenlet``).
    """
    return async_sessionmaker(engine, expire_on_commit=False)


async def ping(session: AsyncSession) -> None:
    """Raise unless the database answers (readiness probes)."""
    await session.execute(text("SELECT 1"))
