"""``/v1/webhooks``: subscriptions, their delivery log, redelivery and secret rotation.

Admins and operators manage every subscription; an account manager's key manages only
its own (anything else is 404); viewers read. The secret is shown when a subscription
is created or its secret rotated, never again. URLs follow the private-address rule of
scan targets (TLSFLEET_ALLOW_PRIVATE_TARGETS).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from api.deps import RuntimeDep, ScopedReader, ScopedWriter, SessionDep, SettingsDep
from api.errors import Conflict, Invalid, NotFound
from api.export import FormatQuery, csv_responses, page_or_csv, schema_columns
from api.pagination import CursorQuery, LimitQuery, decode_cursor
from api.schemas.common import IdPath, Page, problems
from api.schemas.webhooks import (
    DeliveryRead,
    DeliveryStatus,
    SubscriptionCreate,
    SubscriptionRead,
    SubscriptionSecret,
    SubscriptionUpdate,
)
from fleet import deliveries
from fleet.db.models import WebhookSubscription
from fleet.repositories import inventory
from fleet.repositories import webhooks as repo
from fleet.settings import Settings
from fleet.webhooks import TargetRefused, check_target

SUBSCRIPTION_COLUMNS = schema_columns(SubscriptionRead)
DELIVERY_COLUMNS = schema_columns(DeliveryRead)

router = APIRouter(prefix="/v1", tags=["webhooks"], responses=problems(401, 429, 403, 422))
log = logging.getLogger(__name__)


def _new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


async def _checked_url(url: str, settings: Settings) -> str:
    try:
        await check_target(url, allow_private=settings.allow_private_targets)
    except TargetRefused as exc:
        raise Invalid(f"url: {exc}") from None
    return url


async def _own(session: SessionDep, subscription_id: int, scope: int | None) -> WebhookSubscription:
    found = await repo.get_subscription(session, subscription_id, manager=scope)
    if found is None:
        raise NotFound(f"no webhook subscription {subscription_id}")
    return found


def _with_secret(subscription: WebhookSubscription) -> SubscriptionSecret:
    read = SubscriptionRead.model_validate(subscription)
    return SubscriptionSecret(**read.model_dump(), secret=subscription.secret)


@router.post(
    "/webhooks",
    status_code=status.HTTP_201_CREATED,
    summary="Subscribe to events",
    responses=problems(404),
)
async def create_subscription(
    body: SubscriptionCreate, session: SessionDep, settings: SettingsDep, caller: ScopedWriter
) -> SubscriptionSecret:
    """Create a subscription and return it with its signing secret — the only time the
    secret is shown. A URL that is not http(s), or whose host resolves to a private or
    loopback address (unless the deployment allows those), is a 422 saying why."""
    manager_id = body.account_manager_id
    if caller.scope is not None:
        if manager_id not in (None, caller.scope):
            raise NotFound(f"no account manager {manager_id}")
        manager_id = caller.scope
    elif manager_id is not None and await inventory.get_manager(session, manager_id) is None:
        raise Invalid(f"no account manager {manager_id}")
    url = await _checked_url(body.url, settings)
    subscription = await repo.create_subscription(
        session,
        url=url,
        secret=body.secret or _new_secret(),
        events=list(body.events),
        account_manager_id=manager_id,
        digest=body.digest,
        name=body.name.strip(),
    )
    await session.commit()
    await session.refresh(subscription)
    log.info("webhook subscription %s created by key %s", subscription.id, caller.prefix)
    return _with_secret(subscription)


@router.get(
    "/webhooks",
    summary="List webhook subscriptions",
    response_model=Page[SubscriptionRead],
    responses=csv_responses(
        SUBSCRIPTION_COLUMNS, "id,name,account_manager_id,url,events,digest,active,created_at\r\n"
    ),
)
async def list_subscriptions(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    caller: ScopedReader,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    format_: FormatQuery = None,
) -> Any:
    """Subscriptions in id order (an account manager's key sees only its own);
    `format=csv` streams them all as CSV."""

    def fetch(s: AsyncSession, after: int | None, n: int) -> Awaitable[Sequence[Any]]:
        return repo.list_subscriptions(s, after=after, limit=n, manager=caller.scope)

    return await page_or_csv(
        request,
        session,
        runtime.sessions,
        fetch,
        SubscriptionRead,
        after=decode_cursor(cursor),
        limit=limit,
        format_=format_,
        filename="webhooks.csv",
    )


@router.get(
    "/webhooks/{subscription_id}", summary="Show a webhook subscription", responses=problems(404)
)
async def get_subscription(
    subscription_id: IdPath, session: SessionDep, caller: ScopedReader
) -> SubscriptionRead:
    """One subscription, without its secret."""
    return SubscriptionRead.model_validate(await _own(session, subscription_id, caller.scope))


@router.patch(
    "/webhooks/{subscription_id}",
    summary="Change a webhook subscription",
    responses=problems(404),
)
async def update_subscription(
    subscription_id: IdPath,
    body: SubscriptionUpdate,
    session: SessionDep,
    settings: SettingsDep,
    caller: ScopedWriter,
) -> SubscriptionRead:
    """Change the URL (checked like a new one), the event types, digest mode, name, or
    pause it (``active: false``: no new deliveries; pending ones wait)."""
    subscription = await _own(session, subscription_id, caller.scope)
    if body.url is not None:
        subscription.url = await _checked_url(body.url, settings)
    if body.events is not None:
        subscription.events = sorted(set(body.events))
    for field in ("digest", "active", "name"):
        value = getattr(body, field)
        if value is not None:
            setattr(subscription, field, value.strip() if isinstance(value, str) else value)
    await session.commit()
    await session.refresh(subscription)
    return SubscriptionRead.model_validate(subscription)


@router.post(
    "/webhooks/{subscription_id}/rotate-secret",
    summary="Rotate a subscription's secret",
    responses=problems(404),
)
async def rotate_secret(
    subscription_id: IdPath, session: SessionDep, caller: ScopedWriter
) -> SubscriptionSecret:
    """Replace the signing secret with a new one and return it (shown this once).
    Deliveries from now on are signed with the new secret."""
    subscription = await _own(session, subscription_id, caller.scope)
    subscription.secret = _new_secret()
    await session.commit()
    await session.refresh(subscription)
    log.info("webhook subscription %s: secret rotated by key %s", subscription.id, caller.prefix)
    return _with_secret(subscription)


@router.delete(
    "/webhooks/{subscription_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a webhook subscription",
    responses=problems(404),
)
async def delete_subscription(
    subscription_id: IdPath, session: SessionDep, caller: ScopedWriter
) -> Response:
    """Delete a subscription and its delivery log."""
    subscription = await _own(session, subscription_id, caller.scope)
    await session.delete(subscription)
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/webhooks/{subscription_id}/deliveries",
    summary="A subscription's delivery log",
    response_model=Page[DeliveryRead],
    responses={
        **csv_responses(DELIVERY_COLUMNS, "id,subscription_id,event_id,event_type,status\r\n"),
        **problems(404),
    },
)
async def list_deliveries(
    request: Request,
    subscription_id: IdPath,
    session: SessionDep,
    runtime: RuntimeDep,
    caller: ScopedReader,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    delivery_status: Annotated[
        DeliveryStatus | None, Query(alias="status", description="only deliveries in this state")
    ] = None,
    format_: FormatQuery = None,
) -> Any:
    """Deliveries newest first: status (pending, delivered, dead, or collecting for a
    digest), attempts, the last response code and error, the envelope as sent;
    `format=csv` streams the whole (filtered) log as CSV."""
    await _own(session, subscription_id, caller.scope)

    def fetch(s: AsyncSession, before: int | None, n: int) -> Awaitable[Sequence[Any]]:
        return repo.list_deliveries(
            s, subscription_id, before=before, limit=n, status=delivery_status
        )

    return await page_or_csv(
        request,
        session,
        runtime.sessions,
        fetch,
        DeliveryRead,
        after=decode_cursor(cursor),
        limit=limit,
        format_=format_,
        filename=f"webhook-{subscription_id}-deliveries.csv",
    )


@router.post(
    "/webhook-deliveries/{delivery_id}/redeliver",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Send a delivery again",
    responses=problems(404, 409, 503),
)
async def redeliver(
    delivery_id: IdPath, session: SessionDep, runtime: RuntimeDep, caller: ScopedWriter
) -> DeliveryRead:
    """Send a dead (or delivered) delivery again, with a fresh retry schedule; it keeps
    its idempotency key, so a receiver that has it already drops it. 409 while it is
    still pending or collecting."""
    delivery = await repo.get_delivery(session, delivery_id, manager=caller.scope)
    if delivery is None:
        raise NotFound(f"no webhook delivery {delivery_id}")
    if not await repo.redeliver(session, delivery_id):
        raise Conflict(f"delivery {delivery_id} is {delivery.status}: it will be sent anyway")
    await session.commit()
    queue = await runtime.queue()
    await deliveries.enqueue_deliveries(queue, [delivery_id])
    fresh = await repo.get_delivery(session, delivery_id)
    assert fresh is not None
    log.info("webhook delivery %s queued again by key %s", delivery_id, caller.prefix)
    return DeliveryRead.model_validate(fresh)
