"""The embedded default: with no URLs configured, real PostgreSQL and Redis start under
the data directory and are used exactly like external ones."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis
from arq import create_pool
from arq.connections import RedisSettings
from pydantic import SecretStr
from sqlalchemy import text

from fleet.db.migrate import current_revision, head_revision, upgrade
from fleet.db.session import create_engine
from fleet.embedded import arq_redis_settings, services
from fleet.settings import Settings


async def _use(database_url: str, arq_settings: RedisSettings) -> tuple[str, str]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            database = await connection.scalar(text("SELECT current_database()"))
    finally:
        await engine.dispose()
    pool = await create_pool(arq_settings)
    try:
        job = await pool.enqueue_job("nothing", _job_id="embedded-check")
        assert job is not None
        status = (await job.status()).value
    finally:
        await pool.aclose()
    return str(database), status


def test_embedded_services_are_real_and_shared(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=None, redis_url=None)

    with services(settings) as resolved:
        # PostgreSQL over its Unix socket, Redis over a unix:// URL both clients accept
        assert resolved.embedded_database
        assert resolved.embedded_redis
        assert resolved.database_url.startswith("postgresql+psycopg://")
        socket_path = tmp_path / "data" / "redis" / "redis.sock"
        assert resolved.redis_url == f"unix://{socket_path}?db=0"
        assert resolved.arq_settings.unix_socket_path == str(socket_path)

        upgrade(resolved.database_url)
        assert current_revision(resolved.database_url) == head_revision()
        database, status = asyncio.run(_use(resolved.database_url, resolved.arq_settings))
        assert (database, status) == ("tlsfleet", "queued")

        # A second command on the same data directory joins the same servers.
        with services(settings) as again:
            assert again.database_url == resolved.database_url
            assert again.redis_url == resolved.redis_url
            client = redis.Redis.from_url(again.redis_url)
            try:
                assert client.exists("arq:job:embedded-check") == 1
            finally:
                client.close()

    assert not socket_path.exists()


def test_configured_urls_start_nothing(tmp_path: Path, database_url: str, redis_url: str) -> None:
    settings = Settings(
        data_dir=tmp_path / "unused",
        database_url=SecretStr(database_url),
        redis_url=SecretStr(redis_url),
    )

    with services(settings) as resolved:
        assert not resolved.embedded_database
        assert not resolved.embedded_redis
        assert resolved.redis_url == redis_url

    assert not (tmp_path / "unused").exists()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/3", {"host": "127.0.0.1", "port": 6379, "database": 3}),
        ("redis://:secret@redis.internal:6380", {"host": "redis.internal", "password": "secret"}),
        ("rediss://redis.internal/1", {"ssl": True, "database": 1}),
        (
            "unix:///run/redis/redis.sock?db=2",
            {"unix_socket_path": "/run/redis/redis.sock", "database": 2},
        ),
    ],
)
def test_arq_settings_from_urls(url: str, expected: dict[str, object]) -> None:
    settings = arq_redis_settings(url)
    assert {name: getattr(settings, name) for name in expected} == expected
    assert arq_redis_settings(url, conn_retries=1).conn_retries == 1
