"""Webhook subscriptions and the delivery log.

A delivery row is written in the same transaction as whatever caused its event (a
notice opening, a sweep closing), so an event is never lost between the database and
the queue: the job that sends it is only a wake-up call, and the reconciler finds
every ``pending`` delivery that is due even when its job was lost.

Sending is claim → POST → record: :func:`claim` moves ``next_attempt_at`` forward by a
lease and counts the attempt in one UPDATE, so two workers never send the same
delivery at once, and a worker killed mid-POST leaves a delivery that is due again when
the lease ends (the receiver may then see the same ``id`` twice — it dedupes by it).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.db.models import WebhookDelivery, WebhookSubscription
from fleet.webhooks import DIGEST, EVENT_TYPES, Event, RetrySchedule, digest_id

__all__ = [
    "Claimed",
    "claim",
    "create_subscription",
    "due_deliveries",
    "emit",
    "get_delivery",
    "get_subscription",
    "list_deliveries",
    "list_subscriptions",
    "record_attempt",
    "redeliver",
    "release_digests",
]


def _check_events(events: Sequence[str]) -> list[str]:
    unknown = sorted(set(events) - set(EVENT_TYPES))
    if unknown or not events:
        raise ValueError(
            f"event types must be a non-empty list of {', '.join(EVENT_TYPES)}"
            + (f"; unknown: {', '.join(unknown)}" if unknown else "")
        )
    return sorted(set(events))


async def create_subscription(
    session: AsyncSession,
    *,
    url: str,
    secret: str,
    events: Sequence[str],
    account_manager_id: int | None = None,
    digest: bool = False,
    name: str = "",
) -> WebhookSubscription:
    """A new subscription (the caller has checked the URL with ``check_target``)."""
    subscription = WebhookSubscription(
        url=url,
        secret=secret,
        events=_check_events(events),
        account_manager_id=account_manager_id,
        digest=digest,
        name=name,
        active=True,
    )
    session.add(subscription)
    await session.flush()
    return subscription


def _subscriptions(manager: int | None) -> Select[WebhookSubscription]:
    stmt = select(WebhookSubscription)
    if manager is not None:
        stmt = stmt.where(WebhookSubscription.account_manager_id == manager)
    return stmt


async def get_subscription(
    session: AsyncSession, subscription_id: int, *, manager: int | None = None
) -> WebhookSubscription | None:
    """One subscription (``manager``: only if it is that account manager's)."""
    return await session.scalar(
        _subscriptions(manager).where(WebhookSubscription.id == subscription_id)
    )


async def list_subscriptions(
    session: AsyncSession, *, after: int | None, limit: int, manager: int | None = None
) -> list[WebhookSubscription]:
    """Subscriptions in id order (keyset page: up to ``limit + 1`` rows)."""
    stmt = _subscriptions(manager)
    if after is not None:
        stmt = stmt.where(WebhookSubscription.id > after)
    rows = await session.scalars(stmt.order_by(WebhookSubscription.id).limit(limit + 1))
    return list(rows)


async def emit(
    session: AsyncSession,
    event: Event,
    *,
    account_manager_id: int | None,
    sweep_id: int | None = None,
    everyone: bool = False,
) -> list[int]:
    """Record ``event`` for every active subscription that wants its type: global ones
    and, when the event concerns one, that account manager's (``everyone``: every
    manager's, for events about the whole fleet); the ids of the deliveries that are
    due now (to be woken up after the commit).

    A digest subscription gets the event into its digest of ``sweep_id`` instead (sent
    by :func:`release_digests` when the sweep completes); without a sweep, a digest
    subscription gets the event on its own. Emitting the same event twice changes
    nothing.
    """
    stmt = select(WebhookSubscription).where(
        WebhookSubscription.active, WebhookSubscription.events.contains([event.type])
    )
    if not everyone:
        stmt = stmt.where(
            or_(
                WebhookSubscription.account_manager_id.is_(None),
                WebhookSubscription.account_manager_id == account_manager_id,
            )
        )
    targets = await session.scalars(stmt.order_by(WebhookSubscription.id))
    due: list[int] = []
    envelope = event.envelope()
    for subscription in targets:
        if subscription.digest and sweep_id is not None and event.type != "sweep.completed":
            await _add_to_digest(session, subscription.id, sweep_id, envelope, event)
            continue
        add = (
            insert(WebhookDelivery)
            .values(
                subscription_id=subscription.id,
                event_id=event.id,
                event_type=event.type,
                payload=envelope,
                status="pending",
            )
            .on_conflict_do_nothing(constraint="uq_webhook_deliveries_event")
            .returning(WebhookDelivery.id)
        )
        new = await session.scalar(add)
        if new is not None:
            due.append(new)
    return due


async def _add_to_digest(
    session: AsyncSession,
    subscription_id: int,
    sweep_id: int,
    envelope: dict[str, Any],
    event: Event,
) -> None:
    key = digest_id(subscription_id, sweep_id)
    digest = Event(
        id=key,
        type=DIGEST,
        created_at=event.created_at,
        data={"sweep_id": sweep_id, "events": []},
    ).envelope()
    await session.execute(
        insert(WebhookDelivery)
        .values(
            subscription_id=subscription_id,
            event_id=key,
            event_type=DIGEST,
            payload=digest,
            sweep_id=sweep_id,
            status="collecting",
        )
        .on_conflict_do_nothing(constraint="uq_webhook_deliveries_event")
    )
    # Append the event unless it is in already (by id), while the digest collects.
    row = await session.scalar(
        select(WebhookDelivery)
        .where(
            WebhookDelivery.subscription_id == subscription_id,
            WebhookDelivery.event_id == key,
        )
        .with_for_update()
    )
    if row is None or row.status != "collecting":
        return
    events = list(row.payload["data"]["events"])
    if any(e["id"] == envelope["id"] for e in events):
        return
    payload = dict(row.payload)
    payload["data"] = {**payload["data"], "events": [*events, envelope]}
    row.payload = payload
    await session.flush()


async def release_digests(session: AsyncSession, sweep_id: int) -> list[int]:
    """Make the digests of ``sweep_id`` due (the sweep completed); their ids."""
    rows = await session.scalars(
        update(WebhookDelivery)
        .where(WebhookDelivery.sweep_id == sweep_id, WebhookDelivery.status == "collecting")
        .values(status="pending", next_attempt_at=func.now())
        .returning(WebhookDelivery.id)
    )
    return list(rows)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery this worker may send now, with what it needs to send it."""

    delivery_id: int
    attempt: int
    url: str
    secret: str
    event_id: str
    event_type: str
    payload: dict[str, Any]


async def claim(session: AsyncSession, delivery_id: int, *, lease: float) -> Claimed | None:
    """Take a due ``pending`` delivery for one attempt (None: not due, not pending, or
    its subscription is gone or inactive). The attempt is counted and the delivery
    hidden for ``lease`` seconds; the caller commits at once, then sends."""
    delivery = await session.scalar(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.status == "pending",
            WebhookDelivery.next_attempt_at <= func.now(),
        )
        .values(
            attempts=WebhookDelivery.attempts + 1,
            last_attempt_at=func.now(),
            next_attempt_at=func.now() + dt.timedelta(seconds=lease),
        )
        .returning(WebhookDelivery)
        .execution_options(populate_existing=True)
    )
    if delivery is None:
        return None
    subscription = await session.get(WebhookSubscription, delivery.subscription_id)
    if subscription is None or not subscription.active:
        return None
    return Claimed(
        delivery_id=delivery.id,
        attempt=delivery.attempts,
        url=subscription.url,
        secret=subscription.secret,
        event_id=delivery.event_id,
        event_type=delivery.event_type,
        payload=delivery.payload,
    )


async def record_attempt(
    session: AsyncSession,
    claimed: Claimed,
    *,
    status_code: int | None,
    error: str | None,
    schedule: RetrySchedule,
) -> tuple[str, float | None]:
    """Store the outcome of an attempt: delivered on a 2xx, else pending again after
    the schedule's delay, or dead after the last attempt. The new status and the delay
    (None unless it is to be retried)."""
    values: dict[str, Any] = {"last_status_code": status_code, "last_error": error}
    delay: float | None = None
    if status_code is not None and 200 <= status_code < 300 and error is None:
        values.update(status="delivered", delivered_at=func.now(), last_error=None)
    else:
        delay = schedule.delay(claimed.attempt)
        if delay is None:
            values["status"] = "dead"
        else:
            values.update(
                status="pending", next_attempt_at=func.now() + dt.timedelta(seconds=delay)
            )
    await session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == claimed.delivery_id, WebhookDelivery.status == "pending")
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return str(values["status"]), delay


async def due_deliveries(session: AsyncSession, *, limit: int = 1000) -> list[int]:
    """Pending deliveries that are due (their job may have been lost), oldest first."""
    rows = await session.scalars(
        select(WebhookDelivery.id)
        .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= func.now())
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
    )
    return list(rows)


async def get_delivery(
    session: AsyncSession, delivery_id: int, *, manager: int | None = None
) -> WebhookDelivery | None:
    """One delivery (``manager``: only of that account manager's subscriptions)."""
    stmt = select(WebhookDelivery).where(WebhookDelivery.id == delivery_id)
    if manager is not None:
        stmt = stmt.join(
            WebhookSubscription, WebhookSubscription.id == WebhookDelivery.subscription_id
        ).where(WebhookSubscription.account_manager_id == manager)
    return await session.scalar(stmt.execution_options(populate_existing=True))


async def list_deliveries(
    session: AsyncSession,
    subscription_id: int,
    *,
    before: int | None,
    limit: int,
    status: str | None = None,
) -> list[WebhookDelivery]:
    """A subscription's deliveries, newest first (keyset page on the id)."""
    stmt = select(WebhookDelivery).where(WebhookDelivery.subscription_id == subscription_id)
    if status is not None:
        stmt = stmt.where(WebhookDelivery.status == status)
    if before is not None:
        stmt = stmt.where(WebhookDelivery.id < before)
    rows = await session.scalars(stmt.order_by(WebhookDelivery.id.desc()).limit(limit + 1))
    return list(rows)


async def redeliver(session: AsyncSession, delivery_id: int) -> bool:
    """Send a delivered or dead delivery again, with a fresh schedule; False if it is
    still pending or collecting (it will be sent anyway)."""
    moved = await session.scalar(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.status.in_(("dead", "delivered")),
        )
        .values(status="pending", attempts=0, next_attempt_at=func.now(), delivered_at=None)
        .returning(WebhookDelivery.id)
    )
    return moved is not None
