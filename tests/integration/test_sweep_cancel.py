"""Cancelling a sweep: the status move, its queued jobs taken off the queue, jobs that
run anyway storing nothing, the reconciler leaving it alone, and ``tlsfleet sweep
cancel``. Real PostgreSQL, Redis, DNS and TLS endpoints; the sweep steps are called
in this process (no worker processes)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager

import pytest
from arq.connections import ArqRedis, RedisSettings
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet import jobs, sweeps
from fleet.db.models import Sweep, SweepDomain
from fleet.repositories import sweeps as sweep_repo
from fleet.repositories.results import sweep_results
from fleet.sweeps import SweepRuntime
from scanner.dns import MxData, RecordSet, Resolver
from scanner.engine import ScanOptions
from scanner.net import ConnectionLimiter, LocalLimiter
from tests.integration.test_sweep_harness import (
    SRV_ONLY,
    LocalFleet,
    import_inventory,
    local_fleet,
    worker_env,
)

BOUND = 60.0


@pytest.fixture
def fleet() -> Iterator[LocalFleet]:
    with local_fleet("127.96.0", domains=4, per_address=2) as running:
        yield running


@pytest.fixture
async def redis(arq_redis_settings: RedisSettings) -> AsyncIterator[ArqRedis]:
    pool = await jobs.create_job_pool(arq_redis_settings)
    try:
        yield pool
    finally:
        await pool.aclose()


def _runtime(
    sessions: async_sessionmaker[AsyncSession],
    redis: ArqRedis,
    fleet: LocalFleet,
    *,
    limiter: ConnectionLimiter | None = None,
    new_resolver: Callable[[], Resolver] | None = None,
) -> SweepRuntime:
    return SweepRuntime(
        sessions=sessions,
        redis=redis,
        scan_options=ScanOptions(timeout=2.0, connect_timeout=2.0, greeting_timeout=2.0),
        limiter=limiter or LocalLimiter(per_ip=2),
        new_resolver=new_resolver or (lambda: Resolver((fleet.nameserver,))),
        allow_private=True,
    )


@pytest.fixture
async def runtime(
    session_factory: async_sessionmaker[AsyncSession], redis: ArqRedis, fleet: LocalFleet
) -> SweepRuntime:
    await import_inventory(session_factory, fleet.records)
    return _runtime(session_factory, redis, fleet)


async def _queued(redis: ArqRedis) -> set[str | None]:
    return {job.job_id for job in await redis.queued_jobs()}


async def _sweep(sessions: async_sessionmaker[AsyncSession], sweep_id: int) -> Sweep:
    async with sessions() as session:
        sweep = await sweep_repo.get_sweep(session, sweep_id)
    assert sweep is not None
    return sweep


async def _result_count(sessions: async_sessionmaker[AsyncSession], sweep_id: int) -> int:
    async with sessions() as session:
        return len(await sweep_results(session, sweep_id))


async def test_cancel_takes_the_queued_jobs_off_and_later_jobs_store_nothing(
    runtime: SweepRuntime,
    session_factory: async_sessionmaker[AsyncSession],
    fleet: LocalFleet,
) -> None:
    # Given a discovered sweep whose scans are queued, and another sweep still pending
    sweep_id = await sweeps.start_sweep(
        session_factory, runtime.redis, scope={"all": True}, options=SRV_ONLY
    )
    await sweeps.discover_sweep(runtime, sweep_id)
    other = await sweeps.start_sweep(
        session_factory, runtime.redis, scope={"all": True}, options=SRV_ONLY
    )
    async with session_factory() as session:
        endpoint_ids = await sweep_repo.sweep_endpoint_ids(session, sweep_id)
    scans = {jobs.scan_job_id(sweep_id, e) for e in endpoint_ids}
    assert scans <= await _queued(runtime.redis)
    # When the first one is cancelled
    report = await sweeps.cancel(session_factory, runtime.redis, sweep_id)
    # Then it is final, and its discovery and scans are gone from the queue; the other
    # sweep's job is still there
    assert report.outcome == "cancelled"
    assert report.removed_jobs == len(endpoint_ids) + 1  # the scans and the discovery
    assert await _queued(runtime.redis) == {jobs.discover_job_id(other)}
    sweep = await _sweep(session_factory, sweep_id)
    assert sweep.status == "cancelled"
    assert sweep.finished_at is not None
    # … the reconciler looks only at the open sweep
    reconciled = await sweeps.reconcile(runtime)
    assert (reconciled.sweeps, reconciled.scans, reconciled.closes) == (1, 0, 0)
    assert await _queued(runtime.redis) == {jobs.discover_job_id(other)}
    # … and jobs of the sweep that run anyway (queued before the cancel, or by hand)
    # change nothing and scan nothing
    outcomes = [await sweeps.scan_endpoint(runtime, sweep_id, e) for e in endpoint_ids]
    assert set(outcomes) == {"skipped"}
    assert await sweeps.discover_sweep(runtime, sweep_id) == 0
    assert not await sweeps.close(runtime, sweep_id)
    assert await _result_count(session_factory, sweep_id) == 0
    assert fleet.connections() == 0
    assert (await _sweep(session_factory, sweep_id)).status == "cancelled"
    assert await _queued(runtime.redis) == {jobs.discover_job_id(other)}


def _cancelling_limiter(
    cancel: Callable[[], Awaitable[object]],
) -> ConnectionLimiter:
    """A limiter that cancels the sweep when the scan asks for its first connection:
    the cancel arrives while the scan is running."""
    inner = LocalLimiter(per_ip=2)
    done = asyncio.Event()

    class Cancelling:
        @asynccontextmanager
        async def slot(self, ip: str) -> AsyncIterator[None]:
            if not done.is_set():
                done.set()
                await cancel()
            async with inner.slot(ip):
                yield

    return Cancelling()


async def test_a_scan_that_finishes_after_the_cancel_stores_nothing(
    runtime: SweepRuntime,
    session_factory: async_sessionmaker[AsyncSession],
    fleet: LocalFleet,
) -> None:
    sweep_id = await sweeps.start_sweep(
        session_factory, runtime.redis, scope={"domains": [fleet.domains[1]]}, options=SRV_ONLY
    )
    await sweeps.discover_sweep(runtime, sweep_id)
    async with session_factory() as session:
        endpoint_id = (await sweep_repo.sweep_endpoint_ids(session, sweep_id))[0]
    # Given a scan job that is running when the sweep is cancelled
    cancels: list[sweeps.CancelReport] = []

    async def cancel() -> None:
        cancels.append(await sweeps.cancel(session_factory, runtime.redis, sweep_id))

    limiter = _cancelling_limiter(cancel)
    racing = _runtime(session_factory, runtime.redis, fleet, limiter=limiter)
    # When the scan finishes
    outcome = await sweeps.scan_endpoint(racing, sweep_id, endpoint_id)
    # Then it really scanned, but stored nothing into the cancelled sweep, and queued
    # nothing (not the close either)
    assert [c.outcome for c in cancels] == ["cancelled"]
    assert fleet.connections() > 0
    assert outcome == "skipped"
    assert await _result_count(session_factory, sweep_id) == 0
    assert (await _sweep(session_factory, sweep_id)).status == "cancelled"
    assert not {j for j in await _queued(runtime.redis) if j and j.startswith(f"sweep:{sweep_id}:")}


async def test_results_stored_before_the_cancel_stay(
    runtime: SweepRuntime, session_factory: async_sessionmaker[AsyncSession], fleet: LocalFleet
) -> None:
    sweep_id = await sweeps.start_sweep(
        session_factory, runtime.redis, scope={"domains": [fleet.domains[2]]}, options=SRV_ONLY
    )
    await sweeps.discover_sweep(runtime, sweep_id)
    async with session_factory() as session:
        first, *rest = await sweep_repo.sweep_endpoint_ids(session, sweep_id)
    assert rest
    # Given one result stored
    assert await sweeps.scan_endpoint(runtime, sweep_id, first) == "stored"
    # When the sweep is cancelled and the other scans' jobs run after all
    assert (await sweeps.cancel(session_factory, runtime.redis, sweep_id)).outcome == "cancelled"
    for endpoint_id in rest:
        assert await sweeps.scan_endpoint(runtime, sweep_id, endpoint_id) == "skipped"
    # Then the stored result stays, and the progress shows how far it got
    async with session_factory() as session:
        progress = await sweeps.progress(session, sweep_id)
    assert progress is not None
    assert (progress.status, progress.done, progress.total) == ("cancelled", 1, 1 + len(rest))


class _GatedResolver(Resolver):
    """A resolver whose MX lookups wait for ``gate`` (``entered`` says one is waiting)."""

    def __init__(self, nameserver: str, entered: asyncio.Event, gate: asyncio.Event) -> None:
        super().__init__((nameserver,))
        self.entered = entered
        self.gate = gate

    async def mx(self, domain: str) -> RecordSet[MxData]:
        self.entered.set()
        await self.gate.wait()
        return await super().mx(domain)


async def test_a_discovery_cancelled_while_dns_runs_stores_no_plan(
    runtime: SweepRuntime,
    session_factory: async_sessionmaker[AsyncSession],
    fleet: LocalFleet,
) -> None:
    entered, gate = asyncio.Event(), asyncio.Event()
    gated = _runtime(
        session_factory,
        runtime.redis,
        fleet,
        new_resolver=lambda: _GatedResolver(fleet.nameserver, entered, gate),
    )
    sweep_id = await sweeps.start_sweep(
        session_factory, runtime.redis, scope={"all": True}, options=SRV_ONLY
    )
    # Given a discovery waiting for DNS
    discovery = asyncio.create_task(sweeps.discover_sweep(gated, sweep_id))
    async with asyncio.timeout(BOUND):
        await entered.wait()
    assert (await _sweep(session_factory, sweep_id)).status == "discovering"
    # When the sweep is cancelled and DNS then answers
    assert (await sweeps.cancel(session_factory, runtime.redis, sweep_id)).outcome == "cancelled"
    gate.set()
    async with asyncio.timeout(BOUND):
        queued_scans = await discovery
    # Then the discovery stored no plan and queued nothing
    assert queued_scans == 0
    async with session_factory() as session:
        stored = await session.scalar(
            select(func.count()).select_from(SweepDomain).where(SweepDomain.sweep_id == sweep_id)
        )
        endpoints = await sweep_repo.sweep_endpoint_ids(session, sweep_id)
    assert (stored, endpoints) == (0, [])
    assert await _queued(runtime.redis) == set()
    assert (await _sweep(session_factory, sweep_id)).status == "cancelled"


async def test_cancel_twice_a_final_sweep_and_an_unknown_one(
    runtime: SweepRuntime, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    sweep_id = await sweeps.start_sweep(session_factory, runtime.redis, scope={"all": True})
    first = await sweeps.cancel(session_factory, runtime.redis, sweep_id)
    finished = (await _sweep(session_factory, sweep_id)).finished_at
    # Cancelling again is idempotent: nothing moves
    again = await sweeps.cancel(session_factory, runtime.redis, sweep_id)
    assert (first.outcome, first.removed_jobs) == ("cancelled", 1)
    assert (again.outcome, again.removed_jobs) == ("already", 0)
    assert (await _sweep(session_factory, sweep_id)).finished_at == finished
    # A done sweep cannot be cancelled and stays done
    async with session_factory() as session:
        done = Sweep(kind="adhoc", status="done", scope={"all": True}, options={})
        session.add(done)
        await session.commit()
    assert (await sweeps.cancel(session_factory, runtime.redis, done.id)).outcome == "final"
    assert (await _sweep(session_factory, done.id)).status == "done"
    assert (await sweeps.cancel(session_factory, runtime.redis, 999_999)).outcome == "unknown"


async def test_cancel_without_the_queue_still_cancels(
    runtime: SweepRuntime, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    sweep_id = await sweeps.start_sweep(session_factory, runtime.redis, scope={"all": True})
    report = await sweeps.cancel(session_factory, None, sweep_id)
    assert (report.outcome, report.removed_jobs) == ("cancelled", None)
    # The discovery left in the queue does nothing when it runs
    assert jobs.discover_job_id(sweep_id) in await _queued(runtime.redis)
    assert await sweeps.discover_sweep(runtime, sweep_id) == 0
    assert (await _sweep(session_factory, sweep_id)).status == "cancelled"


def _tlsfleet(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleet.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=BOUND,
        check=False,
    )


async def test_cli_sweep_cancel_exit_statuses(
    runtime: SweepRuntime,
    database_url: str,
    redis_url: str,
    session_factory: async_sessionmaker[AsyncSession],
    fleet: LocalFleet,
) -> None:
    env = worker_env(database_url, redis_url, fleet.nameserver)
    sweep_id = await sweeps.start_sweep(session_factory, runtime.redis, scope={"all": True})
    # An open sweep: cancelled, its queued discovery removed (exit 0)
    cancelled = _tlsfleet(env, "sweep", "cancel", str(sweep_id), "--json")
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout) == {
        "sweep_id": sweep_id,
        "status": "cancelled",
        "outcome": "cancelled",
        "removed_jobs": 1,
    }
    assert await _queued(runtime.redis) == set()
    # Again: already cancelled (exit 0)
    again = _tlsfleet(env, "sweep", "cancel", str(sweep_id))
    assert again.returncode == 0, again.stderr
    assert "already cancelled" in again.stdout
    # A done sweep: not possible (exit 1); an unknown one: bad input (exit 2)
    async with session_factory() as session:
        done = Sweep(kind="adhoc", status="done", scope={"all": True}, options={})
        session.add(done)
        await session.commit()
    final = _tlsfleet(env, "sweep", "cancel", str(done.id))
    assert final.returncode == 1
    assert f"sweep {done.id} is done" in final.stderr
    unknown = _tlsfleet(env, "sweep", "cancel", "4242")
    assert unknown.returncode == 2
    assert "no sweep 4242" in unknown.stderr
    assert (await _sweep(session_factory, done.id)).status == "done"
