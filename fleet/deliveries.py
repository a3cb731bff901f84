"""Sending webhook deliveries: one attempt per job, the next one scheduled on failure.

:func:`attempt` claims a due delivery (fleet/repositories/webhooks.py), checks its URL
against the private-address rule again (a name may have moved), POSTs the signed
envelope without following redirects, and records the outcome: delivered on a 2xx,
retried after the schedule's delay otherwise, dead-lettered after the last attempt.
The job that runs it re-enqueues itself with the delay; the reconciler
(:func:`wake_due`) wakes every due delivery whose job was lost, so a killed worker, a
flushed Redis or a restart loses nothing. Secrets and signatures are never logged.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import httpx
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.repositories import webhooks as repo
from fleet.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    RetrySchedule,
    TargetRefused,
    check_target,
    encode,
    signature_header,
)

__all__ = [
    "DELIVER_JOB",
    "Attempt",
    "DeliveryConfig",
    "attempt",
    "delivery_job_id",
    "enqueue_deliveries",
    "wake_due",
]

log = logging.getLogger(__name__)

#: The worker function that sends one delivery.
DELIVER_JOB = "webhook_deliver"


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    """How deliveries are sent (from the settings; tests shorten the schedule)."""

    schedule: RetrySchedule = field(default_factory=RetrySchedule)
    #: Seconds one POST may take, connect to last byte of the status line.
    timeout: float = 10.0
    #: Seconds a claimed delivery stays hidden: a worker killed mid-POST leaves it due
    #: again after this (longer than ``timeout``).
    lease: float = 60.0
    allow_private: bool = False


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one attempt did: ``skipped`` (not due, not pending, or no subscription)."""

    outcome: Literal["delivered", "pending", "dead", "skipped"]
    delivery_id: int
    #: Which attempt this was (1 for the first; 0 when skipped).
    attempt: int = 0
    status_code: int | None = None
    error: str | None = None
    #: Seconds until the next attempt (outcome ``pending`` only).
    retry_in: float | None = None


def delivery_job_id(delivery_id: int) -> str:
    """A fresh job id for a wake-up of ``delivery_id``. Jobs are only wake-up calls —
    :func:`~fleet.repositories.webhooks.claim` is what keeps two workers from sending
    one delivery at once — so every wake-up is a new job, never refused by arq for an
    id whose earlier job's result it still keeps."""
    return f"webhook:{delivery_id}:{uuid.uuid4().hex[:12]}"


async def enqueue_deliveries(
    redis: ArqRedis, delivery_ids: Iterable[int], *, defer: float = 0.0
) -> int:
    """Wake deliveries up (after the commit that wrote them), ``defer`` seconds from
    now; how many jobs were queued."""
    queued = 0
    for delivery_id in delivery_ids:
        job = await redis.enqueue_job(
            DELIVER_JOB,
            delivery_id,
            _job_id=delivery_job_id(delivery_id),
            _defer_by=defer if defer > 0 else None,
        )
        queued += job is not None
    return queued


async def _post(
    http: httpx.AsyncClient, claimed: repo.Claimed, config: DeliveryConfig, now: float
) -> tuple[int | None, str | None]:
    try:
        await check_target(claimed.url, allow_private=config.allow_private)
    except TargetRefused as exc:
        return None, f"refused: {exc}"
    body = encode(claimed.payload)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "tlsfleet-webhooks/1",
        EVENT_HEADER: claimed.event_type,
        DELIVERY_HEADER: claimed.event_id,
        SIGNATURE_HEADER: signature_header(claimed.secret, body, now=now),
    }
    try:
        # Streamed and not read: a receiver's reply body is not ours to download.
        async with http.stream(
            "POST",
            claimed.url,
            content=body,
            headers=headers,
            timeout=config.timeout,
            follow_redirects=False,
        ) as response:
            status = response.status_code
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:500]
    if 200 <= status < 300:
        return status, None
    return status, f"HTTP {status}"


async def attempt(
    sessions: async_sessionmaker[AsyncSession],
    http: httpx.AsyncClient,
    delivery_id: int,
    config: DeliveryConfig,
    *,
    clock: Callable[[], float] = time.time,
) -> Attempt:
    """Make one attempt at a delivery, if it is due; what happened."""
    async with sessions() as session:
        claimed = await repo.claim(session, delivery_id, lease=config.lease)
        await session.commit()
    if claimed is None:
        return Attempt("skipped", delivery_id)
    status_code, error = await _post(http, claimed, config, clock())
    async with sessions() as session:
        outcome, delay = await repo.record_attempt(
            session, claimed, status_code=status_code, error=error, schedule=config.schedule
        )
        await session.commit()
    if outcome == "delivered":
        log.info("webhook delivery %s delivered (HTTP %s)", delivery_id, status_code)
    else:
        log.warning(
            "webhook delivery %s attempt %d failed: %s; %s",
            delivery_id,
            claimed.attempt,
            error,
            "dead-lettered" if outcome == "dead" else f"retrying in {delay:.0f} s",
        )
    assert outcome in ("delivered", "pending", "dead")
    return Attempt(outcome, delivery_id, claimed.attempt, status_code, error, delay)  # type: ignore[arg-type]


async def wake_due(sessions: async_sessionmaker[AsyncSession], redis: ArqRedis) -> int:
    """Enqueue every due pending delivery (the reconciler's part); how many jobs."""
    async with sessions() as session:
        due = await repo.due_deliveries(session)
    return await enqueue_deliveries(redis, due)
