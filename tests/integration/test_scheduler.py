"""The scheduler role (``tlsfleet scheduler``) and the nightly sweep under several
schedulers: real PostgreSQL and Redis, arq workers in this process.

Two schedulers (a rolling update, a mis-set replica count) fire the same cron tick:
arq's unique cron job id keeps one job per tick while the first is queued or running,
and the database does the rest — the advisory lock around "is a nightly sweep open?"
plus the unique ``sweeps.scheduled_for``, which also stops a late scheduler from
re-running a tick whose sweep has already closed (arq keeps no result, so its job id no
longer blocks).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import pytest
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import default_queue_name
from arq.worker import Worker
from pydantic import SecretStr
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet import jobs
from fleet.db.models import Sweep
from fleet.jobs import JobName
from fleet.settings import Settings
from worker import jobs as worker_jobs
from worker.context import WorkerConfig, shutdown, startup
from worker.options import WorkerOptions
from worker.settings import RECONCILE_CRON, SCHEDULER_QUEUE, create_worker, worker_settings

BOUND = 60.0


@pytest.fixture
def config(database_url: str, arq_redis_settings: RedisSettings) -> WorkerConfig:
    settings = Settings.model_validate({"database_url": SecretStr(database_url)})
    return WorkerConfig(
        settings=settings,
        database_url=database_url,
        redis_settings=arq_redis_settings,
        options=WorkerOptions(job_timeout=20, poll_delay=0.05, retry_delay=0.05, max_tries=3),
    )


def _tick(days: int = 0) -> dt.datetime:
    """A schedule tick in the recent past, whole seconds (as arq's cron times are)."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return now - dt.timedelta(seconds=2) + dt.timedelta(days=days)


def _job_id(tick: dt.datetime) -> str:
    """arq's unique job id for the nightly cron job at ``tick``."""
    return f"{JobName.NIGHTLY}:{int(tick.timestamp() * 1000)}"


async def _scheduler(config: WorkerConfig, tick: dt.datetime) -> Worker:
    """A burst scheduler whose nightly cron entry is due at ``tick``."""
    pool = await create_pool(
        config.redis_settings,
        default_queue_name=SCHEDULER_QUEUE,
        job_serializer=jobs.serialize,
        job_deserializer=jobs.deserialize,
    )
    worker = create_worker(
        config, role="scheduler", burst=True, handle_signals=False, redis_pool=pool
    )
    nightly = next(c for c in worker.cron_jobs if c.name == JobName.NIGHTLY)
    nightly.next_run = tick
    return worker


async def _fire(worker: Worker) -> None:
    """Queue the due cron jobs, as the worker's heartbeat does; then push every entry's
    next run far out, so that the worker's own heartbeat queues nothing more."""
    await worker.run_cron(dt.datetime.now(dt.UTC), 0.5)
    for entry in worker.cron_jobs:
        entry.next_run = dt.datetime.now(dt.UTC) + dt.timedelta(days=365)


async def _run(worker: Worker) -> None:
    """Run the burst worker until its queue is empty, then close it."""
    try:
        async with asyncio.timeout(BOUND):
            await worker.main()
    finally:
        await worker.close()


async def _fire_and_run(worker: Worker) -> int:
    """Fire, then run; how many jobs this worker completed."""
    await _fire(worker)
    await _run(worker)
    return worker.jobs_complete


async def _nightly_sweeps(sessions: async_sessionmaker[AsyncSession]) -> list[Sweep]:
    async with sessions() as session:
        rows = await session.scalars(select(Sweep).where(Sweep.kind == "nightly"))
        return list(rows)


async def _queued(redis: ArqRedis, queue: str) -> list[str | None]:
    return [job.job_id for job in await redis.queued_jobs(queue_name=queue)]


@pytest.fixture
async def redis(config: WorkerConfig) -> AsyncIterator[ArqRedis]:
    pool = await jobs.create_job_pool(config.redis_settings)
    try:
        yield pool
    finally:
        await pool.aclose()


async def _close_all(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        await session.execute(update(Sweep).values(status="done"))
        await session.commit()


def test_roles_split_the_functions_and_the_cron_jobs(config: WorkerConfig) -> None:
    everything = worker_settings(config)
    jobs_only = worker_settings(config, "worker")
    cron_only = worker_settings(config, "scheduler")
    # The default worker (one machine, `tlsfleet demo`) keeps the schedule
    assert {c.name for c in everything["cron_jobs"]} == {JobName.NIGHTLY, RECONCILE_CRON}
    assert "queue_name" not in everything
    # --no-cron: every job function, no schedule
    assert jobs_only["cron_jobs"] == []
    assert [f.name for f in jobs_only["functions"]] == [f.name for f in everything["functions"]]
    # The scheduler: the schedule only, through a queue of its own
    assert cron_only["functions"] == []
    assert {c.name for c in cron_only["cron_jobs"]} == {JobName.NIGHTLY, RECONCILE_CRON}
    assert cron_only["queue_name"] == SCHEDULER_QUEUE != default_queue_name


def test_worker_cron_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert WorkerOptions().cron is True
    monkeypatch.setenv("TLSFLEET_WORKER_CRON", "false")
    assert WorkerOptions().cron is False


@pytest.mark.parametrize(
    ("job_id", "expected"),
    [
        (
            "sweep_nightly:1795917600000",
            dt.datetime(2026, 11, 29, 2, 0, tzinfo=dt.UTC),
        ),
        ("sweep_nightly:soon", None),
        ("cron:sweep_reconcile:1795917600000", None),
        (None, None),
    ],
)
def test_the_tick_comes_from_arqs_cron_job_id(job_id: str | None, expected: object) -> None:
    assert worker_jobs.scheduled_tick(job_id) == expected


async def test_two_schedulers_firing_the_same_tick_start_one_sweep(
    config: WorkerConfig,
    session_factory: async_sessionmaker[AsyncSession],
    redis: ArqRedis,
) -> None:
    # Given a discovery job already waiting for the workers, and two schedulers whose
    # nightly schedule is due at the same tick
    await redis.enqueue_job(JobName.DISCOVER, 999, _job_id="waiting-for-a-worker")
    last_night, tonight = _tick(days=-1), _tick()
    first, second = await _scheduler(config, last_night), await _scheduler(config, last_night)
    # When both fire it at once
    await asyncio.gather(_fire(first), _fire(second))
    # Then the tick's job is queued once (arq's unique cron job id) …
    assert await _queued(redis, SCHEDULER_QUEUE) == [_job_id(last_night)]
    # … and when both run, one nightly sweep exists, for that tick
    await asyncio.gather(_run(first), _run(second))
    assert first.jobs_complete + second.jobs_complete == 1
    sweeps = await _nightly_sweeps(session_factory)
    assert [(s.scope, s.scheduled_for) for s in sweeps] == [({"all": True}, last_night)]
    # … its discovery waits on the workers' queue; the schedulers left that queue's jobs
    # alone and emptied their own
    waiting = await _queued(redis, default_queue_name)
    assert "waiting-for-a-worker" in waiting
    assert jobs.discover_job_id(sweeps[0].id) in waiting
    assert await _queued(redis, SCHEDULER_QUEUE) == []

    # When the sweep has closed and tonight's tick comes, one scheduler starts its sweep
    await _close_all(session_factory)
    assert await _fire_and_run(await _scheduler(config, tonight)) == 1
    started = {s.scheduled_for for s in await _nightly_sweeps(session_factory)}
    assert started == {last_night, tonight}


@pytest.fixture
async def contexts(config: WorkerConfig) -> AsyncIterator[list[dict[str, object]]]:
    """Four started scheduler contexts, each with its own pool and database engine
    (as four processes would have)."""
    started: list[dict[str, object]] = []
    try:
        for _ in range(4):
            pool = await jobs.create_job_pool(config.redis_settings)
            state: dict[str, object] = {"config": config, "redis": pool}
            started.append(state)
            await startup(state)
        yield started
    finally:
        for state in started:
            await shutdown(state)
            own = state["redis"]
            assert isinstance(own, ArqRedis)
            await own.aclose()


async def test_racing_nightly_jobs_start_one_sweep(
    contexts: list[dict[str, object]],
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    # Given no nightly sweep, when four processes run the nightly job at the same moment,
    # each for a different tick (arq's job ids differ, so nothing in Redis stops them)
    ticks = [_tick() - dt.timedelta(minutes=n) for n in range(len(contexts))]
    started = await asyncio.gather(
        *(
            worker_jobs.sweep_nightly({**ctx, "job_id": _job_id(tick)})
            for ctx, tick in zip(contexts, ticks, strict=True)
        )
    )
    # Then exactly one started a sweep (the others found it open, under the lock)
    assert len([s for s in started if s is not None]) == 1
    assert len(await _nightly_sweeps(session_factory)) == 1


async def test_racing_jobs_for_a_closed_tick_start_nothing(
    contexts: list[dict[str, object]],
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    # Given last night's sweep, already closed
    tick = _tick()
    assert await worker_jobs.sweep_nightly({**contexts[0], "job_id": _job_id(tick)}) is not None
    await _close_all(session_factory)
    # When every process runs the same tick again at once
    again = await asyncio.gather(
        *(worker_jobs.sweep_nightly({**ctx, "job_id": _job_id(tick)}) for ctx in contexts)
    )
    # Then none starts a sweep
    assert again == [None] * len(contexts)
    assert len(await _nightly_sweeps(session_factory)) == 1
