"""The store under concurrency and faults: racing jobs, racing closers, dropped
connections. These tests commit (``engine`` fixture: tables truncated afterwards)."""

from __future__ import annotations

import asyncio

import psycopg
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from fleet.db.models import Endpoint, ScanResult
from fleet.db.session import sync_url
from fleet.repositories.endpoints import ensure_endpoints
from fleet.repositories.results import record_result
from fleet.repositories.sweeps import close_sweep, create_sweep, record_discovery
from scanner.discovery import EndpointKey
from tests.integration.test_store import SHARED, add_domains, key, ok_result, plan

RACERS = 8


async def _committed_sweep(factory: async_sessionmaker[AsyncSession]) -> tuple[int, list[int]]:
    async with factory() as session:
        ids = await add_domains(session, SHARED)
        sweep = await create_sweep(session, kind="nightly", scope={"all": True})
        record = await record_discovery(session, sweep.id, plan(SHARED), ids)
        await session.commit()
        return sweep.id, sorted(record.to_scan)


async def test_racing_jobs_store_exactly_one_result(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    # Given a sweep, and the same endpoint job delivered to eight workers at once
    sweep_id, endpoints = await _committed_sweep(session_factory)
    endpoint = endpoints[0]

    async def job(n: int) -> bool:
        async with session_factory() as session:
            new = await record_result(
                session,
                sweep_id,
                endpoint,
                ok_result("10.0.0.1", scanned_at=f"2026-11-28T01:00:0{n}Z"),
            )
            await session.commit()
            return new

    # When they all store their result
    outcomes = await asyncio.gather(*(job(n) for n in range(RACERS)))

    # Then exactly one of them stored it, and there is one row
    assert outcomes.count(True) == 1
    async with session_factory() as session:
        rows = await session.scalar(
            select(func.count()).select_from(ScanResult).where(ScanResult.sweep_id == sweep_id)
        )
    assert rows == 1


async def test_racing_endpoint_upserts_agree_and_do_not_deadlock(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    keys = [key(f"10.9.{i // 250}.{i % 250}") for i in range(500)]

    async def discover(n: int) -> dict[EndpointKey, int]:
        # Each racer offers the keys in another order, with other host names.
        order = keys[n:] + keys[:n]
        async with session_factory() as session:
            ids = await ensure_endpoints(session, dict.fromkeys(order, f"mx{n}.example"))
            await session.commit()
            return ids

    outcomes = await asyncio.gather(*(discover(n * 61) for n in range(RACERS)))

    assert all(outcome == outcomes[0] for outcome in outcomes)
    async with session_factory() as session:
        assert await session.scalar(select(func.count()).select_from(Endpoint)) == len(keys)


async def test_racing_closers_close_once(session_factory: async_sessionmaker[AsyncSession]) -> None:
    sweep_id, endpoints = await _committed_sweep(session_factory)
    async with session_factory() as session:
        for n, endpoint in enumerate(endpoints):
            await record_result(session, sweep_id, endpoint, ok_result(f"10.0.0.{n + 1}"))
        await session.commit()

    async def closer() -> bool:
        async with session_factory() as session:
            diff = await close_sweep(session, sweep_id)
            await session.commit()
            return diff is not None

    outcomes = await asyncio.gather(*(closer() for _ in range(4)))

    assert outcomes.count(True) == 1


async def test_pooled_connections_survive_a_server_side_disconnect(
    engine: AsyncEngine, database_url: str
) -> None:
    # Given a pooled connection
    async with engine.connect() as connection:
        before = await connection.scalar(text("SELECT pg_backend_pid()"))

    # When the server ends it (as a restart or an idle timeout would)
    with psycopg.connect(sync_url(database_url), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (before,))

    # Then the next checkout notices (pre-ping) and reconnects instead of failing
    async with engine.connect() as connection:
        after = await connection.scalar(text("SELECT pg_backend_pid()"))
    assert after != before
