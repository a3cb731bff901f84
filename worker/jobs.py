"""The worker's jobs: ids in, :mod:`fleet.sweeps` does the work, transient failures retry.

Every job is idempotent (see :mod:`fleet.sweeps`), so arq's at-least-once delivery and
the reconciler's re-enqueueing never change a stored result. A failure of the
infrastructure — PostgreSQL or Redis unreachable or restarting, the shared limiter
unavailable — raises arq's :class:`~arq.worker.Retry` with an exponential, jittered
delay; after ``max_tries`` the job is dropped and the reconciler queues it again once
the sweep is seen to miss it. Anything else is a bug and fails the job loudly (the
reconciler still re-queues it, so a sweep never waits on a lost job).
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from collections.abc import Awaitable
from typing import Any, TypeVar

import psycopg
from arq.worker import Retry
from redis import exceptions as redis_errors
from sqlalchemy import exc as sa_errors

from fleet import deliveries, findings, notices, sweeps
from fleet.jobs import JobName
from fleet.limiter import LimiterUnavailable
from worker.context import context

__all__ = [
    "findings_evaluate",
    "is_transient",
    "notice_confirm",
    "retry_delay",
    "scheduled_tick",
    "sweep_close",
    "sweep_discover",
    "sweep_nightly",
    "sweep_reconcile",
    "sweep_scan_endpoint",
    "webhook_deliver",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

_TRANSIENT: tuple[type[BaseException], ...] = (
    sa_errors.OperationalError,  # connection refused or lost, server shutting down
    sa_errors.InterfaceError,  # connection already closed
    sa_errors.TimeoutError,  # no pooled connection in time
    psycopg.OperationalError,
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,  # a restarted Redis loading its data
    redis_errors.ReadOnlyError,  # a replica during fail-over
    LimiterUnavailable,
    ConnectionError,
)


def is_transient(exc: BaseException) -> bool:
    """True for failures of PostgreSQL, Redis or the limiter that a later try may not meet."""
    if isinstance(exc, sa_errors.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, _TRANSIENT)


def retry_delay(job_try: int, first: float, longest: float) -> float:
    """Seconds before try ``job_try + 1``: ``first`` doubling per try, at most
    ``longest``, jittered ±50 % so that workers hit a recovering server in a spread."""
    base = min(longest, first * 2.0 ** max(job_try - 1, 0))
    return base * (0.5 + random.random())


async def _guarded(ctx: dict[str, Any], work: Awaitable[T]) -> T:
    try:
        return await work
    except Exception as exc:
        if not is_transient(exc):
            raise
        options = context(ctx).config.options
        job_try = int(ctx.get("job_try", 1))
        delay = retry_delay(job_try, options.retry_delay, options.retry_max_delay)
        log.warning(
            "job %s try %d: %s: %s; retrying in %.1f s",
            ctx.get("job_id"),
            job_try,
            type(exc).__name__,
            exc,
            delay,
        )
        raise Retry(defer=delay) from exc


async def sweep_discover(ctx: dict[str, Any], sweep_id: int) -> int:
    """Discover a sweep's domains, store its plan, queue its scans (how many)."""
    return await _guarded(ctx, sweeps.discover_sweep(context(ctx).runtime, sweep_id))


async def sweep_scan_endpoint(ctx: dict[str, Any], sweep_id: int, endpoint_id: int) -> str:
    """Scan one endpoint for one sweep and store its result once."""
    return await _guarded(ctx, sweeps.scan_endpoint(context(ctx).runtime, sweep_id, endpoint_id))


async def sweep_close(ctx: dict[str, Any], sweep_id: int) -> bool:
    """Close a sweep whose results are all in and store its diff."""
    return await _guarded(ctx, sweeps.close(context(ctx).runtime, sweep_id))


async def sweep_reconcile(ctx: dict[str, Any]) -> dict[str, int]:
    """Queue what open sweeps miss; close the complete ones (cron and start-up)."""
    app = context(ctx)
    report = await _guarded(ctx, sweeps.reconcile(app.runtime))
    woken = await _guarded(ctx, deliveries.wake_due(app.runtime.sessions, app.redis))
    notice_work = await _guarded(ctx, notices.reconcile(app.runtime.sessions, app.redis))
    return {**report.to_dict(), "webhook_deliveries": woken, **notice_work}


def scheduled_tick(job_id: object) -> dt.datetime | None:
    """The schedule tick a nightly cron job was queued for, from arq's unique cron job
    id (``sweep_nightly:<unix ms of the tick>``); None for any other id."""
    if not isinstance(job_id, str):
        return None
    name, _, millis = job_id.rpartition(":")
    if name != JobName.NIGHTLY or not millis.isdigit():
        return None
    return dt.datetime.fromtimestamp(int(millis) / 1000, tz=dt.UTC)


async def sweep_nightly(ctx: dict[str, Any]) -> int | None:
    """Start the scheduled sweep of the whole fleet (cron); its id, or None if the last
    one is still open or this tick's sweep was already started (by another scheduler)."""
    app = context(ctx)
    tick = scheduled_tick(ctx.get("job_id"))
    return await _guarded(
        ctx,
        sweeps.start_nightly(
            app.runtime.sessions, app.redis, app.config.nightly, scheduled_for=tick
        ),
    )


async def webhook_deliver(ctx: dict[str, Any], delivery_id: int) -> str:
    """Make one attempt at a webhook delivery; on failure, queue the next attempt after
    the schedule's delay (the reconciler wakes it too if this job is lost)."""
    app = context(ctx)
    result = await _guarded(
        ctx, deliveries.attempt(app.runtime.sessions, app.http, delivery_id, app.delivery)
    )
    if result.outcome == "pending" and result.retry_in is not None:
        await deliveries.enqueue_deliveries(app.redis, [delivery_id], defer=result.retry_in)
    return result.outcome


def _notice_config(ctx: dict[str, Any]) -> notices.NoticeConfig:
    settings = context(ctx).config.settings
    return notices.NoticeConfig.from_settings(settings, findings.profile_for(settings))


async def findings_evaluate(ctx: dict[str, Any], sweep_id: int) -> dict[str, int]:
    """Judge a closed sweep's results, store its findings once, bring its customers'
    notices up to date; queue the confirming re-scans and wake the deliveries."""
    app = context(ctx)
    config = _notice_config(ctx)
    stored = await _guarded(
        ctx, findings.evaluate_sweep(app.runtime.sessions, config.profile, sweep_id)
    )
    if stored is None:
        return {}
    if not app.config.settings.notices_enabled:
        await _guarded(ctx, notices.skip_sync(app.runtime.sessions, sweep_id))
        return {"findings": stored.findings}
    report = await _guarded(ctx, notices.sync_sweep(app.runtime.sessions, config, sweep_id))
    if report is None:
        return {"findings": stored.findings}
    await deliveries.enqueue_deliveries(app.redis, report.due)
    await notices.enqueue_confirms(app.redis, report.confirm)
    return {
        "findings": stored.findings,
        "opened": report.opened,
        "resolved": report.resolved,
        "regressed": report.regressed,
        "certificate_warnings": report.certificate_warnings,
    }


async def notice_confirm(ctx: dict[str, Any], notice_id: int) -> str:
    """Re-scan an open notice's endpoints; send it with what the re-scan confirms, or
    dismiss it."""
    app = context(ctx)
    result = await _guarded(
        ctx, notices.confirm_notice(app.runtime, _notice_config(ctx), notice_id)
    )
    await deliveries.enqueue_deliveries(app.redis, result.due)
    return result.outcome
