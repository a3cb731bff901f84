"""The worker's typed context: everything a job needs, built once in ``on_startup``.

arq hands every job a plain ``dict``; the worker keeps a single :class:`WorkerContext`
in it under ``"app"`` and jobs read it through :func:`context`, so that a job sees
typed attributes instead of string keys. Nothing is built at import time: the engine,
the limiter and the scanners are made by :func:`startup` and torn down by
:func:`shutdown`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
from arq.connections import ArqRedis, RedisSettings
from sqlalchemy.ext.asyncio import AsyncEngine

from fleet import jobs
from fleet.db.session import create_engine, create_sessionmaker
from fleet.deliveries import DeliveryConfig
from fleet.limiter import RedisLimiter
from fleet.settings import Settings
from fleet.sweeps import SweepOptions, SweepRuntime
from fleet.webhooks import RetrySchedule
from scanner.dns import Resolver
from scanner.engine import ScanOptions
from worker.metrics import WorkerMetrics
from worker.options import WorkerOptions

__all__ = [
    "WorkerConfig",
    "WorkerContext",
    "context",
    "delivery_config",
    "job_ended",
    "job_started",
    "scan_options",
    "shutdown",
    "startup",
]

log = logging.getLogger(__name__)

#: Fraction of the job timeout a scan or a discovery may use before it gives up on
#: its own terms (a stored ``timeout`` result), well before arq cancels the job.
_DEADLINE_SHARE = 0.8


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """What a worker process is started with (resolved settings and service URLs)."""

    settings: Settings
    database_url: str
    redis_settings: RedisSettings
    options: WorkerOptions
    #: How the nightly sweep scans.
    nightly: SweepOptions = field(default_factory=SweepOptions)


@dataclass(slots=True)
class WorkerContext:
    """The process-wide objects every job uses."""

    config: WorkerConfig
    engine: AsyncEngine
    redis: ArqRedis
    limiter: RedisLimiter
    runtime: SweepRuntime
    #: The HTTP client webhook deliveries are sent with, and how they are sent.
    http: httpx.AsyncClient
    delivery: DeliveryConfig
    #: This process among the workers: its heartbeat key and the owner of its jobs.
    worker_id: str = field(default_factory=lambda: f"{os.getpid()}-{uuid.uuid4().hex[:12]}")
    heartbeat: asyncio.Task[None] | None = None
    #: Job, scan and delivery metrics (served when TLSFLEET_WORKER_METRICS_PORT is set).
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)
    #: Whether ``redis`` is a pool of this context's own (the scheduler's), closed with it.
    own_redis: bool = False


def context(ctx: dict[str, Any]) -> WorkerContext:
    """The typed context inside arq's job context."""
    app = ctx["app"]
    assert isinstance(app, WorkerContext), "the worker's on_startup did not run"
    return app


def scan_options(settings: Settings) -> ScanOptions:
    """The scanner's options from the fleet settings (as ``tlsfleet scan`` builds them)."""
    return ScanOptions(
        timeout=settings.timeout,
        connect_timeout=settings.timeout,
        greeting_timeout=settings.greeting_timeout,
        ca_file=str(settings.ca_file) if settings.ca_file else None,
        ehlo_name=settings.ehlo_name,
    )


def delivery_config(settings: Settings) -> DeliveryConfig:
    """How webhook deliveries are sent, from the fleet settings (TLSFLEET_WEBHOOK_*)."""
    schedule = RetrySchedule(
        base=settings.webhook_retry_base,
        cap=max(settings.webhook_retry_cap, settings.webhook_retry_base),
        max_attempts=settings.webhook_max_attempts,
    )
    return DeliveryConfig(
        schedule=schedule,
        timeout=settings.webhook_timeout,
        lease=max(60.0, settings.webhook_timeout * 3),
        allow_private=settings.allow_private_targets,
    )


async def startup(ctx: dict[str, Any]) -> None:
    """arq ``on_startup``: build the engine, limiter and scanners; queue a reconciliation
    (a worker that starts after a crash or a Redis loss picks up open sweeps)."""
    config: WorkerConfig = ctx["config"]
    settings, options = config.settings, config.options
    redis: ArqRedis = ctx["redis"]
    # Only the scheduler's pool enqueues into a queue the workers do not read (its own);
    # the jobs its cron jobs start (a sweep's discovery, reconciliations) are the
    # workers'. A worker on another queue (the demo's private one) keeps its own pool:
    # its jobs must stay on its queue.
    own_redis = redis.default_queue_name == jobs.SCHEDULER_QUEUE
    if own_redis:
        redis = await jobs.create_job_pool(config.redis_settings)
    engine = create_engine(config.database_url, pool_size=min(options.max_jobs, 20))
    limiter = RedisLimiter(
        redis,
        per_ip=settings.per_ip_limit,
        global_limit=settings.global_limit,
        lease_ttl=options.lease_ttl,
    )
    resolvers = tuple(settings.resolvers)
    deadline = options.job_timeout * _DEADLINE_SHARE
    runtime = SweepRuntime(
        sessions=create_sessionmaker(engine),
        redis=redis,
        scan_options=scan_options(settings),
        limiter=limiter,
        new_resolver=lambda: Resolver(resolvers),
        allow_private=settings.allow_private_targets,
        scan_deadline=deadline,
        discovery_deadline=deadline,
    )
    app = WorkerContext(
        config=config,
        engine=engine,
        redis=redis,
        limiter=limiter,
        runtime=runtime,
        http=httpx.AsyncClient(headers={"User-Agent": "tlsfleet-webhooks/1"}),
        delivery=delivery_config(settings),
        own_redis=own_redis,
    )
    await jobs.beat(redis, app.worker_id, options.heartbeat * 3)
    app.heartbeat = asyncio.create_task(_heartbeat(app), name="worker-heartbeat")
    ctx["app"] = app
    if settings.worker_metrics_port is not None:
        app.metrics.serve(settings.worker_metrics_port)
    await jobs.enqueue_reconcile(redis)
    log.info(
        "worker ready: %d jobs at once, %d connections per IP fleet-wide, %d per process",
        options.max_jobs,
        settings.per_ip_limit,
        settings.global_limit,
    )


async def _heartbeat(app: WorkerContext) -> None:
    """Keep this worker's heartbeat key alive (three beats long), come what may."""
    interval = app.config.options.heartbeat
    while True:
        await asyncio.sleep(interval)
        try:
            await jobs.beat(app.redis, app.worker_id, interval * 3)
        except Exception as exc:  # Redis away for a moment: the next beat may make it
            log.warning("heartbeat failed: %s", exc)


async def job_started(ctx: dict[str, Any]) -> None:
    """arq ``on_job_start``: record this worker as the job's owner (for the reconciler,
    which frees the jobs of workers whose heartbeat stopped)."""
    app = context(ctx)
    ttl = app.config.options.job_timeout + 10
    await jobs.claim(app.redis, str(ctx["job_id"]), app.worker_id, ttl)


async def job_ended(ctx: dict[str, Any]) -> None:
    """arq ``after_job_end``: the job is no longer this worker's."""
    await jobs.release(context(ctx).redis, str(ctx["job_id"]))


async def shutdown(ctx: dict[str, Any]) -> None:
    """arq ``on_shutdown``: stop the heartbeat, hand back limiter slots, close the
    database pool."""
    app = ctx.get("app")
    if isinstance(app, WorkerContext):
        if app.heartbeat is not None:
            app.heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await app.heartbeat
        app.metrics.close()
        await app.limiter.aclose()
        await app.http.aclose()
        await app.engine.dispose()
        if app.own_redis:
            await app.redis.aclose()
